"""The fast twins (tinyseg/fast/) against the reference ops, the dispatch table and the config
switch. Every op test of tests/functional/ also runs on both implementations (its `impl`
fixture); here each twin is compared with its reference directly, in float64."""
import os

import numpy as np
import pytest

import tinyseg.fast as fast
from tinyseg import Tensor
from tinyseg import functional as F
from tinyseg.config import Config, config, using_config
from tinyseg.dispatch import choose
from tinyseg.fast import parallel
from tinyseg.fast.conv import active_taps, col2im_slabs, im2col_slabs
from tinyseg.functional.activation import ReLU
from tinyseg.functional.conv import Conv2d, col2im, im2col
from tinyseg.functional.dupsample import DUpsample
from tinyseg.functional.norm import BatchNorm
from tinyseg.functional.pool import MaxPool2d


@pytest.fixture(autouse=True)
def tiny_slabs(monkeypatch):
    monkeypatch.setattr(parallel, "CACHE_BYTES", 64)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)


def run(op, inputs, gy, rng):
    """op(*inputs) with every input trained; returns the output and every gradient (NumPy)."""
    tensors = [Tensor(a.copy(), requires_grad=True) for a in inputs]
    y = op(*tensors)
    y.backward(gy)
    return [y.data] + [t.grad for t in tensors]


def cases(rng):
    """(reference class, constructor arguments, inputs) for every twin of CPU_TWINS."""
    x = rng.standard_normal((2, 6, 11, 9))
    norm = lambda training: (np.zeros(6), np.ones(6), training, 0.1, 1e-5)  # noqa: E731
    return [
        (Conv2d, (2, 1, 1, 1), [x, rng.standard_normal((5, 6, 3, 3)), rng.standard_normal(5)]),
        (Conv2d, (1, 2, 2, 6), [x, rng.standard_normal((6, 1, 3, 3))]),          # depthwise
        (Conv2d, (1, 0, 1, 2), [x, rng.standard_normal((4, 3, 1, 1))]),          # pointwise, grouped
        (Conv2d, (1, 18, 18, 1), [x, rng.standard_normal((3, 6, 3, 3))]),        # taps in padding
        (BatchNorm, norm(True) + (True,), [x, rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)]),
        (BatchNorm, norm(False) + (False,), [x, rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)]),
        (ReLU, (), [x]),
        (MaxPool2d, (3, 2, 1), [x]),
        (DUpsample, (4,), [rng.standard_normal((2, 5, 3, 2)), rng.standard_normal((4 * 4 * 3, 5)),
                           rng.standard_normal(4 * 4 * 3)]),
    ]


def test_every_twin_gives_its_references_output_and_gradients():
    rng = np.random.default_rng(0)
    tested = set()
    for reference, arguments, inputs in cases(rng):
        twin = fast.CPU_TWINS[reference]
        y = reference(*arguments)(*[Tensor(a) for a in inputs]).data
        gy = rng.standard_normal(y.shape)
        expected = run(reference(*arguments), inputs, gy, rng)
        got = run(twin(*arguments), inputs, gy, rng)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10, err_msg=twin.__name__)
        tested.add(reference)
    assert tested == set(fast.CPU_TWINS)  # a new twin must be added to cases()


def test_slab_gathers_equal_the_reference_gathers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 8, 7))
    geometry = ((3, 2), (2, 1), (1, 2), (1, 2))
    col = im2col(x, *geometry)
    np.testing.assert_array_equal(im2col_slabs(x, *geometry), col)
    c = rng.standard_normal(col.shape)
    np.testing.assert_allclose(col2im_slabs(c, (8, 7), *geometry[1:]), col2im(c, (8, 7), *geometry[1:]),
                               rtol=1e-12)


def test_taps_that_read_only_padding_are_left_out():
    """ASPP's rate 18 on a 16 x 16 map (a 256 x 256 crop at output stride 16): only the centre
    tap sees the map, so the conv runs as a 1x1 without padding; at 32 x 32 all 9 taps are
    active."""
    assert active_taps(16, 3, 1, 18, 18) == (slice(1, 2), 0)
    assert active_taps(32, 3, 1, 18, 18) is None
    assert active_taps(11, 3, 1, 10, 10) is None  # tap 0 reaches column 10 = the first pixel
    assert active_taps(9, 3, 1, 10, 10) == (slice(1, 2), 0)
    assert active_taps(20, 3, 2, 1, 1) is None  # an ordinary strided conv


def test_the_switch_picks_the_twin_or_the_reference():
    x = np.zeros((1, 1, 2, 2))
    with using_config(impl="fast"):
        assert choose(Conv2d, x) is fast.CPU_TWINS[Conv2d]
        assert choose(Conv2d, Tensor(x)) is fast.CPU_TWINS[Conv2d]
        assert choose(F.dupsample_cross_entropy, x) is F.dupsample_cross_entropy  # GPU only
    with using_config(impl="reference"):
        assert choose(Conv2d, x) is Conv2d


def test_using_config_restores_the_old_values_also_after_an_error():
    before = (config.impl, config.cuda_kernels)
    with pytest.raises(RuntimeError):
        with using_config(impl="reference", cuda_kernels=True):
            assert (config.impl, config.cuda_kernels) == ("reference", True)
            raise RuntimeError
    assert (config.impl, config.cuda_kernels) == before


def test_config_refuses_unknown_values_in_one_line(monkeypatch):
    with pytest.raises(ValueError, match="impl must be one of"):
        config.impl = "quick"
    with pytest.raises(AttributeError, match="has no setting 'imp'"):
        config.imp = "fast"
    monkeypatch.setenv("TINYSEG_IMPL", "reference")
    monkeypatch.setenv("TINYSEG_CUDA_KERNELS", "1")
    assert (Config().impl, Config().cuda_kernels) == ("reference", True)  # the environment seeds
    monkeypatch.setenv("TINYSEG_IMPL", "slow")
    with pytest.warns(UserWarning, match="TINYSEG_IMPL='slow'"):
        assert Config().impl == "fast"  # importing tinyseg must not fail


def test_a_bad_environment_switch_stops_a_command_line_in_one_line():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          env={**os.environ, "TINYSEG_IMPL": "bogus", "PYTHONWARNINGS": "ignore"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: TINYSEG_IMPL='bogus': choose one of fast, reference (or unset it)"]


def test_the_switch_reads_the_device_of_raw_gpu_arrays_and_tensors(xp):
    """A raw CuPy array's .data is a memory pointer, not the array: choose must still see the
    GPU (reference ops there unless the CUDA kernels are on)."""
    if xp is np:
        pytest.skip("the GPU case")
    x = xp.zeros((1, 1, 4, 4))
    with using_config(impl="fast", cuda_kernels=False):
        assert choose(MaxPool2d, x) is MaxPool2d and choose(MaxPool2d, Tensor(x)) is MaxPool2d
    with using_config(impl="fast", cuda_kernels=True):
        assert choose(Conv2d, x) is fast.CUDA_TWINS[Conv2d]
        assert choose(F.dupsample_cross_entropy, x) is fast.CUDA_TWINS[F.dupsample_cross_entropy]


def test_a_fast_conv_may_run_twice():
    """The trimmed taps change only that call's padding, not the op's own (as the reference)."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    op = fast.CPU_TWINS[Conv2d](1, 6, 6, 1)
    op.needs_input_grad = (False, False)
    first = op.forward(x, w)
    np.testing.assert_array_equal(op.forward(x, w), first)
    np.testing.assert_allclose(first, Conv2d(1, 6, 6, 1).forward(x, w), atol=1e-12)
