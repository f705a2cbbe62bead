"""Module conventions: parameters vs buffers, state_dict round trips, strict loading, train/eval."""
import numpy as np
import pytest

from tinyseg import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU())


def test_parameters_buffers_and_names():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["conv.weight", "bn.weight", "bn.bias", "head.0.weight", "head.0.bias"]
    assert [n for n, _ in m.named_buffers()] == ["bn.running_mean", "bn.running_var"]
    assert set(m.state_dict()) == set(names) | {"bn.running_mean", "bn.running_var"}
    assert m.num_parameters() == 4 * 3 * 9 + 4 + 4 + 2 * 4 + 2


def test_train_eval_reaches_every_submodule():
    m = Block().eval()
    assert not any(sub.training for sub in m.modules())
    m.train()
    assert all(sub.training for sub in m.modules())


def test_state_dict_save_load_roundtrip(tmp_path):
    nn.init.manual_seed(1)
    a = Block()
    a.bn.running_mean[:] = [1, 2, 3, 4]
    nn.save(a.state_dict(), tmp_path / "m.npz")
    nn.init.manual_seed(2)
    b = Block()
    b.load_state_dict(nn.load(tmp_path / "m.npz"))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(va, vb)
    assert not (tmp_path / "m.npz.tmp").exists()


def test_strict_load_names_missing_unexpected_and_misshaped_keys():
    state = Block().state_dict()
    state.pop("bn.bias")
    state["extra.weight"] = np.zeros(3)
    state["conv.weight"] = np.zeros((4, 3, 1, 1))
    with pytest.raises(nn.StateDictError) as error:
        Block().load_state_dict(state)
    message = str(error.value)
    assert "missing key(s): bn.bias" in message
    assert "unexpected key(s): extra.weight" in message
    assert "conv.weight: checkpoint (4, 3, 1, 1) vs model (4, 3, 3, 3)" in message


def test_non_strict_load_reports_but_accepts_missing_keys():
    state = Block().state_dict()
    state.pop("bn.bias")
    missing, unexpected = Block().load_state_dict(state, strict=False)
    assert missing == ["bn.bias"] and unexpected == []


def test_load_of_a_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="broken.npz: not a readable .npz"):
        nn.load(path)
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        nn.load(tmp_path / "nothing.npz")
