"""train.py and evaluate.py end to end, through the real command lines, on tiny generated data."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tinyseg import nn
from tinyseg.data import ensure_synthetic
from tinyseg.training import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "tiny_resnet", "--output-stride", "8", "--batch-size", "2", "--crop", "48", "--workers", "1",
        "--log-every", "1", "--val-images", "2"]


def run(script, *args, timeout=300, env=None):
    """Run a command-line script of the repository; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small generated VOC-layout dataset (12 train, 3 val images of 64x48)."""
    return ensure_synthetic(str(tmp_path_factory.mktemp("synthetic")), num_train=12, num_val=3,
                            size=(64, 48), seed=3)


@pytest.fixture(scope="module")
def projection(tiny_data, tmp_path_factory):
    """W fitted once by `python -m tinyseg.pca`, given to the runs that do not test the fit."""
    path = tmp_path_factory.mktemp("pca") / "W.npz"
    result = subprocess.run([sys.executable, "-m", "tinyseg.pca", "--dataset", "synthetic",
                             "--data-root", tiny_data, "--split", "train", "--ratio", "8",
                             "--dim", "64", "--out", path], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A finished 4-iteration run, shared by the evaluation tests."""
    out = tmp_path_factory.mktemp("run")
    result = run("train.py", "--data-root", tiny_data, "--out", out, "--iters", 4,
                 "--val-every", 2, "--ckpt-every", 2, *TINY)
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_writes_the_run_folder(trained_run):
    out, result = trained_run
    for name in ("config.json", "projection.npz", "last.npz", "best.npz", "log.jsonl", "curves.png"):
        assert (out / name).exists(), name
    assert "iter 4/4 loss" in result.stdout and " T " in result.stdout and "ETA" in result.stdout
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert sum("val_miou" in r for r in records) == 2
    per_class = [r["val_iou"] for r in records if "val_miou" in r][-1]
    assert len(per_class) == 21 and "background" in per_class  # per-class IoU in the log
    _, _, meta = load_checkpoint(str(out / "last.npz"))
    assert meta["iteration"] == 4 and meta["config"]["backbone"] == "tiny_resnet"
    Image.open(out / "curves.png").verify()


def test_plot_command_redraws_a_runs_curves(trained_run, tmp_path):
    out, _ = trained_run
    drawn = subprocess.run([sys.executable, "-m", "tinyseg.plot", str(out), "--out",
                            str(tmp_path / "c.png")], capture_output=True, text=True, cwd=REPO)
    assert drawn.returncode == 0, drawn.stderr
    Image.open(tmp_path / "c.png").verify()
    missing = subprocess.run([sys.executable, "-m", "tinyseg.plot", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "log.jsonl not found" in missing.stderr


def test_evaluate_classes_scores_a_subset(trained_run, tmp_path):
    out, _ = trained_run
    result = run("evaluate.py", "--checkpoint", out / "last.npz", "--classes", "background,cat",
                 "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    assert "mIoU over 2 classes (background,cat)" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    ious = [summary["per_class_iou"][n] for n in ("background", "cat") if summary["per_class_iou"][n] is not None]
    assert summary["miou_classes"] == pytest.approx(np.mean(ious))
    bad = run("evaluate.py", "--checkpoint", out / "last.npz", "--classes", "kat")
    one_line_error(bad, "--classes: unknown class name(s) ['kat']")


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_data, projection, tmp_path):
    args = ["--data-root", tiny_data, "--projection", projection, "--iters", 6, "--val-every", 0, "--ckpt-every", 100, *TINY]
    # One BLAS thread, as a precaution: the test is about the state a resume restores, not
    # about how OpenBLAS splits a GEMM between threads.
    single = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    straight = run("train.py", "--out", tmp_path / "straight", *args, env=single)
    assert straight.returncode == 0, straight.stderr
    first = run("train.py", "--out", tmp_path / "split", "--stop-at", 3, *args, env=single)
    assert first.returncode == 0, first.stderr
    assert load_checkpoint(str(tmp_path / "split" / "last.npz"))[2]["iteration"] == 3
    second = run("train.py", "--out", tmp_path / "split", "--resume", env=single)
    assert second.returncode == 0, second.stderr
    assert "resumed" in second.stdout
    a = nn.load(tmp_path / "straight" / "last.npz")
    b = nn.load(tmp_path / "split" / "last.npz")
    assert set(a) == set(b)
    # Bit for bit: the same seed gives the same run (the backward pass sums in a fixed order),
    # so a state that was not restored exactly (momentum, BN statistics, T, the data order)
    # shows as any difference at all.
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines())
               if "loss" in r] for run in ("straight", "split")]
    assert losses[0] == losses[1]


def test_impl_reference_trains_and_resume_may_switch_it(tiny_data, projection, tmp_path):
    """--impl only changes which version of the ops runs: a run records it, --resume may change
    it, evaluate.py takes it too."""
    out = tmp_path / "r"
    first = run("train.py", "--data-root", tiny_data, "--projection", projection, "--out", out,
                "--iters", 2, "--stop-at", 1, "--val-every", 0, "--impl", "reference", *TINY)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "config.json").read_text())["impl"] == "reference"
    resumed = run("train.py", "--out", out, "--resume", "--impl", "fast")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "ignored" not in resumed.stdout
    assert json.loads((out / "config.json").read_text())["impl"] == "fast"
    assert load_checkpoint(str(out / "last.npz"))[2]["iteration"] == 2
    scored = run("evaluate.py", "--checkpoint", out / "last.npz", "--max-images", 1,
                 "--impl", "reference")
    assert scored.returncode == 0 and "mIoU" in scored.stdout, scored.stderr


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_data, projection, tmp_path):
    out = tmp_path / "killed"
    args = ["--data-root", tiny_data, "--out", out, "--projection", projection,
            "--iters", 400, "--val-every", 0, "--ckpt-every", 1, *TINY]
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), *map(str, args)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = process.stdout.readline()
            if line.startswith("iter 3/"):
                break
        else:
            pytest.fail("training did not reach iteration 3")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    _, _, meta = load_checkpoint(str(out / "last.npz"))  # intact despite the kill
    assert meta["iteration"] >= 2
    resumed = run("train.py", "--out", out, "--resume", "--stop-at", meta["iteration"] + 2)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(str(out / "last.npz"))[2]["iteration"] == meta["iteration"] + 2


def test_evaluate_prints_miou_and_writes_json_and_pictures(trained_run, tmp_path):
    out, _ = trained_run
    result = run("evaluate.py", "--checkpoint", out / "best.npz", "--split", "val",
                 "--scales", "0.75,1.0", "--flip", "--save-dir", tmp_path / "pictures",
                 "--json", tmp_path / "summary.json")
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and "pixel acc." in result.stdout and "aeroplane" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_images"] == 3 and 0 <= summary["miou"] <= 1
    assert summary["scales"] == [0.75, 1.0] and summary["flip"] is True
    assert len(summary["per_class_iou"]) == 21
    pictures = sorted(os.listdir(tmp_path / "pictures"))
    assert len(pictures) == 6  # a prediction and a panel per image
    for name in pictures:
        with Image.open(tmp_path / "pictures" / name) as picture:
            picture.verify()
    with Image.open(tmp_path / "pictures" / "val_00000_panel.png") as panel:
        legend_rows, rest = divmod(panel.size[1] - 48 - 4, 14)  # the legend strip below the panels
        assert panel.size[0] == 3 * 64 and legend_rows >= 1 and rest == 0
    with Image.open(tmp_path / "pictures" / "val_00000.png") as prediction:
        assert prediction.mode == "P" and prediction.size == (64, 48)


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_data_root_is_one_clear_line(tmp_path):
    result = run("train.py", "--dataset", "voc", "--data-root", tmp_path / "nowhere", "--out", tmp_path / "r")
    one_line_error(result, "nowhere")


def test_missing_split_file_is_one_clear_line(tiny_data, tmp_path):
    result = run("train.py", "--data-root", tiny_data, "--split", "nosuchsplit", "--out", tmp_path / "r", *TINY)
    one_line_error(result, "nosuchsplit.txt")


def copy_dataset(source, target):
    import shutil
    shutil.copytree(source, target)
    return target / "VOCdevkit" / "VOC2012"


def test_corrupt_image_names_the_file(tiny_data, projection, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    image = voc / "JPEGImages" / "train_00000.jpg"
    image.write_bytes(image.read_bytes()[:200])
    result = run("train.py", "--data-root", tmp_path / "data", "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 20,
                 "--val-every", 0, *TINY)
    one_line_error(result, "train_00000.jpg")


def test_bad_mask_values_name_the_file(tiny_data, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    mask_path = voc / "SegmentationClass" / "train_00001.png"
    with Image.open(mask_path) as mask:
        values = np.array(mask)
        palette = mask.getpalette()
    values[5, 5] = 40
    broken = Image.fromarray(values, mode="P")
    broken.putpalette(palette)
    broken.save(mask_path)
    result = run("train.py", "--data-root", tmp_path / "data", "--out", tmp_path / "r", "--iters", 20,
                 "--val-every", 0, *TINY)
    one_line_error(result, "train_00001.png", "40")


def test_image_mask_size_mismatch_names_both_files(tiny_data, projection, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    image_path = voc / "JPEGImages" / "train_00002.jpg"
    with Image.open(image_path) as image:
        image.resize((30, 20)).save(image_path)
    result = run("train.py", "--data-root", tmp_path / "data", "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 20,
                 "--val-every", 0, *TINY)
    one_line_error(result, "train_00002.jpg", "train_00002.png")


def test_a_photo_turned_by_exif_against_its_mask_says_so(tiny_data, projection, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    image_path = voc / "JPEGImages" / "train_00002.jpg"
    with Image.open(image_path) as image:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored 48x64, shown 64x48: a mask drawn on the shown photo
        image.transpose(Image.Transpose.ROTATE_90).save(image_path, exif=exif)
    result = run("train.py", "--data-root", tmp_path / "data", "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 20, "--val-every", 0, *TINY)
    one_line_error(result, "train_00002.jpg", "EXIF orientation")


def test_a_byte_order_mark_in_a_split_file_is_ignored(tiny_data, projection, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    result = run("train.py", "--data-root", tmp_path / "data", "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 1, "--val-every", 0, *TINY)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args, message", [
    (["--crop", "0"], "--crop must be >= 1"),
    (["--dim", "-3"], "--dim must be >= 1"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "inf"], "--lr must be a positive number"),
    (["--momentum", "nan"], "--momentum must be in [0, 1)"),
    (["--scale-min", "2", "--scale-max", "1"], "--scale-min and --scale-max"),
    (["--projection", "missing.npz"], "--projection missing.npz: no such file"),
])
def test_bad_options_stop_before_any_work(tiny_data, tmp_path, args, message):
    result = run("train.py", "--data-root", tiny_data, "--out", tmp_path / "r", *TINY, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_a_data_root_that_is_a_file_says_so(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    result = run("train.py", "--dataset", "voc", "--data-root", tmp_path / "data.zip",
                 "--out", tmp_path / "r")
    one_line_error(result, "data.zip is a file, not a folder")


@pytest.mark.parametrize("args, message", [
    (["--max-images", "0"], "--max-images must be >= 1"),
    (["--scales", "abc"], "--scales must be comma-separated positive numbers"),
    (["--json", "/proc/summary.json"], "--json /proc/summary.json: cannot write there"),
])
def test_evaluate_bad_options_are_one_line_before_any_work(trained_run, args, message):
    out, _ = trained_run
    result = run("evaluate.py", "--checkpoint", out / "last.npz", *args)
    one_line_error(result, message)


def test_empty_split_is_one_clear_line(tiny_data, tmp_path):
    voc = copy_dataset(tiny_data, tmp_path / "data")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("")
    result = run("train.py", "--data-root", tmp_path / "data", "--out", tmp_path / "r", *TINY)
    one_line_error(result, "train.txt")


def test_checkpoint_of_another_architecture_is_refused(trained_run, tmp_path):
    out, _ = trained_run
    state = nn.load(out / "last.npz")
    meta = json.loads(str(state["meta"]))
    meta["config"]["head_channels"] = 16  # a narrower ASPP than the weights were trained for
    state["meta"] = np.array(json.dumps(meta))
    nn.save(state, tmp_path / "other.npz")
    result = run("evaluate.py", "--checkpoint", tmp_path / "other.npz", "--data-root", out, "--dataset", "voc")
    one_line_error(result, "other.npz", "mis-shaped")
    result = run("evaluate.py", "--checkpoint", out / "projection.npz")
    one_line_error(result, "not a tinyseg checkpoint")


def test_cupy_backend_without_cupy_or_gpu_is_one_clear_line(tmp_path):
    # No GPU visible (here: none at all; on a GPU machine: hidden), so CuPy is missing or sees none.
    result = run("train.py", "--backend", "cupy", "--out", tmp_path / "r",
                 env={"CUDA_VISIBLE_DEVICES": ""})
    one_line_error(result, "--backend cupy needs")


def test_diverging_loss_stops_with_a_clear_message(tiny_data, projection, tmp_path):
    result = run("train.py", "--data-root", tiny_data, "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 50,
                 "--lr", "1e12", "--val-every", 0, "--ckpt-every", 1, *TINY)
    one_line_error(result, "loss became", f"the last checkpoint is {tmp_path / 'r' / 'last.npz'}")
    _, _, meta = load_checkpoint(str(tmp_path / "r" / "last.npz"))
    assert meta["iteration"] >= 1


def test_diverging_before_any_checkpoint_says_nothing_was_kept(tiny_data, projection, tmp_path):
    result = run("train.py", "--data-root", tiny_data, "--projection", projection,
                 "--out", tmp_path / "r", "--iters", 50,
                 "--lr", "1e12", "--val-every", 0, "--ckpt-every", 100, *TINY)
    one_line_error(result, "loss became", "no checkpoint was written yet", "--lr 1e+11")
    assert not (tmp_path / "r" / "last.npz").exists()


def test_an_existing_run_is_not_overwritten_without_overwrite(trained_run, tiny_data, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    before = {name: (out / name).read_bytes() for name in ("last.npz", "log.jsonl", "config.json")}
    again = run("train.py", "--data-root", tiny_data, "--out", out, "--iters", 4, *TINY)
    one_line_error(again, "already holds a run", "--resume", "--overwrite")
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing touched
    fresh = run("train.py", "--data-root", tiny_data, "--out", out, "--iters", 2, "--overwrite",
                "--val-every", 0, *TINY)
    assert fresh.returncode == 0, fresh.stderr
    iterations = [json.loads(line)["iter"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert iterations == [1, 2]  # the old run's log is gone, not appended to
    assert not (out / "best.npz").exists()


def test_resume_of_a_finished_run_and_extending_it(trained_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    finished = run("train.py", "--out", out, "--resume", "--lr", "0.5")
    assert finished.returncode == 0, finished.stderr
    assert "nothing to train" in finished.stdout and "nan" not in finished.stdout
    assert "ignored: --lr" in finished.stdout
    extended = run("train.py", "--out", out, "--resume", "--iters", 6)
    assert extended.returncode == 0, extended.stderr
    assert "--iters 6" in extended.stdout and "poly" in extended.stdout
    _, _, meta = load_checkpoint(str(out / "last.npz"))
    assert meta["iteration"] == 6
    assert json.loads((out / "config.json").read_text())["iters"] == 6  # the next --resume knows


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_resume_continues(tiny_data, projection, tmp_path,
                                                                   stop_signal):
    out = tmp_path / "interrupted"
    args = ["--data-root", tiny_data, "--out", out, "--projection", projection,
            "--iters", 400, "--val-every", 0, "--ckpt-every", 1000, *TINY]
    # A shell that starts jobs in the background makes them ignore SIGINT, and so would the
    # training process inherit it: give it the default disposition, as a terminal would.
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *map(str, args)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if line.startswith("iter 2/"):
                process.send_signal(stop_signal)
                break
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 130, output
    assert "saved" in output and "--resume" in output
    Image.open(out / "curves.png").verify()  # redrawn on the interrupt
    _, _, meta = load_checkpoint(str(out / "last.npz"))  # no periodic checkpoint was due
    assert meta["iteration"] >= 2
    resumed = run("train.py", "--out", out, "--resume", "--stop-at", meta["iteration"] + 1)
    assert resumed.returncode == 0, resumed.stderr


def test_pretrained_backbone_weights_are_loaded(tiny_data, projection, tmp_path):
    from tinyseg.models import build_backbone
    nn.init.manual_seed(7)
    backbone = build_backbone("tiny_resnet", output_stride=8)
    weights = tmp_path / "backbone.npz"
    nn.save(backbone.state_dict(), weights)
    out = tmp_path / "pretrained"
    result = run("train.py", "--data-root", tiny_data, "--out", out, "--projection", projection,
                 "--pretrained", weights, "--iters", 1, "--val-every", 0, "--lr", 1e-30, *TINY)
    assert result.returncode == 0, result.stderr
    state, _, _ = load_checkpoint(str(out / "last.npz"))
    np.testing.assert_array_equal(state["backbone.conv1_1.weight"], backbone.conv1_1.weight.data)
    broken = run("train.py", "--data-root", tiny_data, "--out", tmp_path / "broken",
                 "--projection", projection, "--pretrained", tmp_path / "missing.npz", *TINY)
    one_line_error(broken, "missing.npz")


def test_unwritable_run_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run("train.py", "--out", blocker / "run")
    one_line_error(result, "a_file")


def test_presets_list_and_apply_as_overridable_defaults():
    sys.path.insert(0, REPO)
    import train

    listed = run("train.py", "--preset", "list")
    assert listed.returncode == 0 and "voc-resnet50:" in listed.stdout and "voc-xception65:" in listed.stdout
    assert "--separable --iters" in listed.stdout  # flags print as they are typed
    args = train.parse_args(["--preset", "voc-xception65", "--crop", "64", "--data-root", "x"])
    assert (args.model, args.dim, args.separable, args.weight_decay) == ("xception65", 128, True, 4e-5)
    assert args.crop == 64 and "crop" in args.given and "model" not in args.given


def test_every_train_option_explains_itself_and_every_cli_shows_defaults():
    sys.path.insert(0, REPO)
    import train

    for action in train.build_parser()._actions:
        assert action.help, action.option_strings
    for command in (["train.py"], ["evaluate.py"], ["predict.py"]):
        shown = run(*command, "--help")
        assert shown.returncode == 0 and "(default:" in shown.stdout, command
    for module in ("tinyseg.pca", "tinyseg.flops"):
        shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                               text=True, cwd=REPO)
        assert shown.returncode == 0 and "(default:" in shown.stdout, module


@pytest.mark.parametrize("fuse", [["conv1_3,b1u1c3"], ["conv1_3", "b1u1c3"]], ids=["commas", "spaces"])
def test_fuse_takes_one_syntax_in_train_and_flops(tiny_data, projection, tmp_path, fuse):
    from tinyseg.flops import main as flops_main

    assert flops_main(["--model", "tiny_resnet", "--size", "64", "--fuse", *fuse]) == 0
    out = tmp_path / "r"
    result = run("train.py", "--data-root", tiny_data, "--projection", projection, "--out", out,
                 "--iters", 1, "--val-every", 0, "--separable", *TINY, "--fuse", *fuse)
    assert result.returncode == 0, result.stderr
    _, _, meta = load_checkpoint(str(out / "last.npz"))
    assert meta["config"]["fuse"] == ["conv1_3", "b1u1c3"] and meta["config"]["separable"] is True


def test_pretrained_torchvision_file_picks_its_stem_and_layout(tiny_data, projection, tmp_path):
    """A torchvision-format ResNet .pth (7x7 stem, torchvision's names) made here: train.py
    builds the standard stem in torchvision's layout for it, and loads it exactly."""
    torch = pytest.importorskip("torch")
    from tinyseg.models import build_backbone
    nn.init.manual_seed(11)
    backbone = build_backbone("tiny_resnet", output_stride=8, stem="standard", layout="torchvision")
    state = {k: torch.from_numpy(np.array(v)) for k, v in backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)  # as torchvision's
    torch.save(state, tmp_path / "resnet.pth")
    for extra, layout in (([], "torchvision"), (["--layout", "deeplab"], "deeplab")):
        out = tmp_path / f"run-{layout}"
        result = run("train.py", "--data-root", tiny_data, "--out", out, "--projection", projection,
                     "--pretrained", tmp_path / "resnet.pth", "--iters", 1, "--val-every", 0,
                     "--lr", 1e-30, *TINY, *extra)
        assert result.returncode == 0, result.stderr
        model_state, _, meta = load_checkpoint(str(out / "last.npz"))
        assert (meta["config"]["stem"], meta["config"]["layout"]) == ("standard", layout)
        np.testing.assert_array_equal(model_state["backbone.conv1.weight"], backbone.conv1.weight.data)


def test_a_run_that_would_not_fit_in_memory_is_refused_before_training(tiny_data, projection, tmp_path):
    result = run("train.py", "--data-root", tiny_data, "--projection", projection, "--out", tmp_path / "r",
                 "--max-memory", "0.001", *TINY)
    one_line_error(result, "a training step needs about", "MiB", "lower --crop")
    assert not (tmp_path / "r").exists()


def test_ctrl_c_before_training_says_nothing_was_saved(tiny_data, tmp_path):
    """Interrupted while W is being fitted (no --projection: the fit runs first)."""
    out = tmp_path / "r"
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--data-root", str(tiny_data),
                                "--out", str(out), *map(str, TINY)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if line.startswith("run folder:"):
                process.send_signal(signal.SIGINT)
                break
        _, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "nothing was saved" in errors and not out.exists()  # no half-made run left
