"""train.py on several processes through mpiexec (tinyseg/distributed.py), CPU backend, on tiny
generated data: the runs must give the one-process run's numbers.

Tolerance: the processes' gradients are summed by MPI in another order than one process's
batched products sum them, so float32 results differ in the last bits: losses to 1e-5 and
weights to 1e-6 absolute + 1e-4 relative after 4 SGD steps (measured: at most 5e-7).
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyseg.data import DataLoader, build_dataset, ensure_synthetic
from tinyseg.run import load_checkpoint, read_log

pytest.importorskip("mpi4py", reason="the mpi extra (mpi4py, mpich) is not installed")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
BASE = ["--model", "tiny_resnet", "--output-stride", "8", "--batch-size", "4", "--crop", "48",
        "--workers", "0", "--log-every", "1", "--val-every", "2", "--val-images", "3",
        "--ckpt-every", "2", "--iters", "4", "--dim", "16"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def train(processes, *args, expect=0):
    command = [sys.executable, os.path.join(REPO, "train.py"), *map(str, args)]
    if processes > 1:
        assert MPIEXEC, "mpiexec not found: pip install -e '.[mpi]'"
        command = [MPIEXEC, "-n", str(processes)] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, **ONE_THREAD})
    assert done.returncode == expect, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return ensure_synthetic(root, num_train=12, num_val=3, size=(64, 48), seed=3)


@pytest.fixture(scope="module")
def projection(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "w.npz"
    subprocess.run([sys.executable, "-m", "tinyseg.pca", "--dataset", "synthetic", "--data-root", data,
                    "--split", "train", "--ratio", "8", "--dim", "16", "--out", str(out)],
                   check=True, capture_output=True, cwd=REPO)
    return str(out)


def run_results(folder):
    losses = [r["loss"] for r in read_log(os.path.join(folder, "log.jsonl")) if "loss" in r]
    vals = [r["val_miou"] for r in read_log(os.path.join(folder, "log.jsonl")) if "val_miou" in r]
    return np.array(losses), vals, load_checkpoint(os.path.join(folder, "last.npz"))[0]


def assert_same_run(a, b, with_buffers=True):
    (loss_a, val_a, state_a), (loss_b, val_b, state_b) = run_results(a), run_results(b)
    assert len(loss_a) == len(loss_b) == 4
    np.testing.assert_allclose(loss_a, loss_b, atol=1e-5)
    np.testing.assert_allclose(val_a, val_b, atol=1e-6)
    for key in state_a:
        if with_buffers or not key.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(state_a[key], state_b[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_two_processes_with_sync_bn_equal_one_process(data, projection, tmp_path):
    """Global batch 4 on 2 processes, BN over all 4 images = batch 4 on one process: losses,
    validation mIoU (images split over the processes) and every weight and BN statistic."""
    common = ["--data-root", data, "--projection", projection, *BASE]
    train(1, *common, "--out", tmp_path / "one")
    done = train(2, *common, "--sync-bn", "--out", tmp_path / "two")
    assert "2 processes, MPI" in done.stdout and done.stdout.count("done:") == 1  # rank 0 speaks
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_two_processes_without_sync_bn_equal_bn_groups_on_one(data, projection, tmp_path):
    """Each process's BN sees its 2 images = one process with --bn-group 2 (the paper's BN over
    12 of 48 images on one GPU); the running statistics are rank 0's, the first group's."""
    common = ["--data-root", data, "--projection", projection, *BASE]
    train(1, *common, "--bn-group", "2", "--out", tmp_path / "grouped")
    train(2, *common, "--out", tmp_path / "two")
    assert_same_run(tmp_path / "grouped", tmp_path / "two")
    one = run_results(tmp_path / "grouped")[0]
    train(1, *common, "--out", tmp_path / "plain")  # BN over all 4: a different run
    assert not np.allclose(run_results(tmp_path / "plain")[0][1:], one[1:], atol=1e-5)


@pytest.mark.parametrize("resume_on", [1, 2])
def test_a_stopped_two_process_run_resumes_on_one_or_two(data, projection, tmp_path, resume_on):
    common = ["--data-root", data, "--projection", projection, *BASE]
    train(2, *common, "--out", tmp_path / "whole")
    train(2, *common, "--stop-at", "2", "--out", tmp_path / "cut")
    train(resume_on, "--resume", "--out", tmp_path / "cut")
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_w_is_fitted_once_on_rank_zero(data, tmp_path):
    done = train(2, "--data-root", data, *BASE, "--iters", "1", "--out", tmp_path / "r")
    assert done.stdout.count("fitting W by PCA") == 1
    assert os.path.exists(tmp_path / "r" / "projection.npz")


def test_a_failing_process_stops_every_process_with_one_line(data, projection, tmp_path):
    """A corrupt image in process 1's share of batch 0: that process names the file, and mpiexec
    ends the run (no process hangs in a collective)."""
    root = tmp_path / "data"
    shutil.copytree(data, root)
    dataset = build_dataset("synthetic", str(root), "train")
    loader = DataLoader(dataset, 4, seed=0, num_workers=0, part=(1, 2))
    victim = dataset.image_path(int(loader.epoch_order(0)[2]))
    with open(victim, "r+b") as f:
        f.truncate(200)
    done = train(2, "--data-root", root, "--projection", projection, *BASE, "--out", tmp_path / "r",
                 expect=2)
    assert "error on process 1 of 2: " in done.stderr and os.path.basename(victim) in done.stderr


def test_missing_mpi4py_under_mpiexec_is_one_line(data, tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; sys.argv = ['train.py', '--out', %r]; "
            "import runpy; runpy.run_path('train.py', run_name='__main__')" % str(tmp_path / "r"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PMI_SIZE": "2"}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        'error: started by mpiexec, but mpi4py is missing: pip install -e ".[mpi]" (mpi4py and an MPI library)']


def test_a_bn_group_that_the_processes_cannot_keep_is_refused_before_any_work(data, tmp_path):
    done = train(4, "--data-root", data, *BASE, "--batch-size", "8", "--bn-group", "4",
                 "--out", tmp_path / "r", expect=2)
    assert done.stderr.strip().splitlines() == [
        "error: this run's batch norm takes its statistics over 4 images (--bn-group), but each "
        "of the 4 processes would hold 2: run on 1, 2 processes"]
    assert "fitting W" not in done.stdout and not os.path.exists(tmp_path / "r")
