"""The whole network: shapes for every tiny backbone x output stride x decoder, padding and
cropping, the config round trip, parameter groups, the losses, and overfitting a few images."""
import json

import numpy as np
import pytest

from tinyseg import nn, no_grad, optim
from tinyseg.nn import StateDictError
from tinyseg.backend import device_name, to_numpy
from tinyseg.models import SegmentationModel, build_backbone, build_model, compress_labels
from tinyseg.pca import fit_projection

DECODERS = ("dupsampling", "deeplabv3plus", "bilinear")


def random_projection(rng, ratio, num_classes, dim):
    W, _ = np.linalg.qr(rng.standard_normal((ratio * ratio * num_classes, dim)))
    return W.astype(np.float32), rng.uniform(0, 1, ratio * ratio * num_classes).astype(np.float32)


def tiny_model(rng, decoder="dupsampling", output_stride=16, num_classes=5, dim=8, **kwargs):
    """A tiny_resnet network with a random W when it decodes by DUpsampling."""
    projection = (random_projection(rng, output_stride, num_classes, dim)
                  if decoder == "dupsampling" else None)
    return build_model("tiny_resnet", decoder, num_classes=num_classes,
                       output_stride=output_stride, dim=dim, projection=projection, **kwargs)


def images_and_masks(rng, xp, n=2, size=(50, 70), num_classes=5):
    images = xp.asarray(rng.standard_normal((n, 3) + size), np.float32)
    masks = rng.integers(0, num_classes, (n,) + size)
    masks[:, :3] = 255  # a void band
    return images, masks


# ---------------------------------------------------------------- shapes and padding
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("backbone", ["tiny_resnet", "tiny_xception"])
def test_forward_gives_the_input_size(xp, rng, backbone, output_stride, decoder):
    projection = (random_projection(rng, output_stride, 5, 8) if decoder == "dupsampling"
                  else None)
    model = build_model(backbone, decoder, num_classes=5, output_stride=output_stride, dim=8,
                        projection=projection).to(device_name(xp)).eval()
    x = xp.asarray(rng.standard_normal((1, 3, 50, 70)), np.float32)
    with no_grad():
        logits = model(x)
    assert logits.shape == (1, 5, 50, 70)
    assert bool(xp.isfinite(logits.data).all())


@pytest.mark.parametrize("decoder", DECODERS)
def test_odd_sizes_are_padded_with_zeros_and_cropped(xp, rng, decoder):
    model = tiny_model(rng, decoder).to(device_name(xp)).eval()
    x = xp.asarray(rng.standard_normal((1, 3, 50, 70)), np.float32)
    padded = xp.zeros((1, 3, 64, 80), np.float32)  # 50 x 70 rounded up to multiples of 16
    padded[:, :, :50, :70] = x
    with no_grad():
        ours, reference = model(x).data, model(padded).data[:, :, :50, :70]
    np.testing.assert_allclose(to_numpy(ours), to_numpy(reference), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- config and state
def test_config_round_trips_through_json(rng):
    model = tiny_model(rng, fuse=("conv1", "b3u1c3"), stem="standard", multi_grid=(2,))
    config = json.loads(json.dumps(model.config))
    assert config["fuse"] == ["conv1", "b3u1c3"] and config["multi_grid"] == [2]
    assert config["stem"] == "standard"
    assert config["num_classes"] == 5 and config["decoder"] == "dupsampling"
    rebuilt = build_model(**config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((1, 3, 40, 24)).astype(np.float32)
    with no_grad():
        np.testing.assert_array_equal(rebuilt.eval()(x).data, model.eval()(x).data)
    assert rebuilt.config == model.config


def test_defaults_and_properties(rng):
    model = build_model("tiny_xception", "dupsampling", num_classes=4, output_stride=32, dim=6)
    assert model.config["fuse"] == ["efb2u1c2"] and model.config["aspp_rates"] == [3, 6, 9]
    assert isinstance(model, SegmentationModel) and model.num_classes == 4
    assert model.needs_projection and model.temperature == 1.0
    model.set_projection(*random_projection(rng, 32, 4, 6))
    assert not model.needs_projection
    bilinear = build_model("tiny_resnet", "bilinear", num_classes=4)
    assert bilinear.temperature is None and bilinear.config["fuse"] == []
    assert not bilinear.needs_projection


def test_bad_arguments_are_refused(rng):
    with pytest.raises(ValueError, match="unknown decoder"):
        build_model("tiny_resnet", "fcn")
    with pytest.raises(ValueError, match="cannot fuse"):
        build_model("tiny_resnet", "dupsampling", fuse=("b1u9c3",))
    with pytest.raises(ValueError, match="fuses no features"):
        build_model("tiny_resnet", "bilinear", fuse=("b1u1c3",))
    with pytest.raises(ValueError, match="at least one"):
        build_model("tiny_resnet", "deeplabv3plus", fuse=())
    with pytest.raises(ValueError, match="needs the dupsampling"):
        build_model("tiny_resnet", "bilinear", loss="regression")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("tiny_resnet", "bilinear", num_classes=1)
    with pytest.raises(ValueError, match="has no W"):
        build_model("tiny_resnet", "bilinear").set_projection(np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="W of shape"):
        build_model("tiny_resnet", num_classes=3, dim=4, projection=(np.ones((7, 4)), np.ones(7)))


def test_pretrained_backbone_is_loaded(tmp_path):
    nn.init.manual_seed(1)
    source = build_backbone("tiny_resnet")
    path = tmp_path / "backbone.npz"
    nn.save(source.state_dict(), path)
    model = build_model("tiny_resnet", "bilinear", pretrained=str(path))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(model.backbone.state_dict()[key], value)
    assert "pretrained" not in model.config
    nn.save({"conv1_1.weight": source.conv1_1.weight.data}, path)
    with pytest.raises(StateDictError, match="missing"):
        build_model("tiny_resnet", "bilinear", pretrained=str(path))


# ---------------------------------------------------------------- weight decay and W
def test_param_groups_exclude_the_temperature_and_trainable_projection(rng):
    model = tiny_model(rng)
    decay, no_decay = model.param_groups(1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert no_decay["params"] == [model.decoder.log_temperature]
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    bn_gamma = model.backbone.bn1_1.weight
    assert any(p is bn_gamma for p in decay["params"])  # batch norm's gamma decays (DeepLab)

    trainable = tiny_model(rng, trainable_projection=True)
    no_decay = trainable.param_groups(1e-4)[1]["params"]
    assert [id(p) for p in no_decay] == [id(trainable.decoder.log_temperature),
                                         id(trainable.decoder.dupsample.W),
                                         id(trainable.decoder.dupsample.mean)]
    assert len(tiny_model(rng, "bilinear").param_groups(1e-4)) == 1


def test_sgd_step_moves_weights_but_not_W_and_decays_no_temperature(xp, rng):
    model = tiny_model(rng).to(device_name(xp))
    W, mean = (to_numpy(a).copy() for a in model.decoder.dupsample.projection)
    assert "decoder.dupsample.W" in model.state_dict()
    assert "decoder.dupsample.W" not in dict(model.named_parameters())
    conv = model.decoder.compress.weight
    before = to_numpy(conv.data).copy()
    sgd = optim.SGD(model.param_groups(weight_decay=0.5), lr=0.1, momentum=0.9)
    images, masks = images_and_masks(rng, xp)
    model.loss(images, masks).backward()
    model.decoder.log_temperature.grad[...] = 0  # only weight decay could move T now
    sgd.step()
    np.testing.assert_array_equal(to_numpy(model.decoder.dupsample.W), W)
    np.testing.assert_array_equal(to_numpy(model.decoder.dupsample.mean), mean)
    assert not np.allclose(to_numpy(conv.data), before)
    assert model.temperature == 1.0


# ---------------------------------------------------------------- losses
def test_cross_entropy_losses_match_torch(xp, rng):
    torch = pytest.importorskip("torch")
    images, masks = images_and_masks(rng, xp)
    for decoder in ("bilinear", "dupsampling"):
        model = tiny_model(rng, decoder).to(device_name(xp)).eval()
        with no_grad():
            logits = to_numpy(model(images).data)
            loss = model.loss(images, masks).item()
        expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(masks),
                                                     ignore_index=255)
        assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_dupsampling_logits_are_tempered_log_probabilities(rng):
    model = tiny_model(rng).eval()
    model.decoder.log_temperature.data[...] = np.log(0.5)
    x = rng.standard_normal((1, 3, 32, 48)).astype(np.float32)
    with no_grad():
        log_p = model(x).data
        last, features, _ = model.encode(x)
        scores = model.decoder.dupsample(model.decoder.compressed(last, features)).data
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1, rtol=1e-5)
    z = scores / 0.5
    expected = z - z.max(axis=1, keepdims=True)
    expected -= np.log(np.exp(expected).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-5)


def test_regression_loss_is_eq4(xp, rng):
    model = tiny_model(rng, loss="regression").to(device_name(xp)).eval()
    images, masks = images_and_masks(rng, xp)
    masks[0] = 255  # an entirely void image: no label to fill its void from, left out of the loss
    loss = model.loss(images, masks)
    with no_grad():
        last, features, _ = model.encode(images)
        code = to_numpy(model.decoder.compressed(last, features).data)
    target, valid = compress_labels(masks, *(to_numpy(a) for a in model.decoder.dupsample.projection),
                                    ratio=16)
    assert valid[0].sum() == 0 and valid[1].all() and code.shape == target.shape == (2, 8, 4, 5)
    expected = (((code - target) * valid) ** 2).sum() / (valid.sum() * 8)
    assert loss.item() == pytest.approx(float(expected), rel=1e-4)
    loss.backward()
    assert model.decoder.compress.weight.grad is not None
    assert model.backbone.conv1_1.weight.grad is not None
    assert model.decoder.log_temperature.grad is None  # Eq. (4) does not involve T


# ---------------------------------------------------------------- learning end to end
def generated_scenes(rng, n=4, size=32):
    """n images with a rectangle (class 1) and a disc (class 2) on background (class 0)."""
    yy, xx = np.mgrid[:size, :size]
    colours = np.array([[-1.0, -1.0, -1.0], [1.5, -0.5, 0.0], [-0.5, 0.5, 1.5]])
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.int64)
        top, left = rng.integers(2, 14, 2)
        height, width = rng.integers(8, 16, 2)
        mask[top:top + height, left:left + width] = 1
        cy, cx, radius = *rng.integers(8, 24, 2), rng.integers(4, 8)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = 2
        images.append(colours[mask].transpose(2, 0, 1) + 0.3 * rng.standard_normal((3, size, size)))
        masks.append(mask)
    return np.array(images, np.float32), np.array(masks)


def test_dupsampling_overfits_a_few_images():
    """W from the PCA of the 4 masks; 200 SGD steps bring the loss down more than 10x."""
    rng = np.random.default_rng(0)
    images, masks = generated_scenes(rng)
    W, mean, _ = fit_projection(list(masks), num_classes=3, ratio=8, dim=16)
    nn.init.manual_seed(0)
    model = build_model("tiny_resnet", "dupsampling", num_classes=3, output_stride=8, dim=16,
                        projection=(W, mean), head_channels=16, aspp_rates=(1, 2, 3))
    sgd = optim.SGD(model.param_groups(1e-4), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(200):
        loss = model.loss(images, masks)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 10, (losses[0], losses[-10:])
    assert model.temperature < 1  # the learned temperature sharpens the softmax
    with no_grad():
        accuracy = (model.eval()(images).data.argmax(axis=1) == masks).mean()
    assert accuracy > 0.97
