"""Train a segmentation network: `python train.py` (defaults: a quick run on generated data).

    python train.py --backend cupy --dataset voc --data-root /data --model resnet50 \
        --decoder dupsampling --output-stride 16 --fuse b1u2c3 --dim 64 --iters 30000 \
        --batch-size 16 --lr 0.007 --crop 512

Without --data-root on the synthetic dataset, a generated dataset in the VOC layout is written
once to ./data-cache/synthetic and read back through the VOC loader. See tinyseg/training.py.
"""
import argparse
import json
import math
import os
import shutil
import signal
import sys
import time

import tinyseg  # noqa: F401  (before NumPy: it sets OpenBLAS's thread timeout, see tinyseg/__init__.py)
import numpy as np

from tinyseg import cudnn
from tinyseg.backend import BackendError, get_backend, keep_freed_memory
from tinyseg.data import DATASET_NAMES, DataError, ensure_synthetic
from tinyseg.data.synthetic import read_marker
from tinyseg.models import parse_fuse
from tinyseg.nn import StateDictError
from tinyseg.plot import plot_curves
from tinyseg.training import TrainingError, train

DEFAULT_SYNTHETIC_ROOT = os.path.join("data-cache", "synthetic")
# what --resume may change; every other setting comes from the run's config.json
RESUMABLE = {"resume", "backend", "workers", "stop_at", "log_every", "val_every", "ckpt_every", "val_images",
             "iters", "max_memory"}
RUN_FILES = ("config.json", "last.npz", "best.npz", "log.jsonl", "curves.png", "projection.npz")


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
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="CPU or GPU arrays")
    p.add_argument("--dataset", default="synthetic", choices=DATASET_NAMES, help="the dataset's layout")
    p.add_argument("--data-root", default=None,
                   help="folder holding VOCdevkit/ (or VOCdevkit/VOC2012 itself); synthetic: "
                        f"where to generate it (default {DEFAULT_SYNTHETIC_ROOT})")
    p.add_argument("--mask-values", default=None,
                   help="--dataset folder: what stored mask values mean, STORED:ID pairs, e.g. "
                        "0:0,255:1 for black-and-white masks (255 is void otherwise)")
    p.add_argument("--split", default="train", help="the training split (train_aug for voc_aug's 10,582)")
    p.add_argument("--val-split", default="val", help="the split validated on")
    p.add_argument("--model", default="tiny_resnet",
                   help="resnet50, resnet101, xception65, mobilenet_v2, small_resnet, tiny_resnet, "
                        "tiny_xception")
    p.add_argument("--decoder", default="dupsampling", choices=["dupsampling", "deeplabv3plus", "bilinear"],
                   help="the paper's (Fig. 2), DeepLabv3+'s (Fig. 1), or 1x1 + bilinear (Table 1)")
    p.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32],
                   help="also DUpsampling's ratio r; the paper uses 16 or 32 on 512x512 crops, "
                        "the quick default 8 suits the 160x120 generated images")
    p.add_argument("--fuse", nargs="*", default=None,
                   help="features to fuse, separated by commas or spaces, e.g. conv1_3,b3u6c3 ('' or "
                        "the bare flag: none; absent: b1u2c3 for ResNet, efb2u1c2 for Xception)")
    p.add_argument("--separable", action="store_true",
                   help="depthwise-separable 3x3 convs in ASPP and the decoder (DeepLabv3+, Xception)")
    p.add_argument("--dim", type=int, default=64, help="C~, channels DUpsampling decodes from")
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "regression"],
                   help="cross-entropy on the decoded scores, or Eq. 4's regression of the codes")
    p.add_argument("--temperature", default="learned", choices=["learned", "fixed"],
                   help="the softmax temperature T of Eq. 6: learned from 1, or fixed at 1")
    p.add_argument("--projection", default=None, help="W/mean .npz from tinyseg.pca (default: fit and cache in --out)")
    p.add_argument("--pretrained", default=None,
                   help="ImageNet backbone weights: .pth, .safetensors or .npz (torchvision ResNet / timm "
                        "xception65 names), or .tflite (MobileNetV2, --model mobilenet_v2)")
    p.add_argument("--stem", default=None, choices=["deep", "standard"],
                   help="ResNet stem: DeepLab's three 3x3 convs or torchvision's 7x7 (default: "
                        "what --pretrained holds, else deep)")
    p.add_argument("--layout", default=None, choices=["deeplab", "torchvision"],
                   help="where ResNet's strides sit (default: torchvision for a torchvision "
                        "--pretrained file, else deeplab; see tinyseg/models/resnet.py)")
    p.add_argument("--iters", type=int, default=2500, help="SGD iterations (the paper: 30000)")
    p.add_argument("--batch-size", type=int, default=8, help="images per iteration (the paper: 48)")
    p.add_argument("--lr", type=float, default=0.02, help="initial poly learning rate; the paper: "
                   "0.007 from ImageNet weights")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 on weights (the paper: 1e-4 "
                   "ResNet, 4e-5 Xception)")
    p.add_argument("--crop", type=int, default=96, help="square training crop (the paper: 512; "
                   "DeepLab's TensorFlow models use 513)")
    p.add_argument("--scale-min", type=float, default=0.5, help="smallest random rescaling")
    p.add_argument("--scale-max", type=float, default=2.0, help="largest random rescaling")
    p.add_argument("--seed", type=int, default=0, help="weights, batch order and augmentation")
    p.add_argument("--workers", type=int, default=2, help="background threads loading batches")
    p.add_argument("--max-memory", type=float, default=None,
                   help="GiB a training step may use; the step's need is estimated before training "
                        "and a run that would not fit is refused (default: the free memory)")
    p.add_argument("--out", default=None, help="run folder (default runs/<date-time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.npz (with --iters: extend it)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one, replacing its files")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) at this iteration, to continue later with --resume")
    p.add_argument("--log-every", type=int, default=25, help="iterations between log lines")
    p.add_argument("--val-every", type=int, default=500, help="iterations between validations; 0: none")
    p.add_argument("--val-images", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--ckpt-every", type=int, default=250, help="iterations between checkpoints (last.npz)")
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
    for name in ("iters", "batch_size", "log_every", "ckpt_every", "crop", "dim"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        p.error(f"--momentum must be in [0, 1), got {args.momentum}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not (0 < args.scale_min <= args.scale_max and math.isfinite(args.scale_max)):
        p.error(f"--scale-min and --scale-max must satisfy 0 < min <= max, got "
                f"{args.scale_min} and {args.scale_max}")
    if args.max_memory is not None and not (math.isfinite(args.max_memory) and args.max_memory > 0):
        p.error(f"--max-memory must be a positive number of GiB, got {args.max_memory}")
    if args.projection is not None and not os.path.isfile(args.projection):
        p.error(f"--projection {args.projection}: no such file (leave it out to fit W by PCA "
                "into the run folder)")
    if not args.resume and args.crop < args.output_stride:
        print(f"warning: --crop {args.crop} is smaller than the output stride {args.output_stride}: "
              "the network sees a single feature per crop", file=sys.stderr)
    return args


def settings_from(args):
    settings = dict(vars(args))
    given = settings.pop("given")
    settings["fuse"] = parse_fuse(args.fuse)
    settings["scale_range"] = (settings.pop("scale_min"), settings.pop("scale_max"))
    if settings["out"] is None:
        settings["out"] = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    config_path = os.path.join(settings["out"], "config.json")
    if args.resume:
        if not os.path.exists(config_path):
            raise TrainingError(f"cannot resume: {config_path} not found (is --out the run folder?)")
        with open(config_path) as f:
            saved = json.load(f)
        ignored = sorted(given - RESUMABLE - {"out", "overwrite"})
        if ignored:
            print("--resume continues the run with its own settings (config.json); ignored: "
                  + ", ".join("--" + k.replace("_", "-") for k in ignored), flush=True)
        if "iters" in given and args.iters != saved["iters"]:
            print(f"--iters {args.iters}: the run goes on to iteration {args.iters} (was "
                  f"{saved['iters']}); the poly learning rate is recomputed over the new total, "
                  f"lr(k) = lr (1 - k / {args.iters})^0.9, so it steps up where the run resumes",
                  flush=True)
        saved.update({k: v for k, v in settings.items() if k in RESUMABLE and k in given})
        saved["resume"], saved["stop_at"] = True, settings["stop_at"]  # this invocation's only
        saved["out"] = settings["out"]  # the folder named now: a run folder may have been moved
        with open(config_path, "w") as f:
            json.dump(dict(saved, resume=False, stop_at=None), f, indent=1)
        return saved
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(settings["out"], name))]
    if existing and not args.overwrite:
        raise TrainingError(f"{settings['out']} already holds a run ({', '.join(existing)}): "
                            "continue it with --resume, or start over with --overwrite")
    for name in existing:  # --overwrite: nothing of the old run may mix with the new one
        os.remove(os.path.join(settings["out"], name))
    if args.dataset == "synthetic" and args.data_root is None:
        settings["data_root"] = DEFAULT_SYNTHETIC_ROOT
    if settings["data_root"] is None:
        raise DataError(f"--dataset {args.dataset} needs --data-root (the folder holding the data)")
    os.makedirs(settings["out"], exist_ok=True)
    with open(config_path, "w") as f:
        json.dump(settings, f, indent=1)
    return settings


def stop_like_ctrl_c(signum, frame):
    """SIGTERM (a cluster's preemption, `kill`) ends a run as Ctrl-C does: checkpoint first."""
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    settings = None
    new_folder = args.out is None or not os.path.exists(args.out)
    try:
        xp = get_backend(args.backend)
        if args.backend == "numpy":
            keep_freed_memory()  # steps reuse freed memory instead of faulting in new pages
        elif cudnn.enabled():
            cudnn.library()  # TINYSEG_CUDNN=1: a missing cuDNN stops the run here, in one line
        settings = settings_from(args)
        if settings["dataset"] == "synthetic" and read_marker(settings["data_root"]) is None:
            ensure_synthetic(settings["data_root"])  # first use: generate it (a few seconds)
        print(f"run folder: {settings['out']}", flush=True)
        # A diverging run is stopped with a clear message when its loss is no longer finite;
        # NumPy's overflow warnings on the way there would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = train(settings, xp)
    except KeyboardInterrupt:
        if settings is None or not os.path.exists(os.path.join(settings["out"], "last.npz")):
            print("interrupted before the first iteration: nothing was saved", file=sys.stderr)
            if settings is not None and new_folder:
                shutil.rmtree(settings["out"], ignore_errors=True)  # no half-made run to trip over
        return 130
    except (BackendError, DataError, TrainingError, StateDictError, OSError, ValueError,
            MemoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        if settings is not None and new_folder and not any(
                os.path.exists(os.path.join(settings["out"], f)) for f in ("log.jsonl", "last.npz")):
            shutil.rmtree(settings["out"], ignore_errors=True)  # stopped before training: leave nothing
        return 2
    log_path = os.path.join(settings["out"], "log.jsonl")
    try:
        print(f"curves: {plot_curves(log_path, os.path.join(settings['out'], 'curves.png'))}")
    except Exception as error:  # no matplotlib, a full disk: the run itself is done and saved
        print(f"no curves: {error}")
    best = f", best val mIoU {100 * result['best_miou']:.2f}%" if result["best_miou"] >= 0 else ""
    if result["trained"] == 0:
        print(f"nothing to train: the run is already at iteration {result['iteration']} of "
              f"{settings['iters']} (a larger --iters with --resume extends it){best}")
        return 0
    print(f"done: {result['iteration']} iterations, final loss {result['loss']:.4f}{best}; "
          f"checkpoints in {settings['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
