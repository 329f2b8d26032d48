"""Flax Linen modules: ResNet family, two-part CCRN, text network, DCINet."""

from dcinet_jax.models.ccrn import CCRN, CUT_POINTS
from dcinet_jax.models.dcinet import DCINet, backbone_layout, build_model, dummy_inputs, init_variables
from dcinet_jax.models.resnet import RESNET_SPECS, BatchNorm, ResNet
from dcinet_jax.models.text_net import TextNet

__all__ = ['CCRN', 'CUT_POINTS', 'DCINet', 'backbone_layout', 'build_model', 'dummy_inputs', 'init_variables',
           'RESNET_SPECS', 'BatchNorm', 'ResNet', 'TextNet']
