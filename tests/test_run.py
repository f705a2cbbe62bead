"""tinyseg.settings (TrainSettings) and tinyseg.run (the run folder, the resume rules), and the
command lines' backend setup (tinyseg.cli), without training (the loop: tests/test_cli.py)."""
import argparse
import json

import numpy as np
import pytest

from tinyseg.backend import device_name
from tinyseg.cli import add_backend_arguments, setup_backend
from tinyseg.config import config, using_config
from tinyseg.run import Run, TrainingError, read_run_settings
from tinyseg.settings import RESUMABLE, TrainSettings


def test_settings_from_a_dict_keep_unknown_keys_and_default_the_missing():
    settings = TrainSettings.from_dict({"iters": 7, "w_source": "pca", "fuse": []})
    assert settings.iters == 7 and settings.fuse == [] and settings.crop == TrainSettings().crop
    assert settings.extra == {"w_source": "pca"}
    flat = settings.as_dict()
    assert flat["w_source"] == "pca" and "extra" not in flat
    assert TrainSettings.from_dict(flat) == settings


@pytest.mark.parametrize("changes, message", [
    (dict(crop=0), "--crop must be >= 1"),
    (dict(lr=float("inf")), "--lr must be a positive number"),
    (dict(momentum=1.0), "--momentum must be in [0, 1)"),
    (dict(scale_range=(2.0, 1.0)), "--scale-min and --scale-max"),
    (dict(max_memory=0.0), "--max-memory must be a positive number"),
    (dict(projection="missing.npz"), "--projection missing.npz: no such file"),
])
def test_check_names_the_option(changes, message):
    TrainSettings().check()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrainSettings(**changes).check()


def test_a_new_run_refuses_a_used_folder_unless_overwrite(tmp_path):
    run = Run(str(tmp_path / "r"))
    run.check_new(overwrite=False)  # nothing there yet
    run.start(TrainSettings(out=run.folder, iters=3))
    (tmp_path / "r" / "last.npz").write_bytes(b"old")
    with pytest.raises(TrainingError, match="already holds a run"):
        run.check_new(overwrite=False)
    run.start(TrainSettings(out=run.folder, iters=4, overwrite=True))
    assert run.existing() == ["config.json"]  # the old run's files are gone
    assert json.loads((tmp_path / "r" / "config.json").read_text())["iters"] == 4


def test_resume_takes_the_saved_settings_and_only_the_resumable_options_given(tmp_path, capsys):
    run = Run(str(tmp_path / "r"))
    run.start(TrainSettings(out=run.folder, lr=0.5, iters=4, impl="reference", stop_at=2))
    requested = TrainSettings(out=run.folder, lr=0.1, iters=6, impl="fast", workers=1, stop_at=5)
    given = {"resume", "out", "lr", "iters", "impl", "stop_at"}
    settings = run.resumed(requested, given)
    assert (settings.lr, settings.iters, settings.impl) == (0.5, 6, "fast")
    assert settings.workers == TrainSettings().workers  # not given: the saved value
    assert settings.resume and settings.stop_at == 5
    printed = capsys.readouterr().out
    assert "ignored: --lr" in printed and "--iters 6" in printed and "--impl" not in printed
    run.start(settings)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["iters"] == 6 and saved["impl"] == "fast"
    assert saved["resume"] is False and saved["stop_at"] is None  # this invocation's only
    assert {"impl", "cuda_kernels", "backend"} <= RESUMABLE


def test_a_config_json_of_the_older_format_resumes(tmp_path):
    """Written before impl and cuda_kernels existed, with a key the trainer does not know."""
    folder = tmp_path / "r"
    folder.mkdir()
    old = dict(TrainSettings(out=str(folder)).as_dict(), scale_range=[0.5, 2.0], w_source="pca")
    del old["impl"], old["cuda_kernels"]
    (folder / "config.json").write_text(json.dumps(old))
    run = Run(str(folder))
    settings = run.resumed(TrainSettings(out=str(folder)), {"resume", "out"})
    assert settings.impl == config.impl and settings.extra == {"w_source": "pca"}
    run.start(settings)
    assert json.loads((folder / "config.json").read_text())["w_source"] == "pca"
    with pytest.raises(TrainingError, match="cannot resume"):
        Run(str(tmp_path / "elsewhere")).read_settings()


def test_read_run_settings_finds_config_json_beside_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "voc"}))
    assert read_run_settings(str(tmp_path / "best.npz")) == {"dataset": "voc"}
    assert read_run_settings(str(tmp_path / "nowhere" / "best.npz")) == {}


def test_setup_backend_sets_the_switches():
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    with using_config(impl=config.impl, cuda_kernels=config.cuda_kernels):  # restored after
        xp = setup_backend(parser.parse_args(["--impl", "reference"]))
        assert xp is np and device_name(xp) == "cpu"
        assert config.impl == "reference" and config.cuda_kernels is False
    args = parser.parse_args([])
    assert (args.backend, args.impl) == ("numpy", config.impl)
