"""Weight import: PyTorch references of the same architectures, written here with torchvision's
and timm's key names and random weights and BN statistics, are saved as .pth, .npz and
.safetensors, loaded into tinyseg, and must give the same outputs; bad files must fail clearly.
"""
import json
import struct
import sys

import numpy as np
import pytest

from tinyseg import no_grad
from tinyseg.backend import device_name, to_numpy
from tinyseg.models import ResNet, Xception, resnet50
from tinyseg.nn import StateDictError
from tinyseg.weights import load_pretrained, read_safetensors, read_state_dict

torch = pytest.importorskip("torch")
nn = torch.nn
relu = torch.nn.functional.relu


# ---------------------------------------------------------------- torch references
class TorchBottleneck(nn.Module):
    """torchvision's Bottleneck names, with an explicit stride and dilation on conv2."""

    def __init__(self, cin, width, stride, dilation):
        super().__init__()
        cout = 4 * width
        self.stride = stride
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        if self.downsample is not None:
            shortcut = self.downsample(x)
        else:
            shortcut = x[:, :, ::self.stride, ::self.stride]
        y = relu(self.bn1(self.conv1(x)))
        y = relu(self.bn2(self.conv2(y)))
        return relu(self.bn3(self.conv3(y)) + shortcut)


class TorchResNet(nn.Module):
    """A 7x7 stem (torchvision names) or a deep stem (timm names: conv1.0/1/3/4/6, bn1), then
    layer1..4 with the given (stride, dilation) per unit, and an fc classifier to be ignored."""

    def __init__(self, stem_channels, widths, plan):
        super().__init__()
        if len(stem_channels) == 3:
            c1, c2, c3 = stem_channels
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
                nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
                nn.Conv2d(c2, c3, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, stem_channels[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels[-1])
        cin = stem_channels[-1]
        for b, (width, units) in enumerate(zip(widths, plan)):
            layer = []
            for stride, dilation in units:
                layer.append(TorchBottleneck(cin, width, stride, dilation))
                cin = 4 * width
            setattr(self, f"layer{b + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchConvBN(nn.Module):
    """timm's ConvNormAct names: conv, bn."""

    def __init__(self, cin, cout, kernel, stride, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return relu(x) if self.act else x


class TorchSeparable(nn.Module):
    """timm's SeparableConv2d names: conv_dw, bn_dw, conv_pw, bn_pw."""

    def __init__(self, cin, cout, stride, dilation, act):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, dilation, dilation, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin, eps=1e-3)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = act

    def forward(self, x):
        x = self.bn_dw(self.conv_dw(x))
        x = relu(x) if self.act else x
        x = self.bn_pw(self.conv_pw(x))
        return relu(x) if self.act else x


class TorchXceptionModule(nn.Module):
    """timm's XceptionModule: stack.act{i} (a ReLU, out of place) + stack.conv{i}, shortcut."""

    def __init__(self, cin, depths, stride, dilation, start_with_relu=True, no_skip=False):
        super().__init__()
        self.stack = nn.Sequential()
        for i, cout in enumerate(depths):
            if start_with_relu:
                self.stack.add_module(f"act{i + 1}", nn.ReLU())
            self.stack.add_module(f"conv{i + 1}", TorchSeparable(
                cin, cout, stride if i == 2 else 1, dilation, act=not start_with_relu))
            cin = cout
        self.no_skip = no_skip
        self.shortcut = None
        if not no_skip and (depths[-1] != self.stack.conv1.conv_dw.in_channels or stride != 1):
            self.shortcut = TorchConvBN(self.stack.conv1.conv_dw.in_channels, depths[-1], 1, stride, False)

    def forward(self, x):
        y = self.stack(x)
        if self.no_skip:
            return y
        return y + (self.shortcut(x) if self.shortcut is not None else x)


class TorchXception(nn.Module):
    """timm's XceptionAligned names: stem.0/1, blocks.i, head.fc."""

    def __init__(self, stem, blocks):
        super().__init__()
        self.stem = nn.Sequential(TorchConvBN(3, stem[0], 3, 2, True),
                                  TorchConvBN(stem[0], stem[1], 3, 1, True))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Module()
        self.head.fc = nn.Linear(blocks[-1].stack.conv3.bn_pw.num_features, 10)

    def forward(self, x):
        return self.blocks(self.stem(x))


def randomize(model, seed=0):
    """Random BN affine weights and running statistics (the defaults 1, 0, 0, 1 hide bugs)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(1000)
    return model.eval()


# ---------------------------------------------------------------- writing files
def write_safetensors(path, arrays, dtypes=None):
    """A .safetensors file written from the format's description (header padded to 8 bytes)."""
    dtypes = dtypes or {}
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        kind = dtypes.get(name, {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}.get(array.dtype))
        header[name] = {"dtype": kind, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def save(model, path):
    """Save a torch model's state dict as .pth (torch.save), .npz or .safetensors."""
    state = model.state_dict()
    if path.suffix == ".pth":
        torch.save(state, path)
    elif path.suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in state.items()})
    else:
        write_safetensors(path, {k: v.numpy() for k, v in state.items()})
    return path


def assert_same_output(tiny_model, torch_model, xp, shape=(2, 3, 37, 29), tol=1e-4):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    tiny_model.to(device_name(xp)).eval()
    with no_grad():
        actual, _ = tiny_model(xp.asarray(x))
    actual = to_numpy(actual.data)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max() / np.abs(expected).max()
    assert error <= tol, f"relative error {error:.3g} > {tol:g}"


# ---------------------------------------------------------------- ResNet
# units (2, 1, 2, 2), output stride 8, multi_grid (1, 2): DeepLab's layout, by hand
RESNET_PLAN_OS8 = [[(1, 1), (2, 1)], [(1, 1)], [(1, 2), (1, 2)], [(1, 4), (1, 8)]]
WIDTHS = (4, 8, 8, 16)  # block1 and block3 start without a projection (16 -> 16, 32 -> 32)


def tiny_pair(stem_channels=(8, 8, 16), torch_stem=None, widths=WIDTHS):
    """A tinyseg ResNet and a torch reference with the same layout (and maybe another stem)."""
    stem = "deep" if len(stem_channels) == 3 else "standard"
    model = ResNet((2, 1, 2, 2), widths, stem=stem, stem_channels=stem_channels,
                   output_stride=8, multi_grid=(1, 2))
    reference = randomize(TorchResNet(torch_stem or stem_channels, widths, RESNET_PLAN_OS8))
    return model, reference


@pytest.mark.parametrize("suffix", [".pth", ".npz", ".safetensors"])
@pytest.mark.parametrize("stem_channels", [(8, 8, 16), (16,)], ids=["deep_timm_names", "standard"])
def test_resnet_import_matches_torch(xp, tmp_path, suffix, stem_channels):
    model, reference = tiny_pair(stem_channels)
    skipped = load_pretrained(model, save(reference, tmp_path / f"resnet{suffix}"))
    assert "fc.weight" in skipped and "layer1.0.bn1.num_batches_tracked" in skipped
    np.testing.assert_array_equal(model.layer3[1].bn2.running_var,
                                  reference.layer3[1].bn2.running_var.numpy())
    assert_same_output(model, reference, xp)


def test_full_resnet50_loads_a_torchvision_state_dict(tmp_path):
    """torchvision's ResNet-50 layout: strides on the first unit of blocks 2-4 (v1.5)."""
    plan = [[(2 if b > 0 and u == 0 else 1, 1) for u in range(n)] for b, n in enumerate((3, 4, 6, 3))]
    reference = randomize(TorchResNet((64,), (64, 128, 256, 512), plan))
    model = resnet50(output_stride=32, stem="standard", layout="torchvision")
    load_pretrained(model, save(reference, tmp_path / "resnet50.pth"))
    assert_same_output(model, reference, np, shape=(1, 3, 64, 64))


# ---------------------------------------------------------------- Xception
def torch_tiny_xception(dilations):
    """Xception widths / 8 with 2 middle units, timm's names; one (stride, dilation) per block."""
    config = [(8, (16, 16, 16)), (16, (32, 32, 32)), (32, (91, 91, 91)),
              (91, (91, 91, 91)), (91, (91, 91, 91)), (91, (91, 128, 128)), (128, (192, 192, 256))]
    blocks = [TorchXceptionModule(cin, depths, stride, dilation)
              for (cin, depths), (stride, dilation) in zip(config[:-1], dilations[:-1])]
    blocks.append(TorchXceptionModule(*config[-1], *dilations[-1], start_with_relu=False, no_skip=True))
    return randomize(TorchXception((4, 8), blocks))


XCEPTION_DILATIONS = {  # by hand, as in timm: a stride past the target becomes a dilation after it
    16: [(2, 1), (2, 1), (2, 1), (1, 1), (1, 1), (1, 1), (1, 2)],
    8: [(2, 1), (2, 1), (1, 1), (1, 2), (1, 2), (1, 2), (1, 4)],
}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_xception_import_matches_torch(xp, tmp_path, suffix, output_stride):
    reference = torch_tiny_xception(XCEPTION_DILATIONS[output_stride])
    model = Xception(middle_units=2, width_scale=1 / 8, output_stride=output_stride)
    skipped = load_pretrained(model, save(reference, tmp_path / f"xception{suffix}"))
    assert "head.fc.weight" in skipped
    np.testing.assert_array_equal(model.middle_flow[1].sepconv2.bn_dw.running_mean,
                                  reference.blocks[4].stack.conv2.bn_dw.running_mean.numpy())
    assert_same_output(model, reference, xp)


def test_xception_with_fewer_middle_units_is_reported(tmp_path):
    path = save(torch_tiny_xception(XCEPTION_DILATIONS[16]), tmp_path / "xception.pth")
    with pytest.raises(StateDictError, match=r"unexpected key\(s\): middle_flow\.1\."):
        load_pretrained(Xception(middle_units=1, width_scale=1 / 8), path)


# ---------------------------------------------------------------- errors
def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    model, reference = tiny_pair()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    del state["layer2.0.bn3.running_var"]
    state["layer9.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["layer4.1.conv2.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    np.savez(tmp_path / "broken.npz", **state)
    with pytest.raises(StateDictError) as error:
        load_pretrained(model, tmp_path / "broken.npz")
    message = str(error.value)
    assert "broken.npz" in message
    assert "1 missing key(s): layer2.0.bn3.running_var" in message
    assert "1 unexpected key(s): layer9.0.conv1.weight" in message
    assert "layer4.1.conv2.weight: checkpoint (16, 16, 1, 1) vs model (16, 16, 3, 3)" in message


def test_timm_deep_stem_widths_are_reported_as_misshaped(tmp_path):
    """timm's deep stems are half as wide as DeepLab's (32, 32, 64 vs 64, 64, 128): here 4, 4, 8
    vs 8, 8, 16. The names map, the shapes cannot: 3 convs + 3 BNs x 4 arrays of the stem, and
    layer1.0's conv1 and projection, which read the stem's output."""
    model, reference = tiny_pair(stem_channels=(8, 8, 16), torch_stem=(4, 4, 8), widths=(8, 8, 8, 16))
    with pytest.raises(StateDictError) as error:
        load_pretrained(model, save(reference, tmp_path / "resnet50c_like.pth"))
    message = str(error.value)
    assert "missing" not in message and "unexpected" not in message
    assert "17 mis-shaped key(s): conv1_1.weight: checkpoint (4, 3, 3, 3) vs model (8, 3, 3, 3)" in message


def test_a_standard_stem_file_does_not_load_into_a_deep_stem(tmp_path):
    model, _ = tiny_pair()
    _, reference = tiny_pair(stem_channels=(16,))
    expected = r"missing key\(s\): conv1_1\.weight.*unexpected key\(s\): conv1\.weight"
    with pytest.raises(StateDictError, match=expected):
        load_pretrained(model, save(reference, tmp_path / "standard.pth"))


def test_unreadable_files_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ValueError, match=r"unknown weight format '\.h5'"):
        read_state_dict(tmp_path / "weights.h5")
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="not a .safetensors file"):
        read_state_dict(tmp_path / "short.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ImportError, match=r"needs torch \(pip install torch\).*convert it once to \.npz"):
        read_state_dict(tmp_path / "w.pth")


def test_safetensors_dtypes(tmp_path):
    """BF16 and F16 read as torch reads them; integers keep their type; shapes are kept."""
    values = torch.tensor([[1.0, -2.5, 3.14159], [1e-3, 65504.0, -0.1]])
    bf16, f16 = values.to(torch.bfloat16), values.to(torch.float16)
    arrays = {"bf16": bf16.view(torch.int16).numpy(), "f16": f16.numpy(),
              "i64": np.arange(6, dtype=np.int64).reshape(3, 2), "scalar": np.float32(7.0).reshape(())}
    write_safetensors(tmp_path / "t.safetensors", arrays, dtypes={"bf16": "BF16", "f16": "F16"})
    state = read_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(state["bf16"], bf16.float().numpy())
    assert state["bf16"].dtype == np.float32
    np.testing.assert_array_equal(state["f16"], f16.numpy())
    np.testing.assert_array_equal(state["i64"], arrays["i64"])
    assert state["scalar"].shape == () and state["scalar"] == 7.0
    assert list(state) == ["bf16", "f16", "i64", "scalar"]


def _safetensors(path, header, data=b"\0" * 16):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header, message", [
    ([1, 2], "not an object"),
    ({"w": {"dtype": "F32", "shape": [2]}}, "lacks dtype, shape or data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "invalid shape"),
    ({"w": "F32"}, "lacks dtype"),
])
def test_malformed_safetensors_headers_are_refused(tmp_path, header, message):
    path = _safetensors(tmp_path / "w.safetensors", header)
    with pytest.raises(ValueError, match=message):
        read_safetensors(path)


def test_a_truncated_or_foreign_pth_is_one_line_naming_the_file(tmp_path):
    torch.save({"w": torch.zeros(100)}, tmp_path / "whole.pth")
    blob = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.pth: not a readable PyTorch state dict") as error:
        read_state_dict(tmp_path / "cut.pth")
    assert "weights_only=False" not in str(error.value) and "\n" not in str(error.value)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match=r"tensor\.pth: holds a Tensor, not a state dict"):
        read_state_dict(tmp_path / "tensor.pth")
