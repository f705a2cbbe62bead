"""SGD and the poly schedule follow PyTorch step for step."""
import numpy as np
import pytest

from tinyseg import nn, optim


def test_sgd_matches_torch_with_momentum_and_weight_decay():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
    p = nn.Parameter(w0.copy())
    q = nn.Parameter(np.ones(3, np.float32))  # a second group without weight decay
    sgd = optim.SGD([{"params": [p]}, {"params": [q], "weight_decay": 0.0}],
                    lr=0.1, momentum=0.9, weight_decay=1e-2)
    tp = torch.tensor(w0.copy(), requires_grad=True)
    tq = torch.ones(3, requires_grad=True)
    tsgd = torch.optim.SGD([{"params": [tp]}, {"params": [tq], "weight_decay": 0.0}],
                           lr=0.1, momentum=0.9, weight_decay=1e-2)
    for g in grads:
        p.grad, q.grad = g.copy(), g[0].copy()
        tp.grad, tq.grad = torch.tensor(g), torch.tensor(g[0])
        sgd.step()
        tsgd.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q.data, tq.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_poly_schedule():
    sgd = optim.SGD([nn.Parameter(np.zeros(1, np.float32))], lr=0.007)
    schedule = optim.PolyLR(sgd, max_iterations=100)
    assert schedule.step(0) == pytest.approx(0.007)
    assert schedule.step(50) == pytest.approx(0.007 * 0.5 ** 0.9)
    assert schedule.step(100) == 0.0


def test_momentum_state_roundtrip_resumes_identically():
    def run(steps, resume_from=None):
        p = nn.Parameter(np.ones(2, np.float32))
        sgd = optim.SGD([p], lr=0.1, momentum=0.9)
        if resume_from is not None:
            p.data[:] = resume_from[0]
            sgd.load_state_dict(resume_from[1])
        for _ in range(steps):
            p.grad = p.data * 2
            sgd.step()
        return p.data.copy(), {k: v.copy() for k, v in sgd.state_dict().items()}

    straight, _ = run(6)
    half = run(3)
    resumed, _ = run(3, resume_from=half)
    np.testing.assert_array_equal(straight, resumed)


def test_frozen_parameters_are_not_updated():
    frozen = nn.Parameter(np.ones(2, np.float32), requires_grad=False)
    sgd = optim.SGD([frozen], lr=1.0)
    frozen.grad = np.ones(2, np.float32)
    sgd.step()
    np.testing.assert_array_equal(frozen.data, 1.0)


def test_sgd_in_chunks_matches_torch(monkeypatch):
    """Tiny slabs cut each parameter into many chunks on the worker threads; a parameter that
    is not contiguous is updated whole. Both give torch's numbers."""
    torch = pytest.importorskip("torch")
    from tinyseg.fast import parallel
    monkeypatch.setattr(parallel, "CACHE_BYTES", 16)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((6, 5, 3)).astype(np.float32)
    v0 = np.asfortranarray(rng.standard_normal((4, 7)).astype(np.float32))
    grads = [(rng.standard_normal(w0.shape).astype(np.float32),
              rng.standard_normal(v0.shape).astype(np.float32)) for _ in range(3)]
    p, q = nn.Parameter(w0.copy()), nn.Parameter(v0.copy(order="F"))
    assert not q.data.flags.c_contiguous
    sgd = optim.SGD([p, q], lr=0.05, momentum=0.9, weight_decay=1e-3)
    tp, tq = torch.tensor(w0, requires_grad=True), torch.tensor(v0, requires_grad=True)
    tsgd = torch.optim.SGD([tp, tq], lr=0.05, momentum=0.9, weight_decay=1e-3)
    for gp, gq in grads:
        p.grad, q.grad = gp.copy(), gq.copy()
        tp.grad, tq.grad = torch.tensor(gp), torch.tensor(gq)
        sgd.step()
        tsgd.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q.data, tq.detach().numpy(), rtol=1e-6, atol=1e-6)
