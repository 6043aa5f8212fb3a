"""Primitives that know nothing of any VAE: convolution and its backends, norms, linear, attention, activations."""

from ._activations import get_activation as get_activation
from ._attention import dot_product_attention as dot_product_attention
from ._auto_conv import call_gflop as call_gflop
from ._auto_conv import call_with_auto_conv as call_with_auto_conv
from ._auto_conv import resolve_auto_conv as resolve_auto_conv
from ._conv import Conv2d as Conv2d
from ._conv import conv_layers as conv_layers
from ._conv_backends import AbstractConvBackend as AbstractConvBackend
from ._conv_backends import AutoConv as AutoConv
from ._conv_backends import WinogradConv as WinogradConv
from ._conv_backends import XlaConv as XlaConv
from ._conv_backends import conv_backend_named as conv_backend_named
from ._conv_backends import upsample_nearest_2x as upsample_nearest_2x
from ._layout import kernel_from_torch as kernel_from_torch
from ._layout import kernel_to_torch as kernel_to_torch
from ._linear import Linear as Linear
from ._norm import GroupNorm as GroupNorm
from ._traced_once import traced_once_per_shape as traced_once_per_shape
