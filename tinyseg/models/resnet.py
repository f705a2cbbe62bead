"""ResNet-50 and ResNet-101 as DeepLab builds them for segmentation (the paper's ResNet-50, Sec. 4).

x: (N, 3, H, W) -> last: (N, 4 * widths[3], ceil(H / os), ceil(W / os)), plus the named taps.

The network (He et al., 2016; DeepLab's resnet_v1_beta.py and slim's resnet_v1.py):

    stem "deep"      conv1_1 3x3 s2 3->64, conv1_2 3x3 64->64, conv1_3 3x3 64->128, each
                     conv + BN + ReLU (DeepLab's "beta" variant, used by the paper)
    stem "standard"  conv1 7x7 s2 3->64 + BN + ReLU (torchvision's)
    pool1            3x3 max pool, stride 2, padding 1                       -> ratio 4
    block1..block4   (3, 4, 6, 3) units for ResNet-50, (3, 4, 23, 3) for ResNet-101, with
                     bottleneck widths (64, 128, 256, 512); each unit maps C_in -> 4 width:

        c1  = relu(bn(conv1x1(x)))                        C_in  -> width
        c2  = relu(bn(conv3x3(c1, stride, dilation)))     width -> width
        c3  = bn(conv1x1(c2))                             width -> 4 width
        out = relu(c3 + shortcut(x))

    shortcut: a 1x1 conv (with the unit's stride) + BN when the channels change (the first
    unit of a block), else x itself, subsampled x[:, :, ::s, ::s] when the unit has stride s.

Where the strides sit, `layout`:
    "deeplab" (default): stride 2 on the 3x3 conv of the LAST unit of blocks 1, 2 and 3, the
        slim layout of DeepLab's checkpoints. Hence b1u2c3 is at ratio 4, b1u3c3 at 8, and
        b3u6c3 at 16 when output_stride <= 16.
    "torchvision": stride 2 on the FIRST unit of blocks 2, 3 and 4 (ResNet "v1.5"), the layout
        torchvision's ImageNet weights were trained in (see tinyseg/weights.py).
Both layouts have the same weights, shapes and names, and the same total stride 32.

output_stride 8, 16 or 32: DeepLab's atrous rule (`atrous_schedule` in backbones.py) turns the
strides after the target into dilations of the following 3x3 convs. multi_grid, e.g.
(1, 2, 4) as in DeepLabv3, multiplies the dilations of block 4's units, unit by unit.

Padding is symmetric (dilation for a 3x3 conv, 3 for the 7x7, 1 for the pool), as in
PyTorch; a stride-2 layer therefore maps a size n to ceil(n / 2).

Names: the stem's layers are conv1_1/bn1_1 ... (deep) or conv1/bn1 (standard); the blocks are
layer1..layer4 of Bottleneck units with conv1, bn1, conv2, bn2, conv3, bn3 and
downsample.0 (conv) / downsample.1 (BN): torchvision's names, so its state dicts load as is.

Taps (`feature_info()` lists them with channels and ratios): "conv1_1", "conv1_2", "conv1_3"
(deep stem) or "conv1" (standard), "pool1", then for block x, unit y: "b{x}u{y}c1",
"b{x}u{y}c2" (after their ReLU), "b{x}u{y}c3" (after its BN, before the residual add, as
DeepLab's end point block{x}/unit_{y}/bottleneck_v1/conv3) and "b{x}u{y}" (the unit's output).

Constructors: resnet50(), resnet101(), small_resnet() for the experiments on real photos
(experiments/), and tiny_resnet() for tests: ResNet(units=(2, 1, 1, 1),
widths=(8, 16, 32, 64), stem_channels=(8, 8, 16)), out_channels 256, with taps "conv1_3" (ratio
2), "b1u1c3" (4) and "b3u1c3" (16 at output stride 16) standing in for the paper's choices.
"""
from .. import functional as F
from ..nn import BatchNorm2d, Conv2d, Module, Sequential
from .backbones import Backbone, atrous_schedule, no_taps

STEM_CHANNELS = {"deep": (64, 64, 128), "standard": (64,)}


class Bottleneck(Module):
    """One residual unit. x: (N, C_in, H, W) -> (N, 4 width, ceil(H / stride), ceil(W / stride)).

    The 3x3 conv carries the stride and the dilation; see the module docstring for the math.
    """

    expansion = 4

    def __init__(self, in_channels, width, stride=1, dilation=1):
        super().__init__()
        out_channels = self.expansion * width
        self.stride = stride
        self.conv1 = Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation,
                            bias=False)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = BatchNorm2d(out_channels)
        if in_channels != out_channels:
            self.downsample = Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                         BatchNorm2d(out_channels))
        else:
            self.downsample = None

    def forward(self, x, keep=no_taps):
        """keep(name, tensor) sees "c1", "c2", "c3" (ResNet passes one that stores taps)."""
        if self.downsample is not None:
            shortcut = self.downsample(x)
        elif self.stride > 1:
            shortcut = x[:, :, ::self.stride, ::self.stride]  # 1x1 subsampling, as slim's `subsample`
        else:
            shortcut = x
        y = keep("c1", self.bn1(self.conv1(x), relu=True))  # relu(bn(conv(x))), fused
        y = keep("c2", self.bn2(self.conv2(y), relu=True))
        y = keep("c3", self.bn3(self.conv3(y)))
        return F.relu(y + shortcut)


def nominal_strides(units, layout):
    """The stride of every unit before the atrous rule: one list per block."""
    if layout == "deeplab":  # last unit of blocks 1-3
        return [[1] * (n - 1) + [2 if b < 3 else 1] for b, n in enumerate(units)]
    if layout == "torchvision":  # first unit of blocks 2-4
        return [[2 if b > 0 else 1] + [1] * (n - 1) for b, n in enumerate(units)]
    raise ValueError(f"layout must be 'deeplab' or 'torchvision', got {layout!r}")


class ResNet(Backbone):
    """A bottleneck ResNet backbone (see the module docstring).

    units:         units per block, e.g. (3, 4, 6, 3) for ResNet-50.
    widths:        bottleneck width per block; a block outputs 4 x its width.
    stem:          "deep" (three 3x3 convs) or "standard" (one 7x7 conv).
    stem_channels: output channels of the stem's convs (3 for "deep", 1 for "standard");
                   default (64, 64, 128) or (64,).
    output_stride: 8, 16 or 32.
    multi_grid:    one dilation multiplier per unit of block 4, e.g. (1, 2, 4); default all 1.
    layout:        "deeplab" (strides on the last unit of blocks 1-3) or "torchvision".
    """

    def __init__(self, units=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="deep",
                 stem_channels=None, output_stride=16, multi_grid=None, layout="deeplab"):
        super().__init__(output_stride)
        if stem not in STEM_CHANNELS:
            raise ValueError(f"stem must be 'deep' or 'standard', got {stem!r}")
        stem_channels = tuple(stem_channels or STEM_CHANNELS[stem])
        if len(stem_channels) != len(STEM_CHANNELS[stem]):
            raise ValueError(f"a {stem} stem needs {len(STEM_CHANNELS[stem])} stem_channels, "
                             f"got {stem_channels}")
        if len(units) != 4 or len(widths) != 4 or min(units) < 1:
            raise ValueError(f"units and widths need 4 entries (units >= 1), got {units} and {widths}")
        multi_grid = tuple(multi_grid or (1,) * units[3])
        if len(multi_grid) != units[3]:
            raise ValueError(f"multi_grid needs one rate per unit of block 4 ({units[3]}), got {multi_grid}")
        self.stem, self.layout = stem, layout
        self.multi_grid = multi_grid
        self._build_stem(stem_channels)

        # (stride, dilation) of every unit in order; the stem and pool1 already divide by 4
        strides = [s for block in nominal_strides(units, layout) for s in block]
        schedule = iter(atrous_schedule(strides, 4, output_stride))
        in_channels, ratio = stem_channels[-1], 4
        for b, (n, width) in enumerate(zip(units, widths)):
            layer = []
            for u in range(n):
                stride, dilation = next(schedule)
                if b == 3:
                    dilation *= multi_grid[u]
                layer.append(Bottleneck(in_channels, width, stride, dilation))
                in_channels = Bottleneck.expansion * width
                name = f"b{b + 1}u{u + 1}"
                self.declare(name + "c1", width, ratio)
                ratio *= stride
                self.declare(name + "c2", width, ratio)
                self.declare(name + "c3", in_channels, ratio)
                self.declare(name, in_channels, ratio)
            setattr(self, f"layer{b + 1}", Sequential(*layer))
        self.out_channels = in_channels

    def _build_stem(self, channels):
        if self.stem == "deep":
            c1, c2, c3 = channels
            self.conv1_1 = Conv2d(3, c1, 3, stride=2, padding=1, bias=False)
            self.bn1_1 = BatchNorm2d(c1)
            self.conv1_2 = Conv2d(c1, c2, 3, padding=1, bias=False)
            self.bn1_2 = BatchNorm2d(c2)
            self.conv1_3 = Conv2d(c2, c3, 3, padding=1, bias=False)
            self.bn1_3 = BatchNorm2d(c3)
            for name, c in zip(("conv1_1", "conv1_2", "conv1_3"), channels):
                self.declare(name, c, 2)
        else:
            self.conv1 = Conv2d(3, channels[0], 7, stride=2, padding=3, bias=False)
            self.bn1 = BatchNorm2d(channels[0])
            self.declare("conv1", channels[0], 2)
        self.declare("pool1", channels[-1], 4)

    def layers(self):
        """The four blocks, in order."""
        return self.layer1, self.layer2, self.layer3, self.layer4

    def forward(self, x, taps=()):
        """x: (N, 3, H, W) -> (last (N, out_channels, ceil(H/os), ceil(W/os)), {tap: Tensor})."""
        taps = self.start_taps(taps)
        if self.stem == "deep":
            x = taps.keep("conv1_1", self.bn1_1(self.conv1_1(x), relu=True))  # relu(bn(conv))
            x = taps.keep("conv1_2", self.bn1_2(self.conv1_2(x), relu=True))
            x = taps.keep("conv1_3", self.bn1_3(self.conv1_3(x), relu=True))
        else:
            x = taps.keep("conv1", self.bn1(self.conv1(x), relu=True))
        x = taps.keep("pool1", F.max_pool2d(x, 3, stride=2, padding=1))
        for b, layer in enumerate(self.layers(), start=1):
            for u, unit in enumerate(layer, start=1):
                name = f"b{b}u{u}"
                x = taps.keep(name, unit(x, keep=taps.prefixed(name)))
        return x, taps.features


def resnet50(output_stride=16, stem="deep", multi_grid=None, layout="deeplab"):
    """ResNet-50: units (3, 4, 6, 3), 2048 output channels (23.5M parameters with the standard stem)."""
    return ResNet((3, 4, 6, 3), stem=stem, output_stride=output_stride, multi_grid=multi_grid,
                  layout=layout)


def resnet101(output_stride=16, stem="deep", multi_grid=None, layout="deeplab"):
    """ResNet-101: units (3, 4, 23, 3), 2048 output channels (42.5M parameters, standard stem)."""
    return ResNet((3, 4, 23, 3), stem=stem, output_stride=output_stride, multi_grid=multi_grid,
                  layout=layout)


def small_resnet(output_stride=16, stem="deep", multi_grid=None, layout="deeplab"):
    """A ResNet that trains from scratch in minutes on a CPU (the real-photo experiments):
    units (2, 2, 2, 2), widths (16, 32, 64, 128), 512 output channels."""
    stem_channels = (16, 16, 32) if stem == "deep" else (16,)
    return ResNet((2, 2, 2, 2), (16, 32, 64, 128), stem=stem, stem_channels=stem_channels,
                  output_stride=output_stride, multi_grid=multi_grid, layout=layout)


def tiny_resnet(output_stride=16, stem="deep", multi_grid=None, layout="deeplab"):
    """A ResNet small enough for tests on 2 CPU cores: units (2, 1, 1, 1), widths (8, 16, 32, 64)."""
    stem_channels = (8, 8, 16) if stem == "deep" else (8,)
    return ResNet((2, 1, 1, 1), (8, 16, 32, 64), stem=stem, stem_channels=stem_channels,
                  output_stride=output_stride, multi_grid=multi_grid, layout=layout)
