"""Atrous Spatial Pyramid Pooling (ASPP): the encoder head of DeepLabv3+ (the paper's Fig. 1).

x: (N, C_in, H, W) -> (N, 256, H, W), at the backbone's output resolution (1/r of the image).

The paper keeps DeepLabv3+'s encoder for every experiment (Sec. 4.1: "we use the same encoder,
as shown in Fig. 1") and changes only the decoder. ASPP looks at the last feature map through
five parallel branches, each ending in batch norm and ReLU with 256 channels:

    a 1x1 conv,
    three 3x3 atrous convs with rates (6, 12, 18) at output stride 16,
    image pooling: global average pool -> 1x1 conv -> BN -> ReLU -> bilinear upsample to (H, W),

then concatenates them (5 x 256 channels) and mixes them with a 1x1 conv -> BN -> ReLU to 256.

The atrous rates follow the feature map's resolution so that a branch sees the same part of
the image: DeepLab doubles them at output stride 8, (12, 24, 36). At output stride 32 (the
paper's Table 1) we halve them, (3, 6, 9); DeepLab does not define this case.

Training needs at least two images per batch: the image-pooling branch is 1x1, so its batch
norm would otherwise see a single value per channel (tinyseg, like torch, raises an error).
"""
from .. import functional as F
from .. import nn

ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


def atrous_rates(output_stride):
    """The three ASPP rates for an output stride of 8, 16 or 32 (see the module text)."""
    if output_stride not in ATROUS_RATES:
        raise ValueError(f"ASPP: output_stride must be 8, 16 or 32, got {output_stride!r}")
    return ATROUS_RATES[output_stride]


class ConvBNReLU(nn.Module):
    """conv -> batch norm -> ReLU, with 'same' padding. (N, C_in, H, W) -> (N, C_out, H, W).

    kernel_size 1 or 3 (any odd size), dilation d: padding d (k - 1) / 2 keeps H and W.
    separable=True splits a k x k conv as DeepLab's Xception models do: a depthwise k x k conv
    (groups = C_in) -> BN -> ReLU, then a pointwise 1x1 conv -> BN -> ReLU. It costs
    C_in k^2 + C_in C_out multiply-adds per pixel instead of C_in C_out k^2.
    The convs have no bias: the batch norm that follows has its own.
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1, separable=False):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvBNReLU: kernel_size must be odd for 'same' padding, got {kernel_size}")
        padding = dilation * (kernel_size - 1) // 2
        self.separable = separable and kernel_size > 1
        if self.separable:
            self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            self.depthwise_bn = nn.BatchNorm2d(in_channels)
            self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                                  dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        if self.separable:
            x = self.depthwise_bn(self.depthwise(x), relu=True)  # relu(bn(conv)), fused
        return self.bn(self.conv(x), relu=True)


class ASPP(nn.Module):
    """x: (N, in_channels, H, W) -> (N, channels, H, W); five branches, concat, 1x1 projection.

    rates: the three atrous rates, by default `atrous_rates(output_stride)`.
    separable: atrous branches as depthwise + pointwise convs (DeepLabv3+ with Xception).
    """

    def __init__(self, in_channels, output_stride=16, channels=256, rates=None, separable=False):
        super().__init__()
        self.rates = tuple(atrous_rates(output_stride) if rates is None else rates)
        self.branch1x1 = ConvBNReLU(in_channels, channels, 1)
        self.atrous = nn.ModuleList(ConvBNReLU(in_channels, channels, 3, dilation=rate,
                                               separable=separable) for rate in self.rates)
        self.image_pool = ConvBNReLU(in_channels, channels, 1)
        self.project = ConvBNReLU(channels * (len(self.rates) + 2), channels, 1)
        self.in_channels, self.out_channels = in_channels, channels

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ASPP expects (N, {self.in_channels}, H, W), got shape {x.shape}")
        size = x.shape[2:]
        branches = [self.branch1x1(x)] + [conv(x) for conv in self.atrous]  # each (N, 256, H, W)
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))               # (N, 256, 1, 1)
        branches.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        return self.project(F.cat(branches, dim=1))                         # (N, 5 * 256, H, W) -> (N, 256, H, W)
