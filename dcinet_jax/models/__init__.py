"""Flax Linen modules: the methods' networks (DCINet + CCRN + text network, DSFFN, HSLM) and,
in `backbones/`, the shared networks they build on (ResNet, VGG, ViT and their registry)."""

from dcinet_jax.models.backbones.registry import BACKBONE_NAMES, backbone_kwargs, family
from dcinet_jax.models.backbones.resnet import RESNET_SPECS, BatchNorm, ResNet
from dcinet_jax.models.backbones.vgg import VGG
from dcinet_jax.models.backbones.vit import ViT
from dcinet_jax.models.ccrn import CCRN, CUT_POINTS
from dcinet_jax.models.dcinet import DCINet, backbone_layout, build_model, dummy_inputs, init_variables
from dcinet_jax.models.text_net import TextNet

__all__ = ['BACKBONE_NAMES', 'CCRN', 'CUT_POINTS', 'RESNET_SPECS', 'VGG', 'BatchNorm', 'DCINet',
           'ResNet', 'TextNet', 'ViT', 'backbone_kwargs', 'backbone_layout', 'build_model',
           'dummy_inputs', 'family', 'init_variables']
