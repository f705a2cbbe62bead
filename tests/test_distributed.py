"""Data-parallel pieces (tinyseg/distributed.py) with thread-ranks in one process
(tests/thread_comm.py); the multi-process runs through mpiexec are in tests/test_mpi.py."""
import numpy as np
import pytest

import strict_cupy

from tinyseg import Tensor, nn
from tinyseg import functional as F
from tinyseg.backend import to_numpy
from tinyseg.distributed import (NCCLCommunicator, SingleProcess, average_gradients, buckets,
                                 set_batch_norm, share_of_mean)

from thread_comm import FakeNCCL, ThreadGroup, split


@pytest.mark.parametrize("relu", [False, True])
def test_sync_batch_norm_equals_batch_norm_over_the_whole_batch(relu):
    """2 processes of 4 images with synced statistics = one batch of 8: y, dx, the summed
    dgamma and dbeta and the running statistics (float64: exact up to summation order)."""
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((8, 3, 5, 4)) + 0.5, rng.standard_normal((8, 3, 5, 4))
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)

    def normalise(x, gy, comm=None):
        running = [np.zeros(3), np.ones(3)]
        tensors = [Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta)]
        if comm is None:
            y = F.batch_norm(tensors[0], *running, *tensors[1:], training=True, relu=relu)
        else:
            y = F.sync_batch_norm(tensors[0], *running, *tensors[1:], comm, relu=relu)
        y.backward(gy)
        return [y.data] + [t.grad for t in tensors] + running

    whole = normalise(x, gy)
    shares = ThreadGroup(2).run(lambda comm: normalise(split(x, 2)[comm.rank],
                                                      split(gy, 2)[comm.rank], comm))
    np.testing.assert_allclose(np.concatenate([s[0] for s in shares]), whole[0], atol=1e-12)
    np.testing.assert_allclose(np.concatenate([s[1] for s in shares]), whole[1], atol=1e-12)
    for i in (2, 3):  # dgamma, dbeta: each process's own, summed by the gradient averaging
        np.testing.assert_allclose(shares[0][i] + shares[1][i], whole[i], atol=1e-12)
    for i in (4, 5):  # running statistics: the same on every process
        for share in shares:
            np.testing.assert_allclose(share[i], whole[i], atol=1e-12)


def test_bn_group_size_gives_each_group_its_own_statistics():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 2, 3, 3))
    grouped, alone = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    set_batch_norm(grouped, group_size=4)
    y = grouped(Tensor(x)).data
    first = alone(Tensor(x[:4])).data
    second = nn.BatchNorm2d(2)(Tensor(x[4:])).data
    np.testing.assert_allclose(y, np.concatenate([first, second]), atol=1e-6)
    np.testing.assert_allclose(grouped.running_mean, alone.running_mean, atol=1e-7)  # first group's


def test_gradients_are_averaged_bucket_by_bucket():
    rng = np.random.default_rng(2)
    grads = [[rng.standard_normal(s) for s in ((3, 4), (5,), (2, 2, 2))] for _ in range(2)]

    def average(comm):
        params = [nn.Parameter(np.zeros_like(g)) for g in grads[comm.rank]]
        for p, g in zip(params, grads[comm.rank]):
            p.grad = g.copy()
        average_gradients(params, comm, bucket_bytes=100)  # several buckets
        return [p.grad for p in params]
    for result in ThreadGroup(2).run(average):
        for got, a, b in zip(result, *grads):
            np.testing.assert_allclose(got, (a + b) / 2, atol=1e-15)
    assert [len(b) for b in buckets([nn.Parameter(np.zeros(20)) for _ in range(3)], 200)] == [2, 1]


def test_share_of_mean_weights_each_process_by_its_labelled_pixels():
    masks = np.array([[[0, 255], [1, 2]], [[255, 255], [255, 3]]])  # 3 and 1 labelled pixels
    shares = ThreadGroup(2).run(lambda comm: share_of_mean(masks[comm.rank:comm.rank + 1], comm))
    assert shares == [1.5, 0.5]  # local count * 2 / 4: the mean of the two = 1
    assert share_of_mean(masks, SingleProcess()) == 1.0


def test_nccl_path_averages_gradients_and_syncs_batch_norm_on_device_arrays(xp):
    """NCCLCommunicator over the strict CuPy stand-in (a real GPU has no second rank here):
    device arrays go through allReduce by pointer; object broadcasts go over the host side."""
    if xp is np:
        pytest.skip("the CuPy case")
    if xp is not strict_cupy.modules()["cupy"]:
        pytest.skip("FakeNCCL reads host memory: only with the stand-in, not a real GPU")
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2)]
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nccl = FakeNCCL(2)

    def work(host):
        comm = NCCLCommunicator(host, cupy=xp, nccl=nccl)
        p = nn.Parameter(xp.zeros((4, 3), np.float32))
        p.grad = xp.asarray(grads[host.rank])
        average_gradients([p], comm)
        share = Tensor(xp.asarray(split(x, 2)[host.rank]))
        y = F.sync_batch_norm(share, None, None, Tensor(xp.ones(2, np.float32)),
                              Tensor(xp.zeros(2, np.float32)), comm)
        return to_numpy(p.grad), to_numpy(y.data)
    results = ThreadGroup(2).run(work)
    for grad, _ in results:
        np.testing.assert_allclose(grad, (grads[0] + grads[1]) / 2, rtol=1e-6)
    whole = F.batch_norm(Tensor(x), None, None, training=True).data
    np.testing.assert_allclose(np.concatenate([y for _, y in results]), whole, atol=1e-5)
    assert nccl.calls >= 2 * 4  # gradients, counts, sums, squares: by NCCL, not MPI


def test_sync_batch_norm_counts_the_values_of_every_process():
    """One image per process (ASPP's pooled 1x1 branch): 2 values per channel in all, as a
    one-process batch of 2; one value in all is refused on every process alike."""
    x = np.random.default_rng(7).standard_normal((2, 3, 1, 1))
    shares = ThreadGroup(2).run(lambda comm: F.sync_batch_norm(
        Tensor(x[comm.rank:comm.rank + 1]), None, None, None, None, comm).data)
    np.testing.assert_allclose(np.concatenate(shares),
                               F.batch_norm(Tensor(x), None, None, training=True).data, atol=1e-12)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.sync_batch_norm(Tensor(x[:1]), None, None, None, None, SingleProcess())


def test_validation_uses_rank_zeros_batch_norm_statistics():
    from tinyseg.distributed import share_batch_norm_statistics

    def share(comm):
        norm = nn.BatchNorm2d(2)
        norm.running_mean[...] = comm.rank + 1.0
        share_batch_norm_statistics(norm, comm)
        return norm.running_mean.copy()
    assert [list(m) for m in ThreadGroup(2).run(share)] == [[1.0, 1.0], [1.0, 1.0]]


def test_a_share_without_labelled_pixels_adds_nothing():
    masks = np.full((2, 1, 2, 2), 255)
    masks[0, 0, 0, 0] = 1
    assert ThreadGroup(2).run(lambda comm: share_of_mean(masks[comm.rank], comm)) == [2.0, 0.0]
