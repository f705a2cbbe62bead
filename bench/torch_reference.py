"""tinyseg's SegmentationModel rewritten in PyTorch: the same layers, names, weights and forward.

    reference = from_tinyseg(model)                  # a torch.nn.Module holding model's weights
    reference = build_reference(model.config, model.state_dict())
    loss = reference.loss(images, masks)             # torch tensors; masks int64, 255 = void
    scores = reference(images)

The benchmarks (bench/step.py) time it against tinyseg, and tests/test_torch_equivalence.py
checks that the two networks agree: loss, the gradient of every parameter, the running
statistics of every batch norm, and the outputs in eval mode. So this file is written from the
architecture described in tinyseg/models/*.py, with torch's own layers (nn.Conv2d,
nn.BatchNorm2d, F.interpolate, F.nll_loss, ...), and not by calling tinyseg's ops. Only the
pure-Python bookkeeping of where the strides and dilations go is shared
(`nominal_strides`, `atrous_schedule`), and the default fused taps and head widths are
read from the config that tinyseg's build_model wrote.

Every module and attribute carries tinyseg's name ("backbone.layer1.0.conv1.weight", ...), so
tinyseg's state dict loads by name; torch's batch norms add only `num_batches_tracked`.
Supported: the ResNet backbones (deep or standard stem, deeplab or torchvision layout,
multi_grid), Xception (xception65, tiny_xception), ASPP (plain or separable), and the three
decoders (dupsampling with learned or fixed temperature and fixed or trainable W,
deeplabv3plus, bilinear), with the cross-entropy loss.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyseg.models.backbones import atrous_schedule
from tinyseg.models.resnet import nominal_strides

IGNORE_INDEX = 255

# backbone name -> constructor arguments, as in tinyseg/models/resnet.py and xception.py
RESNETS = {"resnet50": dict(units=(3, 4, 6, 3), widths=(64, 128, 256, 512)),
           "resnet101": dict(units=(3, 4, 23, 3), widths=(64, 128, 256, 512)),
           "tiny_resnet": dict(units=(2, 1, 1, 1), widths=(8, 16, 32, 64), tiny=True)}
XCEPTIONS = {"xception65": dict(middle_units=16, width_scale=1.0),
             "tiny_xception": dict(middle_units=1, width_scale=1 / 8)}
XCEPTION_BN_EPS = 1e-3  # TensorFlow's, as tinyseg's Xception uses


def _resize(x, size):
    """Bilinear resize to `size` (H, W), align_corners=False; x itself when it has that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Taps:
    """The features a forward pass was asked for, stored as the pass goes by."""

    def __init__(self, requested):
        self.requested, self.features = set(requested), {}

    def keep(self, name, x):
        if name in self.requested:
            self.features[name] = x
        return x

    def prefixed(self, prefix):
        """A `keep` for one unit: its local names ("c1", ...) become prefix + name."""
        return lambda name, x: self.keep(prefix + name, x)


# ---------------------------------------------------------------- ResNet
class Bottleneck(nn.Module):
    """relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)); taps c1, c2, c3."""

    def __init__(self, in_channels, width, stride, dilation):
        super().__init__()
        out_channels = 4 * width
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x, keep):
        if self.downsample is not None:
            shortcut = self.downsample(x)
        else:
            shortcut = x[:, :, ::self.stride, ::self.stride]
        y = keep("c1", F.relu(self.bn1(self.conv1(x))))
        y = keep("c2", F.relu(self.bn2(self.conv2(y))))
        y = keep("c3", self.bn3(self.conv3(y)))
        return F.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet with a deep (3 x 3x3) or standard (7x7) stem; strides and dilations as tinyseg's."""

    def __init__(self, units, widths, output_stride, stem="deep", multi_grid=None,
                 layout="deeplab", tiny=False):
        super().__init__()
        self.stem = stem
        if stem == "deep":
            c1, c2, c3 = (8, 8, 16) if tiny else (64, 64, 128)
            self.conv1_1 = nn.Conv2d(3, c1, 3, 2, padding=1, bias=False)
            self.bn1_1 = nn.BatchNorm2d(c1)
            self.conv1_2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
            self.bn1_2 = nn.BatchNorm2d(c2)
            self.conv1_3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
            self.bn1_3 = nn.BatchNorm2d(c3)
            in_channels = c3
        else:
            in_channels = 8 if tiny else 64
            self.conv1 = nn.Conv2d(3, in_channels, 7, 2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(in_channels)
        multi_grid = multi_grid or (1,) * units[3]
        strides = [s for block in nominal_strides(units, layout) for s in block]
        schedule = iter(atrous_schedule(strides, 4, output_stride))
        for b, (n, width) in enumerate(zip(units, widths)):
            layer = []
            for u in range(n):
                stride, dilation = next(schedule)
                if b == 3:
                    dilation *= multi_grid[u]
                layer.append(Bottleneck(in_channels, width, stride, dilation))
                in_channels = 4 * width
            setattr(self, f"layer{b + 1}", nn.Sequential(*layer))
        self.out_channels = in_channels

    def forward(self, x, taps):
        if self.stem == "deep":
            x = taps.keep("conv1_1", F.relu(self.bn1_1(self.conv1_1(x))))
            x = taps.keep("conv1_2", F.relu(self.bn1_2(self.conv1_2(x))))
            x = taps.keep("conv1_3", F.relu(self.bn1_3(self.conv1_3(x))))
        else:
            x = taps.keep("conv1", F.relu(self.bn1(self.conv1(x))))
        x = taps.keep("pool1", F.max_pool2d(x, 3, stride=2, padding=1))
        for b, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            for u, unit in enumerate(layer, start=1):
                name = f"b{b}u{u}"
                x = taps.keep(name, unit(x, taps.prefixed(name)))
        return x


# ---------------------------------------------------------------- Xception
class SeparableConv2d(nn.Module):
    """depthwise 3x3 -> BN (-> ReLU) -> pointwise 1x1 -> BN (-> ReLU); BN eps 1e-3."""

    def __init__(self, in_channels, out_channels, stride, dilation, relu):
        super().__init__()
        self.relu = relu
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride, padding=dilation,
                                 dilation=dilation, groups=in_channels, bias=False)
        self.bn_dw = nn.BatchNorm2d(in_channels, eps=XCEPTION_BN_EPS)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_channels, eps=XCEPTION_BN_EPS)

    def forward(self, x):
        x = self.bn_dw(self.conv_dw(x))
        if self.relu:
            x = F.relu(x)
        x = self.bn_pw(self.conv_pw(x))
        return F.relu(x) if self.relu else x


class XceptionModule(nn.Module):
    """Three separable convs (the stride on the last) plus a conv, identity or no shortcut."""

    def __init__(self, in_channels, depths, stride, dilation, skip, relu_inside):
        super().__init__()
        self.skip, self.relu_inside = skip, relu_inside
        channels = (in_channels,) + tuple(depths)
        for k in range(3):
            setattr(self, f"sepconv{k + 1}", SeparableConv2d(
                channels[k], channels[k + 1], stride if k == 2 else 1, dilation, relu_inside))
        if skip == "conv":
            self.shortcut_conv = nn.Conv2d(in_channels, depths[-1], 1, stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(depths[-1], eps=XCEPTION_BN_EPS)

    def forward(self, x, keep):
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


class Xception(nn.Module):
    """Aligned Xception: entry flow (3 units), middle flow, exit flow (2 units)."""

    def __init__(self, middle_units, width_scale, output_stride):
        super().__init__()

        def width(c):
            return max(1, round(c * width_scale))

        c1, c2 = width(32), width(64)
        self.conv1_1 = nn.Conv2d(3, c1, 3, 2, padding=1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(c1, eps=XCEPTION_BN_EPS)
        self.conv1_2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn1_2 = nn.BatchNorm2d(c2, eps=XCEPTION_BN_EPS)
        # (flow, tap prefix, depths, nominal stride, skip, relu_inside) of every unit
        units = ([("entry_flow", f"efb{b}u1", d, 2, "conv", False)
                  for b, d in ((1, (128,) * 3), (2, (256,) * 3), (3, (728,) * 3))]
                 + [("middle_flow", f"mfb1u{y}", (728,) * 3, 1, "sum", False)
                    for y in range(1, middle_units + 1)]
                 + [("exit_flow", "exb1u1", (728, 1024, 1024), 2, "conv", False),
                    ("exit_flow", "exb2u1", (1536, 1536, 2048), 1, "none", True)])
        schedule = atrous_schedule([unit[3] for unit in units], 2, output_stride)
        self.entry_flow, self.middle_flow, self.exit_flow = (nn.ModuleList() for _ in range(3))
        self.tap_names, in_channels = [], c2
        for (flow, name, depths, _, skip, relu_inside), (stride, dilation) in zip(units, schedule):
            depths = tuple(width(d) for d in depths)
            getattr(self, flow).append(
                XceptionModule(in_channels, depths, stride, dilation, skip, relu_inside))
            self.tap_names.append(name)
            in_channels = depths[2]
        self.out_channels = in_channels

    def forward(self, x, taps):
        x = taps.keep("conv1_1", F.relu(self.bn1_1(self.conv1_1(x))))
        x = taps.keep("conv1_2", F.relu(self.bn1_2(self.conv1_2(x))))
        units = list(self.entry_flow) + list(self.middle_flow) + list(self.exit_flow)
        for name, unit in zip(self.tap_names, units):
            x = taps.keep(name, unit(x, taps.prefixed(name)))
        return x


# ---------------------------------------------------------------- ASPP and decoders
class ConvBNReLU(nn.Module):
    """conv ('same' padding, no bias) -> BN -> ReLU; separable: depthwise -> BN -> ReLU first."""

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1, separable=False):
        super().__init__()
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
            x = F.relu(self.depthwise_bn(self.depthwise(x)))
        return F.relu(self.bn(self.conv(x)))


class ASPP(nn.Module):
    """1x1 branch, three atrous branches, image pooling; concat; 1x1 projection."""

    def __init__(self, in_channels, channels, rates, separable):
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, channels, 1)
        self.atrous = nn.ModuleList(ConvBNReLU(in_channels, channels, 3, rate, separable)
                                    for rate in rates)
        self.image_pool = ConvBNReLU(in_channels, channels, 1)
        self.project = ConvBNReLU(channels * (len(rates) + 2), channels, 1)

    def forward(self, x):
        branches = [self.branch1x1(x)] + [conv(x) for conv in self.atrous]
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        branches.append(F.interpolate(pooled, size=x.shape[2:], mode="bilinear",
                                      align_corners=False))
        return self.project(torch.cat(branches, dim=1))


class LowLevelFusion(nn.Module):
    """Each tap resized and projected to 48 channels (in either order), concatenated with the
    resized encoder output, then two 3x3 ConvBNReLU."""

    def __init__(self, in_channels, low_level, channels, low_level_channels, separable,
                 project_first):
        super().__init__()
        self.taps, self.project_first = tuple(low_level), project_first
        self.reduce = nn.ModuleList(ConvBNReLU(c, low_level_channels, 1)
                                    for c in low_level.values())
        mixed = in_channels + low_level_channels * len(self.taps)
        self.convs = nn.Sequential(ConvBNReLU(mixed, channels, 3, separable=separable),
                                   ConvBNReLU(channels, channels, 3, separable=separable))

    def forward(self, last, features, size):
        parts = []
        for name, reduce in zip(self.taps, self.reduce):
            if self.project_first:
                parts.append(_resize(reduce(features[name]), size))
            else:
                parts.append(reduce(_resize(features[name], size)))
        parts.append(_resize(last, size))
        return self.convs(torch.cat(parts, dim=1))


class BilinearHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.taps = ()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, last, features, size):
        return _resize(self.classifier(last), size)


class DeepLabV3PlusDecoder(nn.Module):
    def __init__(self, in_channels, low_level, num_classes, channels, low_level_channels,
                 separable):
        super().__init__()
        self.taps = tuple(low_level)
        self.fusion = LowLevelFusion(in_channels, low_level, channels, low_level_channels,
                                     separable, project_first=True)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, last, features, size):
        finest = max((features[name].shape[2:] for name in self.taps), key=lambda s: s[0] * s[1])
        return _resize(self.classifier(self.fusion(last, features, finest)), size)


class DUpsample(nn.Module):
    """(N, C~, h, w) -> (N, C, r h, r w): v = W f + mean per pixel, then depth-to-space with
    the channel order (i, j, c), class fastest (NOT torch's pixel_shuffle order (c, i, j))."""

    def __init__(self, dim, num_classes, ratio, trainable):
        super().__init__()
        self.num_classes, self.ratio = num_classes, ratio
        rows = ratio * ratio * num_classes
        W, mean = torch.zeros(rows, dim), torch.zeros(rows)
        if trainable:
            self.W, self.mean = nn.Parameter(W), nn.Parameter(mean)
        else:
            self.register_buffer("W", W)
            self.register_buffer("mean", mean)

    def forward(self, x):
        n, dim, h, w = x.shape
        r, c = self.ratio, self.num_classes
        v = F.conv2d(x, self.W.reshape(r * r * c, dim, 1, 1), self.mean)  # (N, r*r*C, h, w)
        v = v.reshape(n, r, r, c, h, w)                                     # (n, i, j, c, y, x)
        v = v.permute(0, 3, 4, 1, 5, 2)                                     # (n, c, y, i, x, j)
        return v.reshape(n, c, h * r, w * r)


class DUpsamplingDecoder(nn.Module):
    """Fusion at 1/r (if any taps), 1x1 compression to C~, DUpsample, log softmax(. / T)."""

    def __init__(self, in_channels, low_level, num_classes, ratio, dim, channels,
                 low_level_channels, separable, temperature, trainable_projection):
        super().__init__()
        self.taps = tuple(low_level)
        self.fusion = None
        if low_level:
            self.fusion = LowLevelFusion(in_channels, low_level, channels, low_level_channels,
                                         separable, project_first=False)
            in_channels = channels
        self.compress = nn.Conv2d(in_channels, dim, 1)
        self.dupsample = DUpsample(dim, num_classes, ratio, trainable_projection)
        self.log_temperature = (nn.Parameter(torch.zeros(1)) if temperature == "learned"
                                else None)

    def forward(self, last, features, size):
        if self.fusion is not None:
            last = self.fusion(last, features, last.shape[2:])
        scores = self.dupsample(self.compress(last))
        if self.log_temperature is not None:
            scores = scores / torch.exp(self.log_temperature)
        return F.log_softmax(scores, dim=1)


# ---------------------------------------------------------------- the whole network
class SegmentationModel(nn.Module):
    """Pad bottom-right to a multiple of r, backbone -> ASPP -> decoder, crop back."""

    def __init__(self, backbone, encoder, decoder, output_stride, log_probabilities):
        super().__init__()
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.output_stride, self.log_probabilities = output_stride, log_probabilities

    def forward(self, images):
        height, width = images.shape[2:]
        r = self.output_stride
        padded = F.pad(images, (0, -width % r, 0, -height % r))  # zeros right and below
        taps = Taps(self.decoder.taps)
        last = self.backbone(padded, taps)
        scores = self.decoder(self.encoder(last), taps.features, padded.shape[2:])
        return scores[:, :, :height, :width]

    def loss(self, images, masks):
        """Mean cross-entropy over the non-void pixels (NLL of DUpsampling's log-probabilities)."""
        scores = self(images)
        if self.log_probabilities:
            return F.nll_loss(scores, masks, ignore_index=IGNORE_INDEX)
        return F.cross_entropy(scores, masks, ignore_index=IGNORE_INDEX)


def _backbone(config):
    name, output_stride = config["backbone"], config["output_stride"]
    if name in RESNETS:
        options = {k: config[k] for k in ("stem", "multi_grid", "layout") if k in config}
        return ResNet(output_stride=output_stride, **RESNETS[name], **options)
    if name in XCEPTIONS:
        return Xception(output_stride=output_stride, **XCEPTIONS[name])
    raise ValueError(f"torch_reference: unknown backbone {name!r}")


def build_reference(config, state_dict):
    """A torch SegmentationModel for tinyseg's `model.config`, loaded with its `state_dict()`.

    The low-level channel counts of the fused taps are read from the state dict (the weight of
    each 1x1 projection); everything else from the config. Raises ValueError when the state
    dict and the rebuilt network do not have the same names and shapes.
    """
    if config.get("loss", "cross_entropy") != "cross_entropy":
        raise ValueError(f"torch_reference supports loss='cross_entropy' only, "
                         f"got {config['loss']!r}")
    backbone = _backbone(config)
    channels, low_channels = config["head_channels"], config["low_level_channels"]
    separable = config["separable"]
    encoder = ASPP(backbone.out_channels, channels, config["aspp_rates"], separable)
    fuse, decoder_name = config["fuse"], config["decoder"]
    low_level = {name: state_dict[f"decoder.fusion.reduce.{i}.conv.weight"].shape[1]
                 for i, name in enumerate(fuse)}
    if decoder_name == "bilinear":
        decoder = BilinearHead(channels, config["num_classes"])
    elif decoder_name == "deeplabv3plus":
        decoder = DeepLabV3PlusDecoder(channels, low_level, config["num_classes"], channels,
                                       low_channels, separable)
    elif decoder_name == "dupsampling":
        decoder = DUpsamplingDecoder(channels, low_level, config["num_classes"],
                                     config["output_stride"], config["dim"], channels,
                                     low_channels, separable, config["temperature"],
                                     config["trainable_projection"])
    else:
        raise ValueError(f"torch_reference: unknown decoder {decoder_name!r}")
    model = SegmentationModel(backbone, encoder, decoder, config["output_stride"],
                              log_probabilities=decoder_name == "dupsampling")
    dtype = getattr(torch, str(next(iter(state_dict.values())).dtype))  # float32 or float64
    load_tinyseg_state(model.to(dtype), state_dict)
    return model


def load_tinyseg_state(model, state_dict):
    """Copy tinyseg's arrays (NumPy or CuPy) into the torch model, matching names and shapes."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    misshaped = [k for k in own
                 if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or misshaped:
        raise ValueError(f"torch_reference does not match the tinyseg model: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {misshaped[:5]}")
    with torch.no_grad():
        for key, target in own.items():
            array = state_dict[key]
            array = array.get() if hasattr(array, "get") else np.asarray(array)  # CuPy -> host
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def from_tinyseg(model):
    """The torch twin of a tinyseg SegmentationModel, on the CPU, in its dtype and mode."""
    reference = build_reference(model.config, model.state_dict())
    return reference.train(model.training)
