"""Flax Linen modules: the backbone registry (ResNet/CCRN, VGG, ViT), text network, DCINet."""

from dcinet_jax.models.backbones import BACKBONE_NAMES, backbone_kwargs, family
from dcinet_jax.models.ccrn import CCRN, CUT_POINTS
from dcinet_jax.models.dcinet import DCINet, backbone_layout, build_model, dummy_inputs, init_variables
from dcinet_jax.models.resnet import RESNET_SPECS, BatchNorm, ResNet
from dcinet_jax.models.text_net import TextNet
from dcinet_jax.models.vgg import VGG
from dcinet_jax.models.vit import ViT

__all__ = ['BACKBONE_NAMES', 'CCRN', 'CUT_POINTS', 'RESNET_SPECS', 'VGG', 'BatchNorm', 'DCINet',
           'ResNet', 'TextNet', 'ViT', 'backbone_kwargs', 'backbone_layout', 'build_model',
           'dummy_inputs', 'family', 'init_variables']
