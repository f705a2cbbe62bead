"""The training loop of the paper's protocol, with checkpoints that survive a crash.

One iteration:  batch k -> forward -> loss -> backward -> SGD step with the poly learning rate.

train(settings, xp) reads as its steps: the datasets; the network, with DUpsampling's W fitted
by PCA on the training masks (or read from the run's cache); a check that a step fits in
memory; the optimizer, restored from last.npz when the run resumes; then the loop (Trainer.fit):
a step per batch, a log line every log_every iterations, a validation every val_every, a
checkpoint every ckpt_every. The settings are tinyseg/settings.py's; the run folder, its
checkpoints and its log are tinyseg/run.py's.

A resumed run continues from last.npz and gives the same numbers as an uninterrupted one, bit
for bit on the same machine and thread count: the network is initialised from the seed,
batch k depends only on (seed, k), the backward pass sums gradients in a fixed order
(autograd.py), and the checkpoint holds every other piece of state (weights, BN statistics,
momentum, T). Two runs with the same seed are likewise identical.

On several processes (mpiexec, tinyseg/distributed.py) every process runs this same loop on
its share of each batch: rank 0 fits W and broadcasts it, reads the checkpoint and broadcasts
it, and alone writes the log, checkpoints and curves; gradients are averaged after backward;
validation images are split over the processes and their confusion matrices summed.
"""
import contextlib
import math
import os
import time

import numpy as np

from . import nn
from .autograd import Tensor
from .backend import device_name
from .data import DataLoader, TrainTransform, build_dataset
from .distributed import (SingleProcess, average_gradients, everywhere, on_rank_zero, set_batch_norm,
                          share_batch_norm_statistics, share_of_mean, stop_requested)
from .evaluation import evaluate
from .memory import check_step_memory
from .models import build_model
from .optim import SGD, PolyLR
from .pca import fit_projection, load_projection, save_projection
from .progress import Progress, RecentRate, format_seconds
# the run folder's pieces, also importable from here (experiments/ and tinyseg.tflite do)
from .run import (JsonLog, Run, TrainingError, load_checkpoint,  # noqa: F401
                  model_from_checkpoint, read_log, save_checkpoint, save_weights)
from .settings import TrainSettings


def train(settings, xp, customize=None, comm=None):
    """Run (or resume) the training described by `settings` on the array module `xp`.

    settings: TrainSettings, or a dict of its fields (train.py's options). Returns a summary:
    iteration, trained (iterations run now), loss, best_miou, temperature, last, best.
    customize(model), if given, is called on the new network before W is set and the weights
    are loaded (experiments/ uses it to put another upsampling in DUpsample's place).
    comm: this process's communicator (tinyseg/distributed.py); None: one process.
    """
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_dict(settings)
    comm = comm or SingleProcess()
    run = Run(settings.out)
    if comm.rank == 0:
        os.makedirs(run.folder, exist_ok=True)
    dataset, val_dataset = build_datasets(settings)
    model = build_network(settings, dataset, xp, customize, run, comm)
    set_batch_norm(model, *batch_norm_groups(settings, comm))
    limit = settings.max_memory  # GiB
    check_step_memory(model, dict(settings.as_dict(), batch_size=settings.batch_size // comm.size),
                      xp, None if limit is None else int(limit * 2**30))
    trainer = Trainer(settings, model, xp, run, dataset.class_names, comm)
    if settings.resume:
        trainer.restore()
    loader_options = dict(shuffle=True, seed=settings.seed, num_workers=settings.workers,
                          transform=TrainTransform(settings.crop, settings.scale_range))
    loader = DataLoader(dataset, settings.batch_size, part=(comm.rank, comm.size), **loader_options)
    if trainer.start == 0 and str(settings.pretrained or "").lower().endswith(".tflite"):
        # batch norm was folded into the file's convs: re-express it with the statistics of
        # (the whole of) batch 0, so that training mode starts from the pretrained function
        from .tflite import calibrate_batch_norm
        images, _ = DataLoader(dataset, settings.batch_size, **loader_options).load_batch(0)
        calibrate_batch_norm(model.backbone, xp.asarray(images))
    return trainer.fit(loader, val_dataset)


# ---------------------------------------------------------------- the steps before the loop
def build_datasets(settings):
    """(training set, validation set or None when val_every is 0)."""
    s = settings
    dataset = build_dataset(s.dataset, s.data_root, s.split, mask_values=s.mask_values)
    val_dataset = (build_dataset(s.dataset, s.data_root, s.val_split, mask_values=s.mask_values)
                   if s.val_every > 0 else None)
    return dataset, val_dataset


def build_network(settings, dataset, xp, customize, run, comm=None):
    """The network, initialised from the seed, customised, given W (fitted or read by rank 0,
    broadcast to the others), on xp's device."""
    comm = comm or SingleProcess()
    s = settings
    nn.init.manual_seed(s.seed)
    model = build_model(**backbone_options(s), decoder=s.decoder, num_classes=dataset.num_classes,
                        output_stride=s.output_stride, fuse=s.fuse, dim=s.dim, loss=s.loss,
                        temperature=s.temperature, pretrained=s.pretrained,
                        trainable_projection=s.trainable_projection, separable=s.separable)
    if customize is not None:
        customize(model)
    if model.needs_projection:
        model.set_projection(*on_rank_zero(comm, lambda: prepare_projection(
            dataset, s.output_stride, s.dim, s.projection or run.projection)))
    return model.to(device_name(xp))


def batch_norm_groups(settings, comm):
    """(comm, group size) for distributed.set_batch_norm: batch norm's statistics are over
    settings.bn_group images (train.py records it at the start: the batch with --sync-bn, else
    each process's share), however many processes run now."""
    group = settings.bn_group or settings.batch_size
    local = settings.batch_size // comm.size
    if group == settings.batch_size and comm.size > 1:
        return comm, None                          # statistics over every process's images
    if local % group:
        counts = [k for k in range(1, settings.batch_size // group + 1)
                  if (settings.batch_size // group) % k == 0]
        raise everywhere(TrainingError(
            f"this run's batch norm takes its statistics over {group} images (--bn-group), but "
            f"each of the {comm.size} processes would hold {local}: run on "
            f"{', '.join(map(str, counts))} processes"))
    return None, (group if group < local else None)


def backbone_options(settings):
    """build_model's backbone arguments: the name, and for a ResNet the stem and layout, from
    --stem/--layout where given, else from the --pretrained file (weights.resnet_options)."""
    options = {"backbone": settings.model}
    if settings.model.startswith(("resnet", "tiny_resnet", "small_resnet")):
        if settings.pretrained:
            from .weights import resnet_options
            options.update(resnet_options(settings.pretrained))
        given = {k: getattr(settings, k) for k in ("stem", "layout") if getattr(settings, k)}
        options.update(given)
    return options


def prepare_projection(dataset, ratio, dim, path, void="nearest"):
    """(W, mean) read from `path`, or fitted by PCA on the dataset's masks and saved there."""
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
        print(f"W: {W.shape}, {100 * explained:.2f}% of the variance explained -> {path}",
              flush=True)
    return W, mean


# ---------------------------------------------------------------- the loop
class Trainer:
    """A run in training: the network, SGD and its schedule, the iteration and the best mIoU,
    and the named steps of the loop (step, report, validate, save)."""

    def __init__(self, settings, model, xp, run, class_names, comm=None):
        self.settings, self.model, self.xp, self.run = settings, model, xp, run
        self.class_names, self.comm = class_names, comm or SingleProcess()
        self.writer = self.comm.rank == 0  # rank 0 alone prints and writes files
        self.optimizer = SGD(model.param_groups(settings.weight_decay), lr=settings.lr,
                             momentum=settings.momentum)
        self.schedule = PolyLR(self.optimizer, settings.iters)
        self.start = self.iteration = 0
        self.best_miou, self.loss = -1.0, float("nan")

    def restore(self):
        """Continue from the run's last.npz: weights, BN statistics, momentum, iteration, best."""
        model_state, optim_state, meta = on_rank_zero(self.comm, lambda: load_checkpoint(self.run.last))
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        self.start = self.iteration = meta["iteration"]
        self.best_miou = meta.get("best_miou", -1.0)
        if self.writer:
            print(f"resumed {self.run.last} at iteration {self.start}", flush=True)

    def fit(self, loader, val_dataset):
        """Train from the current iteration to stop_at (or iters); a checkpoint at the end and
        on Ctrl-C. Returns train()'s summary."""
        s = self.settings
        stop = min(s.iters, s.stop_at or s.iters)
        rate_meter, images_seen = RecentRate(), 0
        self.model.train()
        with JsonLog(self.run.log) if self.writer else contextlib.nullcontext() as log:
            try:
                for images, masks in loader.iterate(self.start, stop):
                    lr = self.step(images, masks)
                    images_seen += len(masks) * self.comm.size
                    if self.due(s.log_every):
                        self.report(lr, rate_meter.update(time.time(), images_seen), log)
                    if val_dataset is not None and self.due(s.val_every):
                        self.validate(val_dataset, log)
                    if self.iteration % s.ckpt_every == 0:
                        self.save(self.run.last)
            except KeyboardInterrupt:
                if not self.writer:
                    raise
                self.save(self.run.last)
                self.run.redraw_curves()
                print(f"interrupted at iteration {self.iteration}: saved {self.run.last}; "
                      "continue with --resume", flush=True)
                raise
            self.save(self.run.last)
        best = self.run.best if os.path.exists(self.run.best) else None
        return dict(iteration=self.iteration, trained=self.iteration - self.start, loss=self.loss,
                    best_miou=self.best_miou, temperature=self.model.temperature,
                    last=self.run.last, best=best)

    def step(self, images, masks):
        """One SGD iteration on a batch: forward, loss, backward, update. Returns the lr.

        On several processes each loss is scaled to its share of the batch's mean
        (distributed.share_of_mean) and the gradients are averaged before the update."""
        lr = self.schedule.step(self.iteration)
        loss = self.model.loss(Tensor(self.xp.asarray(images)), self.xp.asarray(masks))
        self.loss = float(loss.data)
        if self.comm.size > 1:  # the batch's loss and a stop request: the same on every process
            share = share_of_mean(masks, self.comm)
            loss = loss * share
            mine = float(loss.data) if share > 0 else 0.0  # no labelled pixel: nothing to add
            total, stop = self.comm.allreduce(np.array([mine, float(stop_requested())]))
            if stop:
                raise KeyboardInterrupt
            self.loss = float(total) / self.comm.size
        if not math.isfinite(self.loss):
            raise everywhere(TrainingError(diverged_message(self.loss, self.iteration,
                                                            self.run.last, self.settings)))
        self.optimizer.zero_grad()
        loss.backward()
        average_gradients(self.model.parameters(), self.comm)
        self.optimizer.step()
        self.iteration += 1
        return lr

    def due(self, every):
        """True every `every` iterations, and at the last one."""
        return self.iteration % every == 0 or self.iteration == self.settings.iters

    def report(self, lr, rate, log):
        """The console line and the log record of the current iteration (rank 0)."""
        if not self.writer:
            return
        s = self.settings
        eta = (s.iters - self.iteration) * s.batch_size / max(rate, 1e-9)
        temperature = self.model.temperature
        t_text = f" T {temperature:.3f}" if temperature is not None else ""
        print(f"iter {self.iteration}/{s.iters} loss {self.loss:.4f}{t_text} "
              f"lr {lr:.5f} {rate:.1f} img/s ETA {format_seconds(eta)}", flush=True)
        log.write(iter=self.iteration, loss=self.loss, lr=lr, T=temperature,
                  images_per_s=rate, time=time.time())

    def validate(self, val_dataset, log):
        """mIoU on the validation set: printed, logged, best.npz when it improves."""
        share_batch_norm_statistics(self.model, self.comm)  # as rank 0's checkpoint scores
        confusion = evaluate(self.model, val_dataset, self.xp, max_images=self.settings.val_images,
                             part=(self.comm.rank, self.comm.size))
        self.comm.allreduce(confusion.matrix)  # every process's images, summed
        if not self.writer:
            return
        miou = confusion.miou()
        print(f"iter {self.iteration}: val mIoU {100 * miou:.2f}% pixel acc "
              f"{100 * confusion.pixel_accuracy():.2f}%", flush=True)
        log.write(iter=self.iteration, val_miou=miou, val_pixel_acc=confusion.pixel_accuracy(),
                  val_iou={name: (None if iou != iou else float(iou)) for name, iou in
                           zip(val_dataset.class_names, confusion.per_class_iou())})
        if miou > self.best_miou:
            self.best_miou = miou
            self.save(self.run.best, val_miou=miou)
        self.run.redraw_curves()

    def save(self, path, **extra):
        """A checkpoint of the current state (tinyseg/run.py) at `path` (rank 0)."""
        if not self.writer:
            return
        save_checkpoint(path, self.model, self.optimizer, self.iteration,
                        dict(best_miou=self.best_miou, class_names=self.class_names, **extra))


def diverged_message(loss, iteration, last_path, settings):
    """Why a run stopped on a non-finite loss, what was kept, and what to try."""
    if os.path.exists(last_path):
        kept = (f"the last checkpoint is {last_path} (continue from it with --resume and a "
                "lower --lr)")
    else:
        kept = f"no checkpoint was written yet (the first comes at iteration {settings.ckpt_every})"
    if iteration < 20:
        advice = (f"so early, the learning rate is the usual cause: try --lr "
                  f"{settings.lr / 10:g} (now {settings.lr:g})")
    else:
        advice = (f"after {iteration} good iterations: try a lower --lr (now {settings.lr:g}), "
                  "and check the data (a mask with unexpected values, an empty crop)")
    return f"loss became {loss} at iteration {iteration}; stopped: {kept}; {advice}"
