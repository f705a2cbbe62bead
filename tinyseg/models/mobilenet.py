"""MobileNetV2 (Sandler et al., 2018), width 1.0, as DeepLab builds it for segmentation.

x: (N, 3, H, W) -> last: (N, 320, ceil(H / os), ceil(W / os)), plus the named taps.

The network is a stem conv and 17 inverted residual units. A unit with expansion t maps
C_in -> C_out through a WIDE middle (t C_in channels), the reverse of ResNet's bottleneck:

    e   = relu6(bn(conv1x1(x)))                 C_in   -> t C_in   ("expand", absent when t = 1)
    d   = relu6(bn(depthwise3x3(e, s, rate)))   t C_in -> t C_in   (conv with groups = t C_in)
    p   = bn(conv1x1(d))                        t C_in -> C_out    ("project": linear, no ReLU)
    out = p + x   when s = 1 and C_in = C_out (a residual), else p

relu6(x) = min(max(x, 0), 6). The units, in TensorFlow's names (what the weight files use):

    conv              3x3 s2, 3 -> 32, BN, ReLU6                               ratio 2
    expanded_conv     t 1, 32 -> 16                                            ratio 2
    expanded_conv_1-2   t 6, -> 24, first s2                                   ratio 4
    expanded_conv_3-5   t 6, -> 32, first s2                                   ratio 8
    expanded_conv_6-9   t 6, -> 64, first s2                                   ratio 16
    expanded_conv_10-12 t 6, -> 96
    expanded_conv_13-15 t 6, -> 160, first s2                                  ratio 32
    expanded_conv_16    t 6, -> 320

output_stride 8, 16 or 32: DeepLab's atrous rule (backbones.atrous_schedule), on the
depthwise convs, which carry the strides; DeepLab's PASCAL model uses 16 (so expanded_conv_14-16
have rate 2).

Padding is TensorFlow's "SAME", so that TensorFlow-trained weights compute what they were
trained to: a layer of stride s maps n to ceil(n / s), padding max((ceil(n / s) - 1) s +
k_eff - n, 0) zeros in total, the odd one (if any) at the bottom and right. (PyTorch-style
symmetric padding gives the same sizes but shifts the sampling grid by one pixel on even sizes.)

Input: tinyseg's loaders give ImageNet-normalised images ((x / 255 - mean) / std); MobileNetV2's
weights expect pixels in [-1, 1], (x - 128) / 128. The backbone's first step maps one to the
other (fixed buffers `input_scale` and `input_shift`), so the imported weights see what they
were trained on and the rest of tinyseg needs no special case.

Taps: "conv", then for unit u: "u/expand" (after its ReLU6; not for expanded_conv),
"u/depthwise" (after its ReLU6) and "u" (the unit's output). DeepLab's decoder fuses
"expanded_conv_2/depthwise" (144 channels, ratio 4), the default here too.
"""
import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..backend import get_array_module
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..nn import BatchNorm2d, Conv2d, Module
from .backbones import Backbone, atrous_schedule, no_taps

BN_EPS = 1e-3  # TensorFlow's
# (expansion t, output channels, units, stride of the first unit), after the t = 1 unit
UNITS = ((6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def pad_same(x, kernel, stride, dilation):
    """Zero-pad (N, C, H, W) as TensorFlow's "SAME" does before a conv with padding 0."""
    n, c, h, w = x.shape
    xp = get_array_module(x.data)
    span = dilation * (kernel - 1) + 1
    pads = [max((-(-size // stride) - 1) * stride + span - size, 0) for size in (h, w)]
    (top, bottom), (left, right) = [(p // 2, p - p // 2) for p in pads]
    if top or bottom:
        x = F.cat([Tensor(xp.zeros((n, c, top, w), x.dtype)), x,
                   Tensor(xp.zeros((n, c, bottom, w), x.dtype))], dim=2)
    if left or right:
        x = F.cat([Tensor(xp.zeros((n, c, h + top + bottom, left), x.dtype)), x,
                   Tensor(xp.zeros((n, c, h + top + bottom, right), x.dtype))], dim=3)
    return x


class ConvBN(Module):
    """conv (TensorFlow "SAME" padding) -> BN -> optional ReLU6."""

    def __init__(self, in_channels, out_channels, kernel, stride=1, dilation=1, groups=1, relu6=True):
        super().__init__()
        self.kernel, self.stride, self.dilation, self.relu6 = kernel, stride, dilation, relu6
        self.conv = Conv2d(in_channels, out_channels, kernel, stride=stride, dilation=dilation,
                           groups=groups, bias=False)
        self.bn = BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x):
        if self.kernel > 1:
            x = pad_same(x, self.kernel, self.stride, self.dilation)
        y = self.bn(self.conv(x))
        return F.relu6(y) if self.relu6 else y


class InvertedResidual(Module):
    """One unit (see the module text): (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s))."""

    def __init__(self, in_channels, out_channels, expansion, stride=1, dilation=1):
        super().__init__()
        middle = in_channels * expansion
        self.expand = ConvBN(in_channels, middle, 1) if expansion != 1 else None
        self.depthwise = ConvBN(middle, middle, 3, stride, dilation, groups=middle)
        self.project = ConvBN(middle, out_channels, 1, relu6=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x, keep=no_taps):
        y = x if self.expand is None else keep("/expand", self.expand(x))
        y = keep("/depthwise", self.depthwise(y))
        y = self.project(y)
        return y + x if self.residual else y


class MobileNetV2(Backbone):
    """MobileNetV2 width 1.0 with DeepLab's output strides (see the module docstring)."""

    def __init__(self, output_stride=16):
        super().__init__(output_stride)
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        self.register_buffer("input_scale", (std * 255 / 128).reshape(1, 3, 1, 1))
        self.register_buffer("input_shift", ((mean * 255 - 128) / 128).reshape(1, 3, 1, 1))
        specs = [(1, 16, 1)] + [(t, c, s if u == 0 else 1) for t, c, n, s in UNITS for u in range(n)]
        schedule = atrous_schedule([2] + [s for _, _, s in specs], 1, output_stride)
        (stem_stride, _), schedule = schedule[0], schedule[1:]
        self.conv = ConvBN(3, 32, 3, stem_stride)
        self.declare("conv", 32, 2)
        self.unit_names, channels, ratio = [], 32, 2
        for k, ((t, c, _), (stride, dilation)) in enumerate(zip(specs, schedule)):
            name = "expanded_conv" + (f"_{k}" if k else "")
            setattr(self, name, InvertedResidual(channels, c, t, stride, dilation))
            if t != 1:
                self.declare(name + "/expand", channels * t, ratio)
            ratio *= stride
            self.declare(name + "/depthwise", channels * t, ratio)
            self.declare(name, c, ratio)
            self.unit_names.append(name)
            channels = c
        self.out_channels = channels

    def forward(self, x, taps=()):
        """x: (N, 3, H, W) ImageNet-normalised -> (last (N, 320, H/os, W/os), {tap: Tensor})."""
        taps = self.start_taps(taps)
        x = x * Tensor(self.input_scale) + Tensor(self.input_shift)   # -> (pixel - 128) / 128
        x = taps.keep("conv", self.conv(x))
        for name in self.unit_names:
            x = taps.keep(name, getattr(self, name)(x, keep=taps.prefixed(name)))
        return x, taps.features


def mobilenet_v2(output_stride=16):
    """MobileNetV2 width 1.0: 17 inverted residual units, 320 output channels (1.8M parameters)."""
    return MobileNetV2(output_stride)


class ClassifierHead(Module):
    """ImageNet head: 1x1 conv 320 -> 1280 + BN + ReLU6, global average pool, 1x1 to the classes."""

    def __init__(self, in_channels=320, num_classes=1001):
        super().__init__()
        self.conv_1 = ConvBN(in_channels, 1280, 1)
        self.logits = Conv2d(1280, num_classes, 1)

    def forward(self, x):
        pooled = F.adaptive_avg_pool2d(self.conv_1(x), 1)            # (N, 1280, 1, 1)
        return F.reshape(self.logits(pooled), (x.shape[0], -1))     # (N, num_classes)


class MobileNetV2Classifier(Module):
    """The ImageNet classifier around the backbone (output stride 32): images -> (N, 1001) logits.

    Only for checking imported weights against the runtime they came from (tinyseg.tflite);
    class 0 of Google's 1,001 is "background"."""

    def __init__(self, num_classes=1001):
        super().__init__()
        self.backbone = MobileNetV2(output_stride=32)
        self.head = ClassifierHead(self.backbone.out_channels, num_classes)

    def forward(self, x):
        return self.head(self.backbone(x)[0])
