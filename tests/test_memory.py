"""The step-memory estimate and the check train.py runs before training."""
import numpy as np
import pytest

from tinyseg.autograd import Tensor
from tinyseg.memory import check_step_memory, estimate_step_bytes, graph_bytes
from tinyseg.models import build_model


@pytest.fixture
def model():
    m = build_model("tiny_resnet", "dupsampling", 21, 8, dim=16)
    m.set_projection(np.ones((8 * 8 * 21, 16), np.float32), np.zeros(8 * 8 * 21, np.float32))
    return m


def test_graph_bytes_counts_each_saved_buffer_once():
    x = Tensor(np.ones((1000,), np.float32), requires_grad=True)   # a leaf: not counted
    y = x * 2.0                                                       # 4,000 bytes
    z = y * y + y                                                     # y counted once
    assert graph_bytes(z) >= 8000 and graph_bytes(z) < 4 * 8000


def test_estimate_grows_with_the_batch_and_the_crop_and_leaves_the_model_as_it_was(model):
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.eval()
    small, double = (estimate_step_bytes(model, 64, b, np) for b in (4, 8))
    bigger = estimate_step_bytes(model, 128, 4, np)
    params = 3 * sum(p.data.nbytes for p in model.parameters())
    assert double - params == pytest.approx(2 * (small - params), rel=0.01)
    assert 2.5 * (small - params) < bigger - params < 5 * (small - params)  # ~ the pixels (4x)
    assert not model.training                          # the mode it was in
    for k, v in model.state_dict().items():            # BN statistics untouched
        np.testing.assert_array_equal(v, before[k])


def test_a_step_that_cannot_fit_is_refused_with_a_batch_that_does(model, capsys):
    settings = dict(crop=96, batch_size=64)
    needed, _ = check_step_memory(model, settings, np, limit=10**12)
    assert capsys.readouterr().out == ""
    with pytest.raises(MemoryError, match=r"--batch-size (\d+) fits") as error:
        check_step_memory(model, settings, np, limit=needed // 4)
    fits = int(error.value.args[0].split("--batch-size ")[1].split()[0])
    assert 1 <= fits < 64
    assert check_step_memory(model, dict(settings, batch_size=fits), np, limit=needed // 4)
    check_step_memory(model, settings, np, limit=int(needed / 0.9))
    assert "warning" in capsys.readouterr().out
    with pytest.raises(MemoryError, match="lower --crop"):
        check_step_memory(model, settings, np, limit=1000)
