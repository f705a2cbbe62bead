"""Train a segmentation network: `python train.py` (defaults: a quick run on generated data).

    python train.py --backend cupy --dataset voc --data-root /data --model resnet50 \
        --decoder dupsampling --output-stride 16 --fuse b1u2c3 --dim 64 --iters 30000 \
        --batch-size 16 --lr 0.007 --crop 512

Without --data-root on the synthetic dataset, a generated dataset in the VOC layout is written
once to ./data-cache/synthetic and read back through the VOC loader. See tinyseg/training.py.
"""
import argparse
import os
import shutil
import signal
import sys
import time

import tinyseg  # noqa: F401  (before NumPy: it sets OpenBLAS's thread timeout, see tinyseg/__init__.py)
import numpy as np

from tinyseg.backend import BackendError
from tinyseg import distributed
from tinyseg.cli import add_backend_arguments, setup_backend
from tinyseg.distributed import SingleProcess, on_rank_zero, request_stop
from tinyseg.data import DATASET_NAMES, DataError, ensure_synthetic
from tinyseg.data.synthetic import read_marker
from tinyseg.models import parse_fuse
from tinyseg.nn import StateDictError
from tinyseg.plot import plot_curves
from tinyseg.run import Run, TrainingError
from tinyseg.settings import TrainSettings
from tinyseg.training import batch_norm_groups, train

DEFAULT_SYNTHETIC_ROOT = os.path.join("data-cache", "synthetic")
D = TrainSettings()  # the defaults of every option


# the paper's settings (Sec. 4), for one GPU: its batch of 48 (BN over 12) becomes 16
PRESETS = {
    "voc-resnet50": dict(dataset="voc_aug", model="resnet50", decoder="dupsampling",
                         output_stride=16, fuse=["b1u2c3"], dim=64, iters=30000, batch_size=16,
                         lr=0.007, momentum=0.9, weight_decay=1e-4, crop=512, scale_min=0.5,
                         scale_max=2.0, val_every=2000),
    "voc-xception65": dict(dataset="voc_aug", model="xception65", decoder="dupsampling",
                           output_stride=16, fuse=["efb2u1c2"], dim=128, separable=True,
                           iters=30000, batch_size=16, lr=0.007, momentum=0.9, weight_decay=4e-5,
                           crop=512, scale_min=0.5, scale_max=2.0, val_every=2000),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default=None, choices=sorted(PRESETS) + ["list"],
                   help="the paper's settings for a dataset and backbone, as defaults that the "
                        "other options override; 'list' prints them")
    add_backend_arguments(p)
    p.add_argument("--dataset", default=D.dataset, choices=DATASET_NAMES, help="the dataset's layout")
    p.add_argument("--data-root", default=D.data_root,
                   help="folder holding VOCdevkit/ (or VOCdevkit/VOC2012 itself); synthetic: "
                        f"where to generate it (default {DEFAULT_SYNTHETIC_ROOT})")
    p.add_argument("--mask-values", default=D.mask_values,
                   help="--dataset folder: what stored mask values mean, STORED:ID pairs, e.g. "
                        "0:0,255:1 for black-and-white masks (255 is void otherwise)")
    p.add_argument("--split", default=D.split, help="the training split (train_aug for voc_aug's 10,582)")
    p.add_argument("--val-split", default=D.val_split, help="the split validated on")
    p.add_argument("--model", default=D.model,
                   help="resnet50, resnet101, xception65, mobilenet_v2, small_resnet, tiny_resnet, "
                        "tiny_xception")
    p.add_argument("--decoder", default=D.decoder, choices=["dupsampling", "deeplabv3plus", "bilinear"],
                   help="the paper's (Fig. 2), DeepLabv3+'s (Fig. 1), or 1x1 + bilinear (Table 1)")
    p.add_argument("--output-stride", type=int, default=D.output_stride, choices=[8, 16, 32],
                   help="also DUpsampling's ratio r; the paper uses 16 or 32 on 512x512 crops, "
                        "the quick default 8 suits the 160x120 generated images")
    p.add_argument("--fuse", nargs="*", default=D.fuse,
                   help="features to fuse, separated by commas or spaces, e.g. conv1_3,b3u6c3 ('' or "
                        "the bare flag: none; absent: b1u2c3 for ResNet, efb2u1c2 for Xception)")
    p.add_argument("--separable", action="store_true",
                   help="depthwise-separable 3x3 convs in ASPP and the decoder (DeepLabv3+, Xception)")
    p.add_argument("--dim", type=int, default=D.dim, help="C~, channels DUpsampling decodes from")
    p.add_argument("--loss", default=D.loss, choices=["cross_entropy", "regression"],
                   help="cross-entropy on the decoded scores, or Eq. 4's regression of the codes")
    p.add_argument("--temperature", default=D.temperature, choices=["learned", "fixed"],
                   help="the softmax temperature T of Eq. 6: learned from 1, or fixed at 1")
    p.add_argument("--projection", default=D.projection,
                   help="W/mean .npz from tinyseg.pca (default: fit and cache in --out)")
    p.add_argument("--pretrained", default=D.pretrained,
                   help="ImageNet backbone weights: .pth, .safetensors or .npz (torchvision ResNet / timm "
                        "xception65 names), or .tflite (MobileNetV2, --model mobilenet_v2)")
    p.add_argument("--stem", default=D.stem, choices=["deep", "standard"],
                   help="ResNet stem: DeepLab's three 3x3 convs or torchvision's 7x7 (default: "
                        "what --pretrained holds, else deep)")
    p.add_argument("--layout", default=D.layout, choices=["deeplab", "torchvision"],
                   help="where ResNet's strides sit (default: torchvision for a torchvision "
                        "--pretrained file, else deeplab; see tinyseg/models/resnet.py)")
    p.add_argument("--iters", type=int, default=D.iters, help="SGD iterations (the paper: 30000)")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help="images per iteration (the paper: 48)")
    p.add_argument("--lr", type=float, default=D.lr, help="initial poly learning rate; the paper: "
                   "0.007 from ImageNet weights")
    p.add_argument("--momentum", type=float, default=D.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=D.weight_decay, help="L2 on weights (the "
                   "paper: 1e-4 ResNet, 4e-5 Xception)")
    p.add_argument("--crop", type=int, default=D.crop, help="square training crop (the paper: 512; "
                   "DeepLab's TensorFlow models use 513)")
    p.add_argument("--scale-min", type=float, default=D.scale_range[0], help="smallest random rescaling")
    p.add_argument("--scale-max", type=float, default=D.scale_range[1], help="largest random rescaling")
    p.add_argument("--seed", type=int, default=D.seed, help="weights, batch order and augmentation")
    p.add_argument("--sync-bn", action="store_true", default=D.sync_bn,
                   help="under mpiexec: batch norm's statistics over the whole batch of every "
                        "process (default: over each process's share, as the paper's GPUs)")
    p.add_argument("--bn-group", type=int, default=D.bn_group, metavar="N",
                   help="batch norm's statistics over groups of N images (the paper's 'BN over 12 "
                        "of 48 images' on one process); default: each process's share")
    p.add_argument("--workers", type=int, default=D.workers, help="background threads loading batches")
    p.add_argument("--max-memory", type=float, default=D.max_memory,
                   help="GiB a training step may use; the step's need is estimated before training "
                        "and a run that would not fit is refused (default: the free memory)")
    p.add_argument("--out", default=D.out, help="run folder (default runs/<date-time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.npz (with --iters: extend it)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one, replacing its files")
    p.add_argument("--stop-at", type=int, default=D.stop_at,
                   help="stop (with a checkpoint) at this iteration, to continue later with --resume")
    p.add_argument("--log-every", type=int, default=D.log_every, help="iterations between log lines")
    p.add_argument("--val-every", type=int, default=D.val_every,
                   help="iterations between validations; 0: none")
    p.add_argument("--val-images", type=int, default=D.val_images,
                   help="validate on the first N images only")
    p.add_argument("--ckpt-every", type=int, default=D.ckpt_every,
                   help="iterations between checkpoints (last.npz)")
    return p


def parse_args(argv=None):
    """The options, plus `args.given`: the names of those set on the command line."""
    p = build_parser()
    preset = p.parse_known_args(argv)[0].preset
    if preset == "list":
        for name, values in PRESETS.items():
            flags = [f"--{k.replace('_', '-')}" if v is True else
                     f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
                     for k, v in values.items()]
            print(f"{name}: {' '.join(flags)}")
        sys.exit(0)
    if preset is not None:
        p.set_defaults(**PRESETS[preset])
    args = p.parse_args(argv)
    explicit = build_parser()
    for action in explicit._actions:
        action.default = argparse.SUPPRESS  # so that only options typed by the user remain
    args.given = set(vars(explicit.parse_args(argv)))
    if args.resume and not args.out:
        p.error("--resume needs --out RUN_DIR (the run to continue)")
    try:
        settings_from(args).check()
    except ValueError as error:
        p.error(str(error))
    if not args.resume and args.crop < args.output_stride:
        print(f"warning: --crop {args.crop} is smaller than the output stride {args.output_stride}: "
              "the network sees a single feature per crop", file=sys.stderr)
    return args


def settings_from(args):
    """TrainSettings from the options: --fuse parsed, --scale-min/--scale-max as scale_range,
    the default run folder and the generated data's default root filled in."""
    options = {k: v for k, v in vars(args).items() if k != "given"}
    options["fuse"] = parse_fuse(args.fuse)
    options["scale_range"] = (options.pop("scale_min"), options.pop("scale_max"))
    options["out"] = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if args.dataset == "synthetic" and args.data_root is None:
        options["data_root"] = DEFAULT_SYNTHETIC_ROOT
    return TrainSettings(**options)


# bad input or a failed run, reported in one line (anything else is a bug: a traceback)
EXPECTED = (BackendError, DataError, TrainingError, StateDictError, OSError, ValueError, MemoryError)


def stop_like_ctrl_c(signum, frame):
    """SIGTERM (a cluster's preemption, `kill`) ends a run as Ctrl-C does: checkpoint first."""
    raise KeyboardInterrupt


def start_run(run, requested, args, comm):
    """The run's settings, its folder and config.json (rank 0's work under mpiexec)."""
    if args.resume:  # config.json's settings, and the resumable options given now
        settings = run.resumed(requested, args.given)
    else:
        if requested.data_root is None:
            raise DataError(f"--dataset {requested.dataset} needs --data-root (the folder "
                            "holding the data)")
        run.check_new(requested.overwrite)
        settings = requested
        if settings.sync_bn and settings.bn_group not in (None, settings.batch_size):
            raise ValueError(f"--sync-bn takes batch norm's statistics over the whole batch of "
                             f"{settings.batch_size}; it cannot be combined with --bn-group "
                             f"{settings.bn_group}")
        if settings.bn_group is None:  # recorded, so that a resume on other processes keeps it
            settings.bn_group = settings.batch_size // (1 if settings.sync_bn else comm.size)
    if settings.batch_size % comm.size:
        raise ValueError(f"--batch-size {settings.batch_size} cannot be dealt to {comm.size} "
                         "processes in equal shares")
    batch_norm_groups(settings, comm)  # refused here, before any work, when it cannot be kept
    run.start(settings)
    if settings.dataset == "synthetic" and read_marker(settings.data_root) is None:
        ensure_synthetic(settings.data_root)  # first use: generate it (a few seconds)
    print(f"run folder: {run.folder}" + (f" ({comm.size} processes, {comm.name})"
                                         if comm.size > 1 else ""), flush=True)
    return settings


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    requested = settings_from(args)
    run = Run(requested.out)
    settings, comm = None, SingleProcess()
    new_folder = not os.path.exists(run.folder)
    try:
        comm = distributed.init(requested.backend)
        if comm.size > 1:  # every process stops at the same iteration (distributed.request_stop)
            signal.signal(signal.SIGINT, request_stop)
            signal.signal(signal.SIGTERM, request_stop)
        settings = on_rank_zero(comm, lambda: start_run(run, requested, args, comm))
        xp = setup_backend(settings)
        # A diverging run is stopped with a clear message when its loss is no longer finite;
        # NumPy's overflow warnings on the way there would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = train(settings, xp, comm=comm)
    except KeyboardInterrupt:
        if comm.rank == 0 and (settings is None or not os.path.exists(run.last)):
            print("interrupted before the first iteration: nothing was saved", file=sys.stderr)
            if new_folder:
                shutil.rmtree(run.folder, ignore_errors=True)  # no half-made run to trip over
        return 130
    except Exception as error:  # noqa: BLE001 (on several processes: any error must stop them all)
        if comm.size > 1 and not getattr(error, "collective", False):
            # raised on this process alone: the others wait in a collective, stop them all
            text = str(error) if isinstance(error, EXPECTED) else f"{type(error).__name__}: {error}"
            print(f"error on process {comm.rank} of {comm.size}: {text}", file=sys.stderr, flush=True)
            comm.abort(2)
        if comm.size == 1 and not isinstance(error, EXPECTED):
            raise  # a bug, not bad input: the traceback says where
        if comm.rank == 0:
            print(f"error: {error}", file=sys.stderr)
            if new_folder and not any(os.path.exists(f) for f in (run.log, run.last)):
                shutil.rmtree(run.folder, ignore_errors=True)  # stopped before training: leave nothing
        return 2
    if comm.rank != 0:
        return 0
    try:
        print(f"curves: {plot_curves(run.log, run.curves)}")
    except Exception as error:  # no matplotlib, a full disk: the run itself is done and saved
        print(f"no curves: {error}")
    best = f", best val mIoU {100 * result['best_miou']:.2f}%" if result["best_miou"] >= 0 else ""
    if result["trained"] == 0:
        print(f"nothing to train: the run is already at iteration {result['iteration']} of "
              f"{settings.iters} (a larger --iters with --resume extends it){best}")
        return 0
    print(f"done: {result['iteration']} iterations, final loss {result['loss']:.4f}{best}; "
          f"checkpoints in {run.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
