"""A run folder (train.py's `--out`): its settings, checkpoints and log, and the resume rules.

    config.json      the settings (tinyseg/settings.py), so that `--resume` and evaluate.py
                     rebuild the same run
    projection.npz   DUpsampling's W and mean, fitted by PCA on the training masks (cached)
    last.npz         the latest checkpoint (model, momentum buffers, iteration), written atomically
    best.npz         the checkpoint with the best validation mIoU so far
    log.jsonl        one JSON object per logged iteration or validation
    curves.png       loss, mIoU and T over iterations (when matplotlib is installed)

A checkpoint is one .npz: the model's state ("model.*"), the optimizer's ("optim.*") and a JSON
"meta" holding the iteration and the network's config (enough to rebuild it), plus extras
such as best_miou and class_names.
"""
import dataclasses
import json
import os

import numpy as np

from . import nn
from .backend import to_numpy
from .models import build_model
from .settings import RESUMABLE, TrainSettings, flag


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, or a resume that does not match); the message says why."""


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path, model, optimizer, iteration, extra=None):
    """Model state ("model.*"), momentum ("optim.*") and a JSON "meta" in one .npz, atomically."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    meta = dict(iteration=iteration, config=model.config, **(extra or {}))
    state["meta"] = np.array(json.dumps(meta))
    nn.save(state, path)


def save_weights(model, path):
    """A checkpoint of `model` alone (iteration 0, no optimizer state), which evaluate.py and
    predict.py read like train.py's (e.g. an imported model: python -m tinyseg.tflite)."""
    state = {f"model.{k}": to_numpy(v) for k, v in model.state_dict().items()}
    state["meta"] = np.array(json.dumps(dict(iteration=0, config=model.config)))
    nn.save(state, path)


def load_checkpoint(path):
    """(model state, optimizer state, meta) from save_checkpoint's file, with clear errors."""
    state = nn.load(path)
    if "meta" not in state:
        raise ValueError(f"{path}: not a tinyseg checkpoint (no 'meta' entry)")
    meta = json.loads(str(state.pop("meta")))
    if not isinstance(meta, dict) or "config" not in meta or "iteration" not in meta:
        raise ValueError(f"{path}: not a tinyseg checkpoint (its 'meta' has no config/iteration)")
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    optim_state = {k[len("optim."):]: v for k, v in state.items() if k.startswith("optim.")}
    return model_state, optim_state, meta


def model_from_checkpoint(path):
    """Rebuild the network saved in a checkpoint and load its weights (strict)."""
    model_state, _, meta = load_checkpoint(path)
    try:
        model = build_model(**meta["config"])
        model.load_state_dict(model_state)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None
    return model, meta


# ---------------------------------------------------------------- the log
class JsonLog:
    """Append-only JSON-lines log (one object per line), flushed at every write."""

    def __init__(self, path):
        self.file = open(path, "a")

    def write(self, **record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_log(path):
    """The records of a log.jsonl file (a truncated last line, from a crash, is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


# ---------------------------------------------------------------- the folder
class Run:
    """The files of one run folder, and the rules for starting and resuming a run in it."""

    FILES = ("config.json", "last.npz", "best.npz", "log.jsonl", "curves.png", "projection.npz")

    def __init__(self, folder):
        self.folder = folder
        self.config, self.projection = self.path("config.json"), self.path("projection.npz")
        self.last, self.best = self.path("last.npz"), self.path("best.npz")
        self.log, self.curves = self.path("log.jsonl"), self.path("curves.png")

    def path(self, name):
        return os.path.join(self.folder, name)

    def existing(self):
        """The names of the run files already in the folder."""
        return [name for name in self.FILES if os.path.exists(self.path(name))]

    def read_settings(self):
        """TrainSettings from config.json (a TrainingError when there is none)."""
        if not os.path.exists(self.config):
            raise TrainingError(f"cannot resume: {self.config} not found (is --out the run "
                                "folder?)")
        with open(self.config) as f:
            return TrainSettings.from_dict(json.load(f))

    def check_new(self, overwrite):
        """A TrainingError when the folder already holds a run and overwrite is False."""
        existing = self.existing()
        if existing and not overwrite:
            raise TrainingError(f"{self.folder} already holds a run ({', '.join(existing)}): "
                                "continue it with --resume, or start over with --overwrite")

    def resumed(self, requested, given):
        """The merge rule of --resume: the run's own settings (config.json), with the RESUMABLE
        ones of `requested` that were `given` on this command line; says what it ignores."""
        saved = self.read_settings()
        ignored = sorted(given - RESUMABLE - {"out", "overwrite"})
        if ignored:
            print("--resume continues the run with its own settings (config.json); ignored: "
                  + ", ".join(flag(k) for k in ignored), flush=True)
        if "iters" in given and requested.iters != saved.iters:
            print(f"--iters {requested.iters}: the run goes on to iteration {requested.iters} "
                  f"(was {saved.iters}); the poly learning rate is recomputed over the new total, "
                  f"lr(k) = lr (1 - k / {requested.iters})^0.9, so it steps up where the run "
                  "resumes", flush=True)
        changes = {name: getattr(requested, name) for name in RESUMABLE & given}
        # this invocation's only; the folder named now (a run folder may have been moved)
        changes.update(resume=True, stop_at=requested.stop_at, out=self.folder)
        return dataclasses.replace(saved, **changes)

    def start(self, settings):
        """Write config.json; for a new run with --overwrite, first remove the old run's files
        (nothing of it may mix with the new one). A resumed run's config.json is saved as the
        next --resume should find it: without this invocation's resume and stop_at."""
        if settings.resume:
            saved = dict(settings.as_dict(), resume=False, stop_at=None)
        else:
            self.check_new(settings.overwrite)
            for name in self.existing():
                os.remove(self.path(name))
            os.makedirs(self.folder, exist_ok=True)
            saved = settings.as_dict()
        with open(self.config, "w") as f:
            json.dump(saved, f, indent=1)

    def redraw_curves(self):
        """Redraw curves.png from the log (at each validation, on Ctrl-C); quiet without
        matplotlib."""
        from .plot import plot_curves

        try:
            plot_curves(self.log, self.curves)
        except RuntimeError:
            pass  # no matplotlib: train.py says so once, at the end
        except Exception as error:  # a picture must never stop a run (full disk, read-only, ...)
            print(f"warning: curves.png not redrawn: {error}", flush=True)


def read_run_settings(checkpoint):
    """The settings of the run a checkpoint belongs to (config.json beside it) as a dict, or {}
    when there is none or it cannot be read (evaluate.py and predict.py take defaults from it)."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
