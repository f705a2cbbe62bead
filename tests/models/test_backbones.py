"""Backbones: output and tap shapes against feature_info(), DeepLab's stride/dilation layout
(hand-written tables), parameter counts of the full networks, gradients of one unit.

Values against PyTorch references of the same architectures are in tests/test_weights.py.
"""
import math

import numpy as np
import pytest

from tinyseg import Tensor, no_grad
from tinyseg.backend import device_name, to_numpy
from tinyseg.gradcheck import gradcheck
from tinyseg.models import (Bottleneck, ResNet, Xception, XceptionModule, build_backbone, resnet50,
                            resnet101, tiny_resnet, tiny_xception, xception65)
from tinyseg.nn import BatchNorm2d

H, W = 64, 48  # non-square, not a multiple of 32

TINY = {
    "resnet_deep": lambda os: tiny_resnet(output_stride=os),
    "resnet_standard": lambda os: tiny_resnet(output_stride=os, stem="standard"),
    "resnet_torchvision_layout": lambda os: tiny_resnet(output_stride=os, layout="torchvision"),
    "xception": lambda os: tiny_xception(output_stride=os),
}


# ---------------------------------------------------------------- shapes and taps
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", list(TINY))
def test_every_tap_has_the_claimed_shape(xp, name, output_stride):
    model = TINY[name](output_stride).to(device_name(xp)).eval()
    x = xp.asarray(np.random.default_rng(0).standard_normal((1, 3, H, W)), dtype=np.float32)
    info = model.feature_info()
    with no_grad():
        last, features = model(x, taps=list(info))
    assert last.shape == (1, model.out_channels, math.ceil(H / output_stride), math.ceil(W / output_stride))
    assert set(features) == set(info)
    for tap, (channels, ratio) in info.items():
        assert features[tap].shape == (1, channels, math.ceil(H / ratio), math.ceil(W / ratio)), tap
    last_tap = list(info)[-1]
    assert info[last_tap] == (model.out_channels, output_stride)
    np.testing.assert_array_equal(to_numpy(features[last_tap].data), to_numpy(last.data))


def test_only_the_requested_taps_are_returned():
    model = tiny_resnet().eval()
    x = np.zeros((1, 3, 33, 31), np.float32)
    with no_grad():
        _, features = model(x, taps=("conv1_3", "b1u1c3"))
        _, single = model(x, taps="b3u1c3")
        _, none = model(x)
    assert set(features) == {"conv1_3", "b1u1c3"}
    assert set(single) == {"b3u1c3"}
    assert none == {}


@pytest.mark.parametrize("model", [tiny_resnet(), tiny_xception()], ids=["resnet", "xception"])
def test_unknown_tap_raises_and_lists_the_valid_names(model):
    with pytest.raises(ValueError, match=r"unknown tap.*b1u9c3.*valid names: conv1_1"):
        model(np.zeros((1, 3, 16, 16), np.float32), taps=["b1u9c3"])


@pytest.fixture(scope="module")
def full_models():
    """The full-size backbones, built once (about a second each)."""
    return {
        "resnet50_standard": resnet50(stem="standard", output_stride=32),
        "resnet50_deep": resnet50(output_stride=16),
        "resnet101_standard": resnet101(stem="standard"),
        "xception65": xception65(output_stride=16),
    }


def test_paper_taps_have_the_paper_ratios(full_models):
    """Tables 2-3 of the paper: conv1_3 /2, b1u2c3 /4, b3u6c3 /16, efb2u1c2 /4, mfb1u16c3 /16."""
    resnet = full_models["resnet50_deep"].feature_info()
    assert resnet["conv1_3"] == (128, 2)
    assert resnet["b1u2c3"] == (256, 4)
    assert resnet["b1u3c3"] == (256, 8)  # the stride sits on block1's LAST unit
    assert resnet["b3u6c3"] == (1024, 16)
    assert resnet["b4u3"] == (2048, 16)
    xception = full_models["xception65"].feature_info()
    assert xception["efb2u1c2"] == (256, 4)
    assert xception["mfb1u16c3"] == (728, 16)
    assert xception["exb2u1c3"] == (2048, 16)
    assert full_models["resnet50_standard"].feature_info()["b3u6c3"] == (1024, 32)


def test_parameter_counts(full_models):
    # torchvision resnet50 / resnet101: 25,557,032 / 44,549,160 parameters, minus the
    # 2048 x 1000 + 1000 = 2,049,000 of the fc layer; timm xception65: 39.92M with its fc.
    assert full_models["resnet50_standard"].num_parameters() == 25_557_032 - 2_049_000
    assert full_models["resnet101_standard"].num_parameters() == 44_549_160 - 2_049_000
    assert full_models["xception65"].num_parameters() == 37_867_312
    # the deep stem replaces conv1 7x7 (9,408 weights) + bn (128) by three 3x3 convs + bns, and
    # block1's first unit then reads 128 channels instead of 64 (conv1 and the projection)
    deep_stem = 3 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 2 * (64 + 64 + 128)
    wider_block1 = (128 - 64) * 64 + (128 - 64) * 256
    expected = 25_557_032 - 2_049_000 - 9_408 - 128 + deep_stem + wider_block1
    assert full_models["resnet50_deep"].num_parameters() == expected


def test_full_resnet50_forward_runs(full_models):
    model = full_models["resnet50_standard"].eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with no_grad():
        last, features = model(x, taps=["b1u2c3"])
    assert last.shape == (1, 2048, 2, 2)
    assert features["b1u2c3"].shape == (1, 256, 16, 16)
    assert np.isfinite(last.data).all()


# ---------------------------------------------------------------- strides and dilations
def resnet_layout(model):
    return [[(unit.conv2.stride[0], unit.conv2.dilation[0]) for unit in layer] for layer in model.layers()]


# (stride, dilation) of each unit's 3x3 conv for units (2, 1, 2, 2) and multi_grid (1, 2),
# worked out by hand from DeepLab's rule: once the running stride (4 after the stem) reaches the
# target, later strides become 1 and later dilations grow by the skipped stride.
RESNET_DEEPLAB = {
    8: [[(1, 1), (2, 1)], [(1, 1)], [(1, 2), (1, 2)], [(1, 4), (1, 8)]],
    16: [[(1, 1), (2, 1)], [(2, 1)], [(1, 1), (1, 1)], [(1, 2), (1, 4)]],
    32: [[(1, 1), (2, 1)], [(2, 1)], [(1, 1), (2, 1)], [(1, 1), (1, 2)]],
}
# torchvision's replace_stride_with_dilation gives the same for the first-unit layout
RESNET_TORCHVISION = {
    8: [[(1, 1), (1, 1)], [(2, 1)], [(1, 1), (1, 2)], [(1, 2), (1, 8)]],
    16: [[(1, 1), (1, 1)], [(2, 1)], [(2, 1), (1, 1)], [(1, 1), (1, 4)]],
    32: [[(1, 1), (1, 1)], [(2, 1)], [(2, 1), (1, 1)], [(2, 1), (1, 2)]],
}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("layout,expected", [("deeplab", RESNET_DEEPLAB),
                                             ("torchvision", RESNET_TORCHVISION)])
def test_resnet_strides_and_dilations(layout, expected, output_stride):
    model = ResNet((2, 1, 2, 2), (4, 8, 8, 16), stem_channels=(8, 8, 16), multi_grid=(1, 2),
                   output_stride=output_stride, layout=layout)
    assert resnet_layout(model) == expected[output_stride]


# (stride, dilation) of each unit: entry blocks 1-3, middle units 1-2, exit blocks 1-2
XCEPTION = {
    8: [(2, 1), (2, 1), (1, 1), (1, 2), (1, 2), (1, 2), (1, 4)],
    16: [(2, 1), (2, 1), (2, 1), (1, 1), (1, 1), (1, 1), (1, 2)],
    32: [(2, 1), (2, 1), (2, 1), (1, 1), (1, 1), (2, 1), (1, 1)],
}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_xception_strides_and_dilations(output_stride):
    model = Xception(middle_units=2, width_scale=1 / 16, output_stride=output_stride)
    layout = []
    for unit in model.units():
        last, first = unit.sepconv3.conv_dw, unit.sepconv1.conv_dw
        assert first.stride == (1, 1) and first.dilation == last.dilation
        layout.append((last.stride[0], last.dilation[0]))
    assert layout == XCEPTION[output_stride]


# ---------------------------------------------------------------- arguments and registry
@pytest.mark.parametrize("build,match", [
    (lambda: tiny_resnet(output_stride=4), "output_stride must be 8, 16 or 32"),
    (lambda: tiny_resnet(stem="wide"), "stem must be 'deep' or 'standard'"),
    (lambda: tiny_resnet(layout="v2"), "layout must be 'deeplab' or 'torchvision'"),
    (lambda: resnet50(multi_grid=(1, 2)), "multi_grid needs one rate per unit of block 4"),
    (lambda: ResNet(stem="deep", stem_channels=(64,)), "a deep stem needs 3 stem_channels"),
    (lambda: tiny_xception(output_stride=64), "output_stride must be 8, 16 or 32"),
    (lambda: build_backbone("vgg16"), "unknown backbone 'vgg16'"),
])
def test_bad_arguments_raise_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name,cls", [("tiny_resnet", ResNet), ("tiny_xception", Xception)])
def test_build_backbone(name, cls):
    model = build_backbone(name, output_stride=8)
    assert isinstance(model, cls) and model.output_stride == 8
    assert build_backbone("tiny_resnet", stem="standard").stem == "standard"


# ---------------------------------------------------------------- gradients (float64, train-mode BN)
def to_float64(module, xp):
    """Move a module to xp's device and cast its parameters and BN statistics to float64."""
    module.to(device_name(xp))
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for m in module.modules():
        if isinstance(m, BatchNorm2d):
            m.running_mean = m.running_mean.astype(np.float64)
            m.running_var = m.running_var.astype(np.float64)
    return module.train()


def check_unit(unit, x, weight_owner):
    """gradcheck the unit w.r.t. its input and the weight of one of its convs.

    gradcheck differentiates its own input tensors, so the conv's weight is swapped for the
    tensor gradcheck passes in.
    """
    def run(x, weight):
        weight_owner.weight = weight
        return unit(x)

    gradcheck(run, [x, weight_owner.weight.data])


@pytest.mark.parametrize("in_channels,width,stride,dilation", [
    (6, 3, 2, 1),  # projection shortcut with stride (a first unit)
    (8, 2, 2, 1),  # identity shortcut subsampled (DeepLab's strided last unit)
    (8, 2, 1, 2),  # atrous unit
])
def test_bottleneck_gradients(xp, in_channels, width, stride, dilation):
    unit = to_float64(Bottleneck(in_channels, width, stride, dilation), xp)
    x = xp.asarray(np.random.default_rng(1).standard_normal((2, in_channels, 5, 7)))
    check_unit(unit, x, unit.conv2)


@pytest.mark.parametrize("depths,stride,dilation,skip,relu_inside", [
    ((5, 6, 7), 2, 1, "conv", False),  # entry flow
    ((4, 4, 4), 1, 2, "sum", False),   # middle flow, atrous
    ((5, 5, 6), 1, 2, "none", True),   # exit block2
])
def test_xception_unit_gradients(xp, depths, stride, dilation, skip, relu_inside):
    in_channels = 4
    unit = to_float64(XceptionModule(in_channels, depths, stride, dilation, skip, relu_inside), xp)
    x = xp.asarray(np.random.default_rng(2).standard_normal((2, in_channels, 5, 7)))
    check_unit(unit, x, unit.sepconv1.conv_dw)


def test_backbone_backward_reaches_every_parameter():
    model = tiny_xception()
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32))
    last, features = model(x, taps=["efb2u1c2"])
    (last.sum() + features["efb2u1c2"].mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not np.any(p.grad)]
    assert missing == []
