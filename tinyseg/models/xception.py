"""Aligned Xception-65 as in DeepLabv3+ (the paper's Xception-65, Sec. 4).

x: (N, 3, H, W) -> last: (N, 2048, ceil(H / os), ceil(W / os)), plus the named taps.

Xception (Chollet, 2017) is built from separable convolutions, each a depthwise 3x3 conv
(one filter per channel: conv2d with groups = C) followed by a pointwise 1x1 conv that mixes
the channels; DeepLab puts a batch norm after each of the two:

    sepconv(x) = bn_pw(conv_pw(bn_dw(conv_dw(x))))                         (no ReLU inside)

The "aligned" version of DeepLab (research/deeplab/core/xception.py) replaces every max pool by
a strided separable conv, so that any output stride can be reached with atrous convolution.

    entry flow   conv1_1 3x3 s2 3->32, conv1_2 3x3 32->64 (conv + BN + ReLU each), then
                 block1 (128, 128, 128) s2, block2 (256, 256, 256) s2, block3 (728, 728, 728) s2,
                 one unit each, with a 1x1 conv + BN shortcut
    middle flow  block1: 16 units (728, 728, 728), identity shortcut
    exit flow    block1 (728, 1024, 1024) s2, 1x1 conv + BN shortcut;
                 block2 (1536, 1536, 2048), no shortcut, ReLU INSIDE its separable convs

A unit (DeepLab's xception_module) runs three separable convs with the unit's stride on the
last one. In all units but exit block2 a ReLU comes BEFORE each separable conv (on a copy: the
shortcut sees the input before that ReLU):

    c1 = sepconv1(relu(x)),  c2 = sepconv2(relu(c1)),  c3 = sepconv3(relu(c2))
    out = c3 + shortcut(x)

Exit block2 instead puts ReLU after each BN inside the separable convs and adds no shortcut.
Batch norms use eps = 1e-3 (TensorFlow's, as the pretrained checkpoints do).

output_stride 8, 16 or 32 follows DeepLab's atrous rule (`atrous_schedule` in backbones.py):
once the running stride reaches it, later strides become 1 and the dilation of all later
depthwise convs grows by the skipped stride. Padding is symmetric (= dilation), as in PyTorch.

Names: entry_flow.0-2, middle_flow.0-15, exit_flow.0-1 are XceptionModules with sepconv1-3
(each conv_dw, bn_dw, conv_pw, bn_pw) and shortcut_conv / shortcut_bn; the stem is
conv1_1/bn1_1, conv1_2/bn1_2. weights.py maps timm's xception65 names onto these.

Taps (`feature_info()` lists them with channels and ratios): "conv1_1", "conv1_2", then
"efb{x}u1c{z}" (entry flow block x, separable conv z: the pointwise output after its BN),
"efb{x}u1" (the unit's output), "mfb1u{y}c{z}" / "mfb1u{y}" (middle flow), "exb{x}u1c{z}" /
"exb{x}u1" (exit flow; in exit block2 the c{z} taps come after the ReLU inside). The paper uses efb2u1c2 (256 channels, ratio 4) and mfb1u16c3 (728
channels, ratio 16 at output stride 16).

Constructors: xception65(), and tiny_xception() for tests: Xception(middle_units=1,
width_scale=1/8), every width divided by 8 (728 -> 91, 2048 -> 256), taps "efb2u1c2" (32
channels, ratio 4) and "mfb1u1c3" (91 channels, ratio 16 at output stride 16).
"""
from .. import functional as F
from ..nn import BatchNorm2d, Conv2d, Module, ModuleList
from .backbones import Backbone, atrous_schedule, no_taps

BN_EPS = 1e-3


class SeparableConv2d(Module):
    """Depthwise 3x3 + BN, then pointwise 1x1 + BN; with relu=True a ReLU after each BN.

    x: (N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1, relu=False):
        super().__init__()
        self.relu = relu
        self.conv_dw = Conv2d(in_channels, in_channels, 3, stride=stride, padding=dilation,
                              dilation=dilation, groups=in_channels, bias=False)
        self.bn_dw = BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv_pw = Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x):
        x = self.bn_dw(self.conv_dw(x), relu=self.relu)  # the ReLU, if any, fused into the BN
        return self.bn_pw(self.conv_pw(x), relu=self.relu)


class XceptionModule(Module):
    """Three separable convs and a shortcut. x: (N, C_in, H, W) -> (N, depths[2], H / s, W / s).

    skip: "conv" (1x1 conv with the unit's stride + BN), "sum" (identity) or "none".
    relu_inside: False puts a ReLU before each separable conv (entry and middle flows and exit
    block1); True puts it after each BN inside them (exit block2). See the module docstring.
    """

    def __init__(self, in_channels, depths, stride=1, dilation=1, skip="conv", relu_inside=False):
        super().__init__()
        if skip not in ("conv", "sum", "none"):
            raise ValueError(f"skip must be 'conv', 'sum' or 'none', got {skip!r}")
        if skip == "sum" and (stride != 1 or in_channels != depths[-1]):
            raise ValueError(f"an identity shortcut needs stride 1 and {in_channels} output "
                             f"channels, got stride {stride} and depths {depths}")
        self.skip, self.relu_inside = skip, relu_inside
        channels = (in_channels,) + tuple(depths)
        for k in range(3):
            setattr(self, f"sepconv{k + 1}", SeparableConv2d(
                channels[k], channels[k + 1], stride=stride if k == 2 else 1, dilation=dilation,
                relu=relu_inside))
        if skip == "conv":
            self.shortcut_conv = Conv2d(in_channels, depths[-1], 1, stride=stride, bias=False)
            self.shortcut_bn = BatchNorm2d(depths[-1], eps=BN_EPS)

    def forward(self, x, keep=no_taps):
        """keep(name, tensor) sees "c1", "c2", "c3" (Xception passes one that stores taps)."""
        y = x
        for k, sepconv in enumerate((self.sepconv1, self.sepconv2, self.sepconv3), start=1):
            if not self.relu_inside:
                y = F.relu(y)
            y = keep(f"c{k}", sepconv(y))
        if self.skip == "conv":
            return y + self.shortcut_bn(self.shortcut_conv(x))
        if self.skip == "sum":
            return y + x
        return y


# (flow, tap prefix, depths, nominal stride, skip, relu_inside) for each unit, in order
ENTRY_FLOW = [("entry_flow", "efb1u1", (128, 128, 128), 2, "conv", False),
              ("entry_flow", "efb2u1", (256, 256, 256), 2, "conv", False),
              ("entry_flow", "efb3u1", (728, 728, 728), 2, "conv", False)]
EXIT_FLOW = [("exit_flow", "exb1u1", (728, 1024, 1024), 2, "conv", False),
             ("exit_flow", "exb2u1", (1536, 1536, 2048), 1, "none", True)]


def middle_flow(units):
    return [("middle_flow", f"mfb1u{y}", (728, 728, 728), 1, "sum", False) for y in range(1, units + 1)]


class Xception(Backbone):
    """The aligned Xception backbone of DeepLabv3+ (see the module docstring).

    middle_units:  units in the middle flow (16 for Xception-65).
    width_scale:   multiplies every channel count (1 for Xception-65, 1/8 for the tiny one).
    output_stride: 8, 16 or 32.
    """

    def __init__(self, middle_units=16, width_scale=1.0, output_stride=16):
        super().__init__(output_stride)
        if middle_units < 1 or width_scale <= 0:
            raise ValueError(f"need middle_units >= 1 and width_scale > 0, got {middle_units}, {width_scale}")
        self.middle_units, self.width_scale = middle_units, width_scale

        def width(c):
            return max(1, round(c * width_scale))

        c1, c2 = width(32), width(64)
        self.conv1_1 = Conv2d(3, c1, 3, stride=2, padding=1, bias=False)
        self.bn1_1 = BatchNorm2d(c1, eps=BN_EPS)
        self.conv1_2 = Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn1_2 = BatchNorm2d(c2, eps=BN_EPS)
        self.declare("conv1_1", c1, 2)
        self.declare("conv1_2", c2, 2)

        units = ENTRY_FLOW + middle_flow(middle_units) + EXIT_FLOW
        schedule = atrous_schedule([unit[3] for unit in units], 2, output_stride)
        self.entry_flow, self.middle_flow, self.exit_flow = ModuleList(), ModuleList(), ModuleList()
        self.tap_names = []  # the tap prefix of each unit, in order
        in_channels, ratio = c2, 2
        for (flow, name, depths, _, skip, relu_inside), (stride, dilation) in zip(units, schedule):
            depths = tuple(width(d) for d in depths)
            getattr(self, flow).append(XceptionModule(in_channels, depths, stride, dilation, skip,
                                                      relu_inside))
            self.tap_names.append(name)
            self.declare(name + "c1", depths[0], ratio)
            self.declare(name + "c2", depths[1], ratio)
            ratio *= stride
            self.declare(name + "c3", depths[2], ratio)
            self.declare(name, depths[2], ratio)
            in_channels = depths[2]
        self.out_channels = in_channels

    def units(self):
        """Every XceptionModule, entry flow to exit flow."""
        return list(self.entry_flow) + list(self.middle_flow) + list(self.exit_flow)

    def forward(self, x, taps=()):
        """x: (N, 3, H, W) -> (last (N, out_channels, ceil(H/os), ceil(W/os)), {tap: Tensor})."""
        taps = self.start_taps(taps)
        x = taps.keep("conv1_1", self.bn1_1(self.conv1_1(x), relu=True))  # relu(bn(conv(x)))
        x = taps.keep("conv1_2", self.bn1_2(self.conv1_2(x), relu=True))
        for name, unit in zip(self.tap_names, self.units()):
            x = taps.keep(name, unit(x, keep=taps.prefixed(name)))
        return x, taps.features


def xception65(output_stride=16):
    """Xception-65 of DeepLabv3+: 16 middle units, 2048 output channels."""
    return Xception(middle_units=16, output_stride=output_stride)


def tiny_xception(output_stride=16):
    """An Xception small enough for tests on 2 CPU cores: 1 middle unit, widths / 8."""
    return Xception(middle_units=1, width_scale=1 / 8, output_stride=output_stride)
