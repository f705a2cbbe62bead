"""The whole segmentation network by name: backbone -> ASPP encoder -> decoder (Figs. 1 and 2).

    model = build_model("resnet50", "dupsampling", num_classes=21, output_stride=16,
                        fuse=("b1u2c3",), dim=64)
    model.set_projection(W, mean)            # from tinyseg.pca, before training
    logits = model(images)                   # (N, 3, H, W) -> (N, 21, H, W), any H and W
    loss = model.loss(images, masks)         # masks: (N, H, W) ints, 255 = void

Images of any size: the image is padded with zeros at the bottom and right to a multiple of
the output stride r, run through the network, and the scores are cropped back. Nothing is
resized, so the image is never distorted and DUpsampling's r x r blocks tile it exactly.
(Images are normalised before the model, so a zero is the mean colour.)

Losses (the `loss` argument):
* "cross_entropy": pixel-wise cross-entropy, void pixels (255) ignored. For DUpsampling the
  decoder outputs log softmax(DUpsample(F) / T), Eq. (6), and the loss is their NLL.
* "regression" (DUpsampling only): Eq. (4), the mean squared error between the decoder's
  C~-channel map F and the compressed labels Y~ = W^T (v - mean) of every r x r block of the
  mask (decoders.compress_labels, void handled as the PCA's default "nearest"; blocks that are
  entirely void are left out). The forward pass is the same, so a model pre-trained this
  way can go on with cross-entropy.

Weight decay (`param_groups`): every weight and bias decays, batch norm's gamma and beta
included, as DeepLab's PyTorch ports do with torch.optim.SGD(weight_decay=...) (DeepLab's
TensorFlow code regularises only the conv kernels). The temperature's log T does not decay:
decay would pull T towards 1 for no reason. Nor do W and mean when they are trainable.

`model.config` is a JSON-ready dict; build_model(**model.config) rebuilds the same
architecture (load the weights with load_state_dict; `pretrained` and `projection` are not in
it: the checkpoint's state dict holds the trained weights, W and mean).
"""
from .. import functional as F
from .. import nn
from ..autograd import Tensor, as_tensor
from ..backend import get_array_module
from .aspp import ASPP
from .backbones import build_backbone
from .decoders import (BilinearHead, DeepLabV3PlusDecoder, DUpsamplingDecoder, TEMPERATURES,
                       compress_labels)

DECODERS = ("dupsampling", "deeplabv3plus", "bilinear")
LOSSES = ("cross_entropy", "regression")

# the low-level feature fused by default: the paper's b1u2c3 (ResNet) and efb2u1c2 (Xception),
# and their stand-ins at ratio 4 in the tiny backbones
DEFAULT_FUSE = {"resnet50": ("b1u2c3",), "resnet101": ("b1u2c3",), "xception65": ("efb2u1c2",),
                "mobilenet_v2": ("expanded_conv_2/depthwise",),
                "small_resnet": ("b1u2c3",), "tiny_resnet": ("b1u1c3",), "tiny_xception": ("efb2u1c2",)}

# head widths: (ASPP and decoder convs, low-level projection); the tiny backbones get tiny heads
HEAD_WIDTHS = {"small_resnet": (64, 16), "tiny_resnet": (32, 8), "tiny_xception": (32, 8)}
DEFAULT_HEAD_WIDTHS = (256, 48)


def _pad_bottom_right(x, multiple, plus_one=False):
    """(N, C, H, W) -> (N, C, H', W') with zeros below and to the right, H' and W' multiples
    of `multiple` (plus_one: of the form multiple * k + 1, TensorFlow DeepLab's sizes)."""
    n, c, h, w = x.shape
    xp = get_array_module(x.data)
    extra = 1 if plus_one else 0
    pad_h, pad_w = -(h - extra) % multiple, -(w - extra) % multiple
    if pad_h:
        x = F.cat([x, Tensor(xp.zeros((n, c, pad_h, w), x.dtype))], dim=2)
    if pad_w:
        x = F.cat([x, Tensor(xp.zeros((n, c, h + pad_h, pad_w), x.dtype))], dim=3)
    return x


class SegmentationModel(nn.Module):
    """images (N, 3, H, W) -> class scores (N, num_classes, H, W); see the module docstring.

    backbone -> encoder (ASPP) -> decoder; the three are the groups tinyseg.flops reports.
    """

    def __init__(self, backbone, encoder, decoder, num_classes, loss, config):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss == "regression" and not isinstance(decoder, DUpsamplingDecoder):
            raise ValueError("the regression loss (Eq. 4) needs the dupsampling decoder")
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.num_classes, self.loss_name = num_classes, loss
        self.output_stride = backbone.output_stride
        self.config = dict(config)

    # ------------------------------------------------------------------ forward
    def encode(self, images):
        """images (N, 3, H, W) -> (ASPP output (N, 256, H'/r, W'/r), {tap: feature}, (H', W')),
        where H' and W' are H and W padded up to multiples of r."""
        images = as_tensor(images)
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {images.shape}")
        plus_one = self.config.get("align_corners", False)
        padded = _pad_bottom_right(images, self.output_stride, plus_one)
        last, features = self.backbone(padded, taps=self.decoder.taps)
        return self.encoder(last), features, padded.shape[2:]

    def forward(self, images):
        """(N, 3, H, W) -> (N, num_classes, H, W) logits (log-probabilities for DUpsampling)."""
        height, width = images.shape[2:]
        last, features, size = self.encode(images)
        scores = self.decoder(last, features, size)      # (N, C, H', W'), H' = H rounded up to r
        if tuple(size) == (height, width):
            return scores
        return scores[:, :, :height, :width]

    def loss(self, images, masks):
        """Scalar training loss for images (N, 3, H, W) and masks (N, H, W) (255 = void)."""
        if self.loss_name == "regression":
            last, features, _ = self.encode(images)
            code = self.decoder.compressed(last, features)              # F: (N, C~, h, w)
            W, mean = self.decoder.dupsample.projection
            target, valid = compress_labels(masks, W, mean, self.output_stride)
            if target.shape != code.shape:
                raise ValueError(f"masks of shape {tuple(masks.shape)} do not match images of "
                                 f"shape {tuple(images.shape)}")
            counted = float(valid.sum()) * code.shape[1]
            return F.mse_loss(code * valid, target, reduction="sum") / counted  # Eq. (4)
        if isinstance(self.decoder, DUpsamplingDecoder):
            last, features, _ = self.encode(images)
            return self.decoder.loss(last, features, masks)  # cross-entropy of Eq. (6)'s softmax
        return F.cross_entropy(self(images), masks)

    # ------------------------------------------------------------------ DUpsampling's extras
    @property
    def temperature(self):
        """The softmax temperature T (float) of the DUpsampling decoder; None for the others."""
        return self.decoder.temperature if isinstance(self.decoder, DUpsamplingDecoder) else None

    @property
    def needs_projection(self):
        """True while a DUpsampling model still waits for set_projection(W, mean)."""
        return (isinstance(self.decoder, DUpsamplingDecoder)
                and not self.decoder.dupsample.has_projection)

    def set_projection(self, W, mean):
        """Give DUpsampling its W (r*r*C, C~) and mean (r*r*C,), e.g. from tinyseg.pca."""
        if not isinstance(self.decoder, DUpsamplingDecoder):
            raise ValueError(f"set_projection: the {self.config['decoder']} decoder has no W")
        self.decoder.dupsample.set_projection(W, mean)

    def param_groups(self, weight_decay):
        """SGD parameter groups: weights with `weight_decay`, then log T (and a trainable W,
        mean) with none. See the module docstring for what decays."""
        no_decay = (self.decoder.no_decay_parameters()
                    if isinstance(self.decoder, DUpsamplingDecoder) else [])
        skip = {id(p) for p in no_decay}
        decay = [p for p in self.parameters() if id(p) not in skip]
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups


def parse_fuse(values):
    """The --fuse option of train.py and tinyseg.flops, one syntax for both: names separated by
    commas and/or spaces ("conv1_3,b3u6c3", "conv1_3 b3u6c3"); "" or the bare flag: none;
    None (flag absent): the backbone's default (DEFAULT_FUSE)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [name for value in values for name in value.split(",") if name.strip()]


def build_model(backbone="resnet50", decoder="dupsampling", num_classes=21, output_stride=16,
                fuse=None, dim=64, projection=None, loss="cross_entropy", temperature="learned",
                trainable_projection=False, head_channels=None, low_level_channels=None,
                separable=False, aspp_rates=None, pretrained=None, align_corners=False,
                **backbone_kwargs):
    """A SegmentationModel by name.

    backbone:           "resnet50", "resnet101", "xception65", "tiny_resnet", "tiny_xception".
    decoder:            "dupsampling" (Fig. 2), "deeplabv3plus" (Fig. 1) or "bilinear" (Table 1).
    num_classes:        from the dataset (21 for VOC, 60 for Context, 19 for Cityscapes).
    output_stride:      8, 16 or 32; DUpsampling's ratio r is the same number.
    fuse:               names of the backbone features to fuse (e.g. ("conv1_3", "b3u6c3"));
                        None: DEFAULT_FUSE for dupsampling and deeplabv3plus, () for bilinear.
    dim:                C~, the channels DUpsampling decodes from (64 ResNet, 128 Xception).
    projection:         (W, mean) for DUpsampling, or None: then call set_projection later.
    loss:               "cross_entropy" or "regression" (Eq. 4, dupsampling only).
    temperature:        "learned" (Eq. 6, T initialised to 1) or "fixed" (T = 1).
    trainable_projection: W and mean as Parameters instead of fixed buffers.
    head_channels, low_level_channels: widths of ASPP and decoder convs (256) and of the
                        low-level projection (48); smaller defaults for the tiny backbones.
    separable:          depthwise-separable 3x3 convs in ASPP and the decoder (DeepLabv3+ style).
    aspp_rates:         ASPP's three atrous rates; None: (6, 12, 18) scaled to the output stride.
                        Small images (tests, quick runs) want small rates: a rate beyond the
                        feature map only adds padding.
    pretrained:         a file of backbone weights (.npz, .pth, .safetensors: tinyseg.weights;
                        .tflite: tinyseg.tflite), or None.
    align_corners:      TensorFlow DeepLab's geometry (bilinear decoder only): images padded to
                        r k + 1 pixels and upsampled with align_corners=True, as its weights
                        were trained (tinyseg.tflite imports such a model). Default: PyTorch's,
                        padding to r k and align_corners=False.
    backbone_kwargs:    passed to the backbone's constructor (e.g. stem="standard").
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if temperature not in TEMPERATURES:
        raise ValueError(f"temperature must be 'learned' or 'fixed', got {temperature!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (from the dataset), got {num_classes!r}")
    net = build_backbone(backbone, output_stride=output_stride, **backbone_kwargs)
    if pretrained is not None:
        from ..weights import load_pretrained  # not at the top: tinyseg.weights imports models
        load_pretrained(net, pretrained)
    if fuse is None:
        fuse = () if decoder == "bilinear" else DEFAULT_FUSE.get(backbone, ())
    fuse = (fuse,) if isinstance(fuse, str) else tuple(fuse)
    info = net.feature_info()
    unknown = [name for name in fuse if name not in info]
    if unknown:
        raise ValueError(f"cannot fuse {unknown}: {backbone} has the features " + ", ".join(info))
    if decoder == "bilinear" and fuse:
        raise ValueError(f"the bilinear decoder fuses no features, got fuse={fuse}; pass fuse=()")
    if align_corners and decoder != "bilinear":
        raise ValueError(f"align_corners=True is for the bilinear decoder, not {decoder!r}")
    default_head, default_low = HEAD_WIDTHS.get(backbone, DEFAULT_HEAD_WIDTHS)
    head_channels = head_channels or default_head
    low_level_channels = low_level_channels or default_low

    encoder = ASPP(net.out_channels, output_stride, head_channels, aspp_rates, separable)
    low_level = {name: info[name][0] for name in fuse}
    if decoder == "bilinear":
        head = BilinearHead(head_channels, num_classes, align_corners)
    elif decoder == "deeplabv3plus":
        head = DeepLabV3PlusDecoder(head_channels, low_level, num_classes, head_channels,
                                    low_level_channels, separable)
    else:
        head = DUpsamplingDecoder(head_channels, low_level, num_classes, output_stride, dim,
                                  head_channels, low_level_channels, separable, temperature,
                                  trainable_projection)
    config = dict(backbone=backbone, decoder=decoder, num_classes=num_classes,
                  output_stride=output_stride, fuse=list(fuse), dim=dim, loss=loss,
                  temperature=temperature, trainable_projection=trainable_projection,
                  head_channels=head_channels, low_level_channels=low_level_channels,
                  separable=separable, aspp_rates=list(encoder.rates))
    if align_corners:  # only when set, so that configs of PyTorch-geometry models stay as they were
        config["align_corners"] = True
    config.update({k: list(v) if isinstance(v, tuple) else v for k, v in backbone_kwargs.items()})
    model = SegmentationModel(net, encoder, head, num_classes, loss, config)
    if projection is not None:
        model.set_projection(*projection)
    return model
