"""The training loop of the paper's protocol, with checkpoints that survive a crash.

One iteration:  batch k -> forward -> loss -> backward -> SGD step with the poly learning rate.

Everything a run writes lives in its folder (`--out`):
    config.json      the settings, so that `--resume` and evaluate.py rebuild the same run
    projection.npz   DUpsampling's W and mean, fitted by PCA on the training masks (cached)
    last.npz         the latest checkpoint (model, momentum buffers, iteration), written atomically
    best.npz         the checkpoint with the best validation mIoU so far
    log.jsonl        one JSON object per logged iteration or validation
    curves.png       loss, mIoU and T over iterations (when matplotlib is installed)

A resumed run continues from last.npz and gives the same numbers as an uninterrupted one, bit
for bit on the same machine and thread count: the network is initialised from the seed,
batch k depends only on (seed, k), the backward pass sums gradients in a fixed order
(autograd.py), and the checkpoint holds every other piece of state (weights, BN statistics,
momentum, T). Two runs with the same seed are likewise identical.
"""
import json
import math
import os
import time
from collections import deque

import numpy as np

from . import nn
from .autograd import Tensor
from .backend import to_numpy
from .data import DataLoader, TrainTransform, build_dataset
from .evaluation import Progress, evaluate, format_seconds
from .memory import check_step_memory
from .models import build_model
from .optim import SGD, PolyLR
from .pca import fit_projection, load_projection, save_projection


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


# ---------------------------------------------------------------- W by PCA, cached
def prepare_projection(model, dataset, ratio, dim, path, void="nearest"):
    """Load W and mean from `path`, or fit them by PCA on the dataset's masks and save them."""
    expected = dict(ratio=ratio, num_classes=dataset.num_classes, dim=dim)
    if os.path.exists(path):
        W, mean, meta = load_projection(path)
        found = {k: meta.get(k) for k in expected}
        if found != expected:
            raise TrainingError(f"{path} was fitted for {found}, this run needs {expected}; "
                                "delete it or pass another --projection")
    else:
        print(f"fitting W by PCA on {len(dataset)} {dataset.name} {dataset.split} masks "
              f"(ratio {ratio}, dim {dim}) ...", flush=True)
        progress = Progress("PCA")
        masks = (dataset.load_mask(i) for i in range(len(dataset)))
        W, mean, meta = fit_projection(masks, dataset.num_classes, ratio, dim, void=void,
                                       progress=lambda done: progress(done, len(dataset)))
        meta.update(dataset=dataset.name, split=dataset.split)
        save_projection(path, W, mean, meta)
        explained = float(np.sum(meta["explained_variance"]) / meta["total_variance"])
        print(f"W: {W.shape}, {100 * explained:.2f}% of the variance explained -> {path}", flush=True)
    model.set_projection(W, mean)


# ---------------------------------------------------------------- the loop
class RecentRate:
    """Images per second over the last `window` log intervals, not since start-up (a slow first
    batch, W's fit or a validation would otherwise skew the rate and the ETA for the whole run)."""

    def __init__(self, window=10, start=None):
        self.points = deque([(time.time() if start is None else start, 0)], maxlen=window + 1)

    def update(self, now, images_seen):
        self.points.append((now, images_seen))
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def diverged_message(loss, iteration, last_path, settings):
    """Why a run stopped on a non-finite loss, what was kept, and what to try."""
    if os.path.exists(last_path):
        kept = f"the last checkpoint is {last_path} (continue from it with --resume and a lower --lr)"
    else:
        kept = (f"no checkpoint was written yet (the first comes at iteration "
                f"{settings['ckpt_every']})")
    if iteration < 20:
        advice = (f"so early, the learning rate is the usual cause: try --lr "
                  f"{settings['lr'] / 10:g} (now {settings['lr']:g})")
    else:
        advice = (f"after {iteration} good iterations: try a lower --lr (now {settings['lr']:g}), "
                  "and check the data (a mask with unexpected values, an empty crop)")
    return f"loss became {loss} at iteration {iteration}; stopped: {kept}; {advice}"


class JsonLog:
    """Append-only JSON-lines log (one object per line), flushed at every write."""

    def __init__(self, path):
        self.file = open(path, "a")

    def write(self, **record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def backbone_options(settings):
    """build_model's backbone arguments: the name, and for a ResNet the stem and layout, from
    --stem/--layout where given, else from the --pretrained file (weights.resnet_options)."""
    options = {"backbone": settings["model"]}
    if settings["model"].startswith(("resnet", "tiny_resnet", "small_resnet")):
        if settings.get("pretrained"):
            from .weights import resnet_options
            options.update(resnet_options(settings["pretrained"]))
        options.update({k: settings[k] for k in ("stem", "layout") if settings.get(k)})
    return options


def train(settings, xp, customize=None):
    """Run (or resume) the training described by `settings` (a dict, see train.py's options).

    customize(model), if given, is called on the new network before W is set and the weights
    are loaded (experiments/ uses it to put another upsampling in DUpsample's place)."""
    out = settings["out"]
    os.makedirs(out, exist_ok=True)
    values = settings.get("mask_values")
    dataset = build_dataset(settings["dataset"], settings["data_root"], settings["split"],
                            mask_values=values)
    val_dataset = (build_dataset(settings["dataset"], settings["data_root"], settings["val_split"],
                                 mask_values=values) if settings["val_every"] > 0 else None)

    nn.init.manual_seed(settings["seed"])
    model = build_model(**backbone_options(settings), decoder=settings["decoder"],
                        num_classes=dataset.num_classes, output_stride=settings["output_stride"],
                        fuse=settings["fuse"], dim=settings["dim"], loss=settings["loss"],
                        temperature=settings["temperature"], pretrained=settings["pretrained"],
                        trainable_projection=settings.get("trainable_projection", False),
                        separable=settings.get("separable", False))
    if customize is not None:
        customize(model)
    if model.needs_projection:
        path = settings["projection"] or os.path.join(out, "projection.npz")
        prepare_projection(model, dataset, settings["output_stride"], settings["dim"], path)
    model.to("cuda" if xp is not np else "cpu")
    limit = settings.get("max_memory")  # GiB
    check_step_memory(model, settings, xp, None if limit is None else int(limit * 2**30))
    optimizer = SGD(model.param_groups(settings["weight_decay"]), lr=settings["lr"],
                    momentum=settings["momentum"])
    schedule = PolyLR(optimizer, settings["iters"])

    start, best_miou = 0, -1.0
    last_path, best_path = os.path.join(out, "last.npz"), os.path.join(out, "best.npz")
    if settings["resume"]:
        model_state, optim_state, meta = load_checkpoint(last_path)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        start, best_miou = meta["iteration"], meta.get("best_miou", -1.0)
        print(f"resumed {last_path} at iteration {start}", flush=True)

    loader = DataLoader(dataset, settings["batch_size"], shuffle=True, seed=settings["seed"],
                        transform=TrainTransform(settings["crop"], settings["scale_range"]),
                        num_workers=settings["workers"], drop_last=True)
    if start == 0 and str(settings.get("pretrained") or "").lower().endswith(".tflite"):
        # batch norm was folded into the file's convs: re-express it with the statistics of
        # batch 0, so that training mode starts from the pretrained function (tinyseg.tflite)
        from .tflite import calibrate_batch_norm
        images, _ = loader.load_batch(0)
        calibrate_batch_norm(model.backbone, xp.asarray(images))
    log = JsonLog(os.path.join(out, "log.jsonl"))
    iteration = start
    loss_value = float("nan")

    def checkpoint(path, **extra):
        save_checkpoint(path, model, optimizer, iteration,
                        dict(best_miou=best_miou, class_names=dataset.class_names, **extra))

    rate_meter, images_seen = RecentRate(), 0
    model.train()
    try:
        stop = min(settings["iters"], settings.get("stop_at") or settings["iters"])
        for images, masks in loader.iterate(start, stop):
            lr = schedule.step(iteration)
            loss = model.loss(Tensor(xp.asarray(images)), xp.asarray(masks))
            loss_value = float(loss.data)
            if not math.isfinite(loss_value):
                raise TrainingError(diverged_message(loss_value, iteration, last_path, settings))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            iteration += 1
            images_seen += len(images)

            if iteration % settings["log_every"] == 0 or iteration == settings["iters"]:
                rate = rate_meter.update(time.time(), images_seen)
                eta = (settings["iters"] - iteration) * settings["batch_size"] / max(rate, 1e-9)
                temperature = model.temperature
                t_text = f" T {temperature:.3f}" if temperature is not None else ""
                print(f"iter {iteration}/{settings['iters']} loss {loss_value:.4f}{t_text} "
                      f"lr {lr:.5f} {rate:.1f} img/s ETA {format_seconds(eta)}", flush=True)
                log.write(iter=iteration, loss=loss_value, lr=lr, T=temperature,
                          images_per_s=rate, time=time.time())
            if val_dataset is not None and (iteration % settings["val_every"] == 0
                                            or iteration == settings["iters"]):
                confusion = evaluate(model, val_dataset, xp, max_images=settings["val_images"])
                miou = confusion.miou()
                print(f"iter {iteration}: val mIoU {100 * miou:.2f}% pixel acc "
                      f"{100 * confusion.pixel_accuracy():.2f}%", flush=True)
                log.write(iter=iteration, val_miou=miou, val_pixel_acc=confusion.pixel_accuracy(),
                          val_iou={name: (None if iou != iou else float(iou)) for name, iou in
                                   zip(val_dataset.class_names, confusion.per_class_iou())})
                if miou > best_miou:
                    best_miou = miou
                    checkpoint(best_path, val_miou=miou)
                redraw_curves(out)
            if iteration % settings["ckpt_every"] == 0:
                checkpoint(last_path)
    except KeyboardInterrupt:
        checkpoint(last_path)
        log.close()
        redraw_curves(out)
        print(f"interrupted at iteration {iteration}: saved {last_path}; continue with --resume",
              flush=True)
        raise
    except TrainingError:
        log.close()
        raise
    checkpoint(last_path)
    log.close()
    return dict(iteration=iteration, trained=iteration - start, loss=loss_value, best_miou=best_miou,
                temperature=model.temperature, last=last_path,
                best=best_path if os.path.exists(best_path) else None)


def redraw_curves(out):
    """Redraw out/curves.png from the log (at each validation, on Ctrl-C); quiet without matplotlib."""
    from .plot import plot_curves

    try:
        plot_curves(os.path.join(out, "log.jsonl"), os.path.join(out, "curves.png"))
    except RuntimeError:
        pass  # no matplotlib: train.py says so once, at the end
    except Exception as error:  # a picture must never stop a run (full disk, read-only file, ...)
        print(f"warning: curves.png not redrawn: {error}", flush=True)


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
