"""ASPP and the three decoders: gradients (float64, every input and parameter), values against
torch, DUpsampling's fixed W and mean, the learned temperature, and the compressed labels."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor, no_grad, optim
from tinyseg.backend import device_name, to_numpy
from tinyseg.gradcheck import gradcheck
from tinyseg.models import (ASPP, BilinearHead, DeepLabV3PlusDecoder, DUpsamplingDecoder,
                            atrous_rates, compress_labels)


# ---------------------------------------------------------------- helpers
def to_float64(module, xp):
    """Every parameter and buffer of `module` as float64 on xp's device (for gradcheck)."""
    module.to(device_name(xp))
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for m in module.modules():
        for name, buffer in list(m._buffers.items()):
            setattr(m, name, buffer.astype(np.float64))
    return module


def check_module_gradients(module, call, inputs):
    """gradcheck of call(*inputs) w.r.t. every input array AND every parameter of module.

    Each gradcheck evaluation swaps the module's Parameters for gradcheck's own tensors, so
    that finite differences perturb the weights too; the Parameters are put back after.
    """
    named = list(module.named_parameters())
    owners = []
    for name, _ in named:
        *path, attr = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        owners.append((owner, attr))

    def fn(*tensors):
        for (owner, attr), tensor in zip(owners, tensors[len(inputs):]):
            object.__setattr__(owner, attr, tensor)
        return call(*tensors[:len(inputs)])

    try:
        gradcheck(fn, list(inputs) + [p.data for _, p in named])
    finally:
        for (owner, attr), (_, p) in zip(owners, named):
            object.__setattr__(owner, attr, p)


def random_projection(rng, ratio, num_classes, dim):
    """An orthonormal W (r*r*C, C~) and a mean in [0, 1), like the PCA's."""
    W, _ = np.linalg.qr(rng.standard_normal((ratio * ratio * num_classes, dim)))
    return W.astype(np.float32), rng.uniform(0, 1, ratio * ratio * num_classes).astype(np.float32)


# ---------------------------------------------------------------- ASPP
def test_atrous_rates_follow_the_output_stride():
    assert atrous_rates(16) == (6, 12, 18)
    assert atrous_rates(8) == (12, 24, 36)
    assert atrous_rates(32) == (3, 6, 9)
    with pytest.raises(ValueError, match="8, 16 or 32"):
        atrous_rates(4)
    assert [m.conv.dilation for m in ASPP(4, output_stride=8, channels=2).atrous] == \
        [(12, 12), (24, 24), (36, 36)]


def test_aspp_shape_and_wrong_channels(xp):
    aspp = ASPP(5, output_stride=16, channels=4).to(device_name(xp))
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 5, 3, 7)), np.float32)
    assert aspp(x).shape == (2, 4, 3, 7)
    with pytest.raises(ValueError, match=r"\(N, 5, H, W\)"):
        aspp(x[:, :4])


@pytest.mark.parametrize("separable", [False, True])
def test_aspp_gradcheck(xp, rng, separable):
    aspp = to_float64(ASPP(3, channels=2, rates=(1, 2, 3), separable=separable), xp)
    x = xp.asarray(rng.standard_normal((2, 3, 5, 7)))
    check_module_gradients(aspp, aspp, [x])


def torch_conv_bn_relu(torch, block, x):
    """torch's conv -> batch norm (batch statistics) -> ReLU with block's weights."""
    conv, bn = block.conv, block.bn
    weight = torch.tensor(to_numpy(conv.weight.data))
    y = torch.nn.functional.conv2d(x, weight, None, 1, conv.padding, conv.dilation)
    y = torch.nn.functional.batch_norm(y, None, None, torch.tensor(to_numpy(bn.weight.data)),
                                       torch.tensor(to_numpy(bn.bias.data)), training=True)
    return torch.relu(y)


def torch_aspp(torch, aspp, x):
    branches = [torch_conv_bn_relu(torch, aspp.branch1x1, x)]
    branches += [torch_conv_bn_relu(torch, conv, x) for conv in aspp.atrous]
    pooled = torch_conv_bn_relu(torch, aspp.image_pool, x.mean(dim=(2, 3), keepdim=True))
    branches.append(torch.nn.functional.interpolate(pooled, size=x.shape[2:], mode="bilinear",
                                                    align_corners=False))
    return torch_conv_bn_relu(torch, aspp.project, torch.cat(branches, dim=1))


def test_aspp_matches_torch(xp, rng):
    torch = pytest.importorskip("torch")
    aspp = ASPP(6, output_stride=32, channels=4).to(device_name(xp))
    x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
    expected = torch_aspp(torch, aspp, torch.tensor(x)).numpy()
    np.testing.assert_allclose(to_numpy(aspp(xp.asarray(x)).data), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the decoders' gradients
def test_bilinear_head_gradcheck(xp, rng):
    head = to_float64(BilinearHead(3, num_classes=2), xp)
    last = xp.asarray(rng.standard_normal((2, 3, 3, 4)))
    check_module_gradients(head, lambda x: head(x, {}, (6, 8)), [last])


@pytest.mark.parametrize("separable", [False, True])
def test_deeplabv3plus_gradcheck(xp, rng, separable):
    decoder = to_float64(DeepLabV3PlusDecoder(3, {"low": 2}, num_classes=2, channels=3,
                                              low_level_channels=2, separable=separable), xp)
    last = xp.asarray(rng.standard_normal((2, 3, 2, 3)))
    low = xp.asarray(rng.standard_normal((2, 2, 4, 6)))
    check_module_gradients(decoder, lambda x, f: decoder(x, {"low": f}, (8, 12)), [last, low])


@pytest.mark.parametrize("fuse, trainable", [((), False), (("low",), False), (("low",), True)])
def test_dupsampling_gradcheck_with_temperature(xp, rng, fuse, trainable):
    ratio, classes, dim = 2, 2, 3
    low_level = {name: 2 for name in fuse}
    decoder = DUpsamplingDecoder(3, low_level, classes, ratio, dim=dim, channels=3,
                                 low_level_channels=2, trainable_projection=trainable)
    decoder.dupsample.set_projection(*random_projection(rng, ratio, classes, dim))
    decoder.log_temperature.data[...] = 0.3  # T = 1.35: the temperature's gradient is not trivial
    to_float64(decoder, xp)
    names = [name for name, _ in decoder.named_parameters()]
    assert "log_temperature" in names
    assert ("dupsample.W" in names) == trainable
    last = xp.asarray(rng.standard_normal((2, 3, 3, 4)))
    low = xp.asarray(rng.standard_normal((2, 2, 6, 8)))
    if fuse:
        check_module_gradients(decoder, lambda x, f: decoder(x, {"low": f}, (6, 8)), [last, low])
    else:
        check_module_gradients(decoder, lambda x: decoder(x, {}, (6, 8)), [last])


# ---------------------------------------------------------------- DUpsampling against torch
def test_dupsampling_decoder_matches_torch(rng):
    """Fig. 2 rebuilt in torch: downsample, project to 48, concat, two 3x3 convs, compress,
    W f + mean laid out by pixel_shuffle (W's rows permuted to its class-major order),
    log softmax(z / T)."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    ratio, classes, dim = 4, 3, 5
    decoder = DUpsamplingDecoder(6, {"low": 4}, classes, ratio, dim=dim, channels=6,
                                 low_level_channels=3)
    W, mean = random_projection(rng, ratio, classes, dim)
    decoder.dupsample.set_projection(W, mean)
    decoder.log_temperature.data[...] = -0.5
    last = rng.standard_normal((2, 6, 3, 5)).astype(np.float32)
    low = rng.standard_normal((2, 4, 12, 20)).astype(np.float32)
    ours = decoder(last, {"low": low}, (12, 20)).data

    fusion = decoder.fusion
    small = tf.interpolate(torch.tensor(low), size=(3, 5), mode="bilinear", align_corners=False)
    x = torch.cat([torch_conv_bn_relu(torch, fusion.reduce[0], small), torch.tensor(last)], dim=1)
    for block in fusion.convs:
        x = torch_conv_bn_relu(torch, block, x)
    code = tf.conv2d(x, torch.tensor(decoder.compress.weight.data),
                     torch.tensor(decoder.compress.bias.data))
    class_major = np.arange(ratio * ratio * classes).reshape(ratio * ratio, classes).T.ravel()
    scores = tf.conv2d(code, torch.tensor(W[class_major])[:, :, None, None],
                       torch.tensor(mean[class_major]))
    expected = tf.log_softmax(tf.pixel_shuffle(scores, ratio) / np.exp(-0.5), dim=1)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- W, mean and T
def test_projection_is_a_buffer_and_must_be_set(rng):
    decoder = DUpsamplingDecoder(4, {}, num_classes=3, ratio=2, dim=5)
    params = dict(decoder.named_parameters())
    assert "dupsample.W" not in params and "dupsample.mean" not in params
    assert decoder.state_dict()["dupsample.W"].shape == (12, 5)
    assert decoder.state_dict()["dupsample.mean"].shape == (12,)
    last = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    with pytest.raises(RuntimeError, match="set_projection"):
        decoder(last, {}, (6, 6))
    with pytest.raises(ValueError, match=r"W of shape \(12, 5\)"):
        decoder.dupsample.set_projection(np.ones((12, 4)), np.ones(12))
    W, mean = random_projection(rng, 2, 3, 5)
    decoder.dupsample.set_projection(W, mean)
    np.testing.assert_array_equal(decoder.state_dict()["dupsample.W"], W)
    assert decoder(last, {}, (6, 6)).shape == (2, 3, 6, 6)
    with pytest.raises(ValueError, match="size"):
        decoder(last, {}, (8, 8))


def test_temperature_stays_positive_and_fixed_is_one(rng):
    decoder = DUpsamplingDecoder(4, {}, num_classes=3, ratio=2, dim=5)
    assert decoder.temperature == 1.0
    decoder.log_temperature.grad = np.array([50.0], np.float32)  # a huge push towards T -> 0
    optim.SGD([decoder.log_temperature], lr=1.0).step()
    assert 0 < decoder.temperature < 1e-20
    fixed = DUpsamplingDecoder(4, {}, num_classes=3, ratio=2, dim=5, temperature="fixed")
    assert fixed.temperature == 1.0 and fixed.no_decay_parameters() == []
    assert "log_temperature" not in dict(fixed.named_parameters())
    with pytest.raises(ValueError, match="learned"):
        DUpsamplingDecoder(4, {}, 3, 2, temperature="hot")


def test_decoders_check_their_inputs(rng):
    decoder = DeepLabV3PlusDecoder(4, {"low": 2}, num_classes=3, channels=4, low_level_channels=2)
    last = rng.standard_normal((1, 4, 2, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="missing"):
        decoder(last, {}, (8, 8))
    with pytest.raises(ValueError, match=r"\(N, 4, h, w\)"):
        decoder(last[:, :3], {"low": np.zeros((1, 2, 4, 4), np.float32)}, (8, 8))
    with pytest.raises(ValueError, match="at least one"):
        DeepLabV3PlusDecoder(4, {}, num_classes=3)


# ---------------------------------------------------------------- compressed labels (Eq. 4)
def compressed_by_hand(mask, W, mean, ratio, num_classes):
    """Y~ = W^T (v - mean) per block, v from space_to_depth of the one-hot (void -> zeros)."""
    h, w = -(-mask.shape[0] // ratio), -(-mask.shape[1] // ratio)
    padded = np.full((h * ratio, w * ratio), 255)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    one_hot = (padded[None] == np.arange(num_classes)[:, None, None]).astype(np.float64)
    v = F.space_to_depth(one_hot[None], ratio).data[0]           # (r*r*C, h, w)
    return np.einsum("nk,nhw->khw", W, v - mean[:, None, None])  # (C~, h, w)


def test_compress_labels_against_space_to_depth(xp, rng):
    ratio, classes, dim = 4, 3, 5
    W, mean = random_projection(rng, ratio, classes, dim)
    masks = rng.integers(0, classes, (2, 7, 10))
    masks[0, 0, 0] = 255                 # one void pixel in a labelled block
    masks[1, 4:, 8:] = 255               # block (1, 2) is entirely void (with the padding)
    target, valid = compress_labels(masks, xp.asarray(W), xp.asarray(mean), ratio, void="zero")
    assert target.shape == (2, dim, 2, 3) and valid.shape == (2, 1, 2, 3)
    expected_valid = np.ones((2, 1, 2, 3))
    expected_valid[1, 0, 1, 2] = 0
    np.testing.assert_array_equal(to_numpy(valid), expected_valid)
    for n in range(2):
        expected = compressed_by_hand(masks[n], W, mean, ratio, classes) * expected_valid[n]
        np.testing.assert_allclose(to_numpy(target[n]), expected, rtol=1e-5, atol=1e-5)

    # "impute": a void pixel takes its block's most frequent class (padding too, so the
    # mask here is a multiple of r); "skip": a block with any void is left out
    whole = rng.integers(0, classes, (1, 8, 12))
    imputed = whole[0].copy()
    whole[0, 0, 0] = 255
    imputed[0, 0] = np.bincount(imputed[:4, :4].ravel()[1:], minlength=classes).argmax()
    target, _ = compress_labels(whole, W, mean, ratio, void="impute")
    np.testing.assert_allclose(target[0], compressed_by_hand(imputed, W, mean, ratio, classes),
                               rtol=1e-5, atol=1e-5)
    _, valid = compress_labels(masks, W, mean, ratio, void="skip")  # padding is void as well
    np.testing.assert_array_equal(valid[0, 0], [[0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="void"):
        compress_labels(masks, W, mean, ratio, void="ignore")


def test_regression_target_is_reachable(rng):
    """With a full-rank W, decompressing Y~ (DUpsample of the target) gives the one-hot back."""
    ratio, classes = 2, 3
    W, mean = random_projection(rng, ratio, classes, ratio * ratio * classes)
    masks = rng.integers(0, classes, (1, 4, 6))
    target, _ = compress_labels(masks, W, mean, ratio)
    with no_grad():
        restored = F.dupsample(Tensor(target), W, mean, ratio).data
    np.testing.assert_allclose(restored, (masks[:, None] == np.arange(classes)[:, None, None]),
                               atol=1e-5)
