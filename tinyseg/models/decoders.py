"""Decoders: from the encoder's coarse output back to a class score for every pixel.

Every decoder is called the same way,

    decoder(last, features, size) -> (N, C, H, W) scores at the image size,

with last: the ASPP output (N, 256, H/r, W/r); features: {tap name: (N, C_i, H_i, W_i)}, the
backbone features named in `decoder.taps`; size: (H, W), a multiple of the output stride r
(SegmentationModel pads the image to one). Three decoders, the paper's baselines and its own:

* BilinearHead (Table 1 "bilinear", Eq. 1): a 1x1 classifier at 1/r, bilinear upsampling x r.
* DeepLabV3PlusDecoder (Fig. 1, Eq. 7): the low-level feature at 1/4 is projected to 48
  channels, the encoder output is bilinearly UPsampled to 1/4, both are concatenated and mixed
  by two 3x3 convs of 256; a 1x1 classifier, then bilinear upsampling x 4.
* DUpsamplingDecoder (Fig. 2, Eqs. 5, 6, 8): every low-level feature is bilinearly DOWNsampled
  to 1/r and projected to 48 channels, concatenated with the encoder output and mixed by the
  same two 3x3 convs of 256 (the convs now run at 1/r, not 1/4); a 1x1 conv compresses to C~
  channels (the map F of Eq. 4), DUpsample (Eq. 5) decodes each C~-vector into an r x r block
  of class scores with the fixed matrix W, and the softmax has a learned temperature (Eq. 6).
  With no low-level feature (Table 1 and Table 2's "N/A" row) the 3x3 convs are left out too:
  the decoder is just the 1x1 compression and DUpsample, as in the paper's Sec. 3.1.

The two fusing decoders are built from the same pieces with the same widths, so Tables 2 and 3
compare only WHERE the fusion happens. Projecting after downsampling (not before) is what the
paper's FLOPs imply (docs/flops.md). separable=True makes the 3x3 convs depthwise + pointwise,
as DeepLabv3+ does and the paper's FLOPs counts assume.

Initialisation: convs followed by batch norm keep tinyseg's He initialisation (batch norm makes
their scale irrelevant); the last linear layers (the classifiers, the compression to C~) are
drawn from a zero-mean Gaussian with std 0.01 and get a zero bias, so training starts from
small scores. (Sec. 4 initialises new layers from a zero-mean Gaussian "of variance 0.01"; we
take the usual std 0.01.)
"""
import numpy as np

from .. import functional as F
from .. import nn
from ..backend import device_name, get_array_module, to_device, to_numpy
from ..blocks import IGNORE_INDEX, compress, encode_blocks, onehot_blocks
from .aspp import ConvBNReLU

TEMPERATURES = ("learned", "fixed")


def linear_head(in_channels, out_channels):
    """A 1x1 conv whose weights are drawn with std 0.01 and whose bias is zero (Sec. 4)."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    conv.weight.data = nn.init.normal(conv.weight.shape, std=0.01)
    conv.bias.data = np.zeros(out_channels, np.float32)
    return conv


def _resize(x, size, align_corners=False):
    """Bilinear resize to `size` (H, W); the tensor itself when it already has that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _check_inputs(decoder, last, features):
    if last.ndim != 4 or last.shape[1] != decoder.in_channels:
        raise ValueError(f"{type(decoder).__name__}: the encoder output must be (N, "
                         f"{decoder.in_channels}, h, w), got shape {last.shape}")
    missing = [name for name in decoder.taps if name not in features]
    if missing:
        raise ValueError(f"{type(decoder).__name__}: features {missing} are missing; it fuses "
                         f"{list(decoder.taps)}")


class LowLevelFusion(nn.Module):
    """F = f(concat(F_1, ..., F_k, F_last)) at a given resolution: Eq. 7 or Eq. 8's f and concat.

    Each low-level feature F_i is resized to the target resolution and projected by a 1x1 conv
    + BN + ReLU to `low_level_channels` (48); they are concatenated with the encoder output
    (resized too) and mixed by two 3x3 conv + BN + ReLU layers of `channels` (256).
    low_level: {tap name: channels}. (N, in_channels, h, w) + taps -> (N, channels, H_t, W_t).
    project_first: project each feature at its own resolution, then resize (DeepLabv3+: cheaper
    when upsampling); otherwise resize first, then project (DUpsampling: cheaper when
    downsampling).
    """

    def __init__(self, in_channels, low_level, channels=256, low_level_channels=48,
                 separable=False, project_first=True):
        super().__init__()
        self.taps = tuple(low_level)
        self.project_first = project_first
        self.reduce = nn.ModuleList(ConvBNReLU(c, low_level_channels, 1) for c in low_level.values())
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
        return self.convs(F.cat(parts, dim=1))  # (N, k*48 + 256, H_t, W_t) -> (N, 256, H_t, W_t)


class BilinearHead(nn.Module):
    """Eq. (1): (N, in_channels, h, w) -> 1x1 classifier -> bilinear x r -> (N, C, H, W).

    align_corners=True: TensorFlow DeepLab's upsampling (its images are r k + 1 pixels, the
    corners of the coarse and fine grids coincide), for weights trained that way."""

    def __init__(self, in_channels, num_classes, align_corners=False):
        super().__init__()
        self.in_channels, self.num_classes, self.taps = in_channels, num_classes, ()
        self.align_corners = align_corners
        self.classifier = linear_head(in_channels, num_classes)

    def forward(self, last, features, size):
        _check_inputs(self, last, features)
        return _resize(self.classifier(last), size, self.align_corners)


class DeepLabV3PlusDecoder(nn.Module):
    """Fig. 1 / Eq. (7): fuse at the finest tap's resolution (1/4 for b1u2c3), classify, upsample.

    low_level: {tap name: channels}, at least one; with several, all are brought to the finest
    one's resolution. (N, in_channels, H/r, W/r) + taps -> (N, C, H, W).
    """

    def __init__(self, in_channels, low_level, num_classes, channels=256, low_level_channels=48,
                 separable=False):
        super().__init__()
        if not low_level:
            raise ValueError("DeepLabV3PlusDecoder needs at least one low-level feature to fuse "
                             "(e.g. fuse=('b1u2c3',)); use the bilinear decoder for none")
        self.in_channels, self.num_classes, self.taps = in_channels, num_classes, tuple(low_level)
        self.fusion = LowLevelFusion(in_channels, low_level, channels, low_level_channels,
                                     separable, project_first=True)
        self.classifier = linear_head(channels, num_classes)

    def forward(self, last, features, size):
        _check_inputs(self, last, features)
        finest = max((features[name].shape[2:] for name in self.taps), key=lambda s: s[0] * s[1])
        fused = self.fusion(last, features, finest)              # (N, 256, H/4, W/4)
        return _resize(self.classifier(fused), size)            # (N, C, H/4, W/4) -> (N, C, H, W)


class DUpsample(nn.Module):
    """Eq. (5): F (N, C~, h, w) -> (N, C, r h, r w), each C~-vector f decoded to W f + mean.

    W: (r*r*C, C~), rows ordered (row offset i, column offset j, class c), class fastest, and
    mean: (r*r*C,), both from the PCA of the training labels (tinyseg.pca). They are buffers:
    saved in the state dict, moved by .to(), never trained nor decayed. trainable=True makes
    them Parameters instead. They start at zero; set_projection() fills them.
    """

    def __init__(self, dim, num_classes, ratio, trainable=False):
        super().__init__()
        self.dim, self.num_classes, self.ratio, self.trainable = dim, num_classes, ratio, trainable
        size = ratio * ratio * num_classes
        W, mean = np.zeros((size, dim), np.float32), np.zeros(size, np.float32)
        if trainable:
            self.W, self.mean = nn.Parameter(W), nn.Parameter(mean)
        else:
            self.register_buffer("W", W)
            self.register_buffer("mean", mean)

    @property
    def projection(self):
        """(W, mean) as raw arrays, whether they are buffers or Parameters."""
        if self.trainable:
            return self.W.data, self.mean.data
        return self.W, self.mean

    @property
    def has_projection(self):
        """False until set_projection (or a state dict) gave W a nonzero value."""
        W = self.projection[0]
        return bool(get_array_module(W).any(W))

    def set_projection(self, W, mean):
        """Copy W (r*r*C, C~) and mean (r*r*C,) in, on this module's device and dtype."""
        expected = self.projection[0]
        if np.shape(W) != expected.shape or np.shape(mean) != (expected.shape[0],):
            raise ValueError(
                f"DUpsample needs W of shape {expected.shape} and mean of shape "
                f"({expected.shape[0]},) for ratio {self.ratio}, {self.num_classes} classes and "
                f"C~ = {self.dim}, got {np.shape(W)} and {np.shape(mean)}")
        xp = get_array_module(expected)
        W = xp.asarray(to_device(W, device_name(xp)), dtype=expected.dtype).copy()
        mean = xp.asarray(to_device(mean, device_name(xp)), dtype=expected.dtype).copy()
        if self.trainable:
            self.W.data, self.mean.data = W, mean
        else:
            self.W, self.mean = W, mean

    def check_projection(self):
        """A one-line RuntimeError while W is still unset."""
        if not self.has_projection:
            raise RuntimeError("DUpsampling has no W yet: call model.set_projection(W, mean) with "
                               "the PCA of the training labels (python -m tinyseg.pca)")

    def forward(self, x):
        self.check_projection()
        return F.dupsample(x, self.W, self.mean, self.ratio)


class DUpsamplingDecoder(nn.Module):
    """Fig. 2: (N, in_channels, h, w) + taps -> log softmax(DUpsample(F) / T): (N, C, r h, r w).

    low_level: {tap name: channels}, any number (none: no fusion convs); ratio: r, the output
    stride; dim: C~. temperature "learned": T = exp(log_temperature) with log_temperature a
    Parameter starting at 0 (T = 1), so T stays positive whatever SGD does; "fixed": T = 1.
    The output is log-probabilities (also valid logits: their softmax is Eq. 6's softmax).
    """

    def __init__(self, in_channels, low_level, num_classes, ratio, dim=64, channels=256,
                 low_level_channels=48, separable=False, temperature="learned",
                 trainable_projection=False):
        super().__init__()
        if temperature not in TEMPERATURES:
            raise ValueError(f"temperature must be 'learned' or 'fixed', got {temperature!r}")
        self.in_channels, self.num_classes, self.taps = in_channels, num_classes, tuple(low_level)
        self.ratio, self.dim = ratio, dim
        if low_level:
            self.fusion = LowLevelFusion(in_channels, low_level, channels, low_level_channels,
                                         separable, project_first=False)
            in_channels = channels
        else:
            self.fusion = None
        self.compress = linear_head(in_channels, dim)
        self.dupsample = DUpsample(dim, num_classes, ratio, trainable_projection)
        self.log_temperature = (nn.Parameter(np.zeros(1, np.float32))
                                if temperature == "learned" else None)

    @property
    def temperature(self):
        """T as a float (1.0 when fixed)."""
        if self.log_temperature is None:
            return 1.0
        return float(np.exp(to_numpy(self.log_temperature.data)[0]))

    def no_decay_parameters(self):
        """log T, and W and mean when trainable: the parameters SGD must not decay."""
        params = [] if self.log_temperature is None else [self.log_temperature]
        if self.dupsample.trainable:
            params += [self.dupsample.W, self.dupsample.mean]
        return params

    def compressed(self, last, features):
        """F: (N, C~, h, w), the network's estimate of the compressed labels Y~ (Eq. 4)."""
        _check_inputs(self, last, features)
        if self.fusion is not None:
            last = self.fusion(last, features, last.shape[2:])  # Eq. (8), at 1/r
        return self.compress(last)

    def forward(self, last, features, size):
        scores = self.dupsample(self.compressed(last, features))  # (N, C, r h, r w), Eq. (5)
        if tuple(scores.shape[2:]) != tuple(size):
            raise ValueError(f"DUpsampling gives {tuple(scores.shape[2:])} = {self.ratio} x the "
                             f"feature size, but size {tuple(size)} was asked for")
        return F.log_softmax_with_temperature(scores, self._temperature_tensor(), dim=1)  # Eq. (6)

    def _temperature_tensor(self):
        """T of Eq. (6) for the ops: exp(log T) as a Tensor (its gradient reaches log T), or 1."""
        return 1.0 if self.log_temperature is None else F.exp(self.log_temperature)

    def loss(self, last, features, masks):
        """The mean cross-entropy of forward()'s output against masks (N, H, W), cropped to the
        masks (F.dupsample_cross_entropy: one fused op on the GPU with --cuda-kernels). Another
        module put in DUpsample's place (e.g. experiments/autoencoder.py) decodes by itself."""
        self.dupsample.check_projection()
        code, T = self.compressed(last, features), self._temperature_tensor()
        if not isinstance(self.dupsample, DUpsample):
            height, width = masks.shape[-2:]
            log_p = F.log_softmax_with_temperature(self.dupsample(code), T, dim=1)  # Eq. (6)
            return F.nll_loss(log_p[:, :, :height, :width], masks)
        return F.dupsample_cross_entropy(code, self.dupsample.W, self.dupsample.mean, T, masks,
                                         self.ratio)


def compress_labels(masks, W, mean, ratio, void="nearest", ignore_index=IGNORE_INDEX):
    """The compressed labels Y~ of Eq. (4): (N, H, W) labels -> Y~ (N, C~, h, w), valid (N, 1, h, w).

    Each r x r block of a mask is one-hot encoded as v (N = r*r*C, DUpsampling's order) and
    compressed to x = W^T (v - mean), exactly as tinyseg.pca fits W: the same void rule
    (tinyseg.blocks.encode_blocks) and the same encoding. Masks are padded with void to
    multiples of r, h = ceil(H / r); `valid` is 0 for the blocks the fit leaves out (entirely
    void, or with void="skip" any void). The arrays are returned on W's device.
    """
    xp = get_array_module(W)
    W_host, mean_host = to_numpy(W), to_numpy(mean)
    num_classes = W_host.shape[0] // (ratio * ratio)
    targets, valids = [], []
    for mask in to_numpy(masks):
        blocks, (h, w), valid = encode_blocks(mask, ratio, num_classes, void, ignore_index)
        x = compress(onehot_blocks(blocks, num_classes, ignore_index), W_host, mean_host)
        x = x * valid[:, None]                                          # (h*w, C~)
        targets.append(x.T.reshape(-1, h, w))                           # (C~, h, w)
        valids.append(valid.reshape(1, h, w))                           # (1, h, w)
    dtype = W_host.dtype
    return (xp.asarray(to_device(np.stack(targets).astype(dtype), device_name(xp))),
            xp.asarray(to_device(np.stack(valids).astype(dtype), device_name(xp))))
