"""`python -m tinyseg.pca`: fit DUpsampling's W and mean on a dataset's training masks.

    python -m tinyseg.pca --dataset voc_aug --data-root /data --split train_aug \
        --ratio 16 --dim 64 --out W.npz

Writes the .npz of tinyseg.pca.save_projection, which train.py takes as --projection.
"""
import argparse
import os
import sys
import time

from .blocks import VOID_MODES
from .pca import EIGH_MAX_DIM, SOLVERS, fit_projection, save_projection
from .progress import Progress


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tinyseg.pca",
        description="Fit DUpsampling's W and mean by PCA of a dataset's training masks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="voc", help="voc, voc_aug, context, cityscapes, ...")
    parser.add_argument("--data-root", required=True, help="the folder that holds VOCdevkit/ etc.")
    parser.add_argument("--split", default="train", help="the split whose masks W is fitted on")
    parser.add_argument("--ratio", type=int, default=16, help="upsampling ratio r (16 or 32)")
    parser.add_argument("--dim", type=int, default=64, help="number of components C~")
    parser.add_argument("--void", choices=VOID_MODES, default="nearest",
                        help="how void (255) pixels are encoded (tinyseg/blocks.py; docs/pca.md)")
    parser.add_argument("--solver", choices=SOLVERS, default="auto",
                        help="eigh: exact, all eigenpairs; subspace: the leading ones, faster; "
                             f"auto: eigh up to N = {EIGH_MAX_DIM}")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .data import DataError, build_dataset
    try:
        out_folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_folder):
            raise ValueError(f"output folder not found: {out_folder} (for --out {args.out})")
        dataset = build_dataset(args.dataset, args.data_root, args.split, labels_only=True)
        size = args.ratio ** 2 * dataset.num_classes
        if args.ratio < 1 or not 1 <= args.dim <= size:
            raise ValueError(f"need ratio >= 1 and 1 <= dim <= r*r*C = {size}, "
                             f"got ratio={args.ratio}, dim={args.dim}")
        print(f"pca: {len(dataset)} masks of {args.dataset}/{args.split}, r={args.ratio}, "
              f"C={dataset.num_classes}, N={size}, C~={args.dim}, void={args.void}", flush=True)
        start = time.time()
        W, mean, meta = fit_projection(
            (dataset.load_mask(i) for i in range(len(dataset))), dataset.num_classes,
            args.ratio, args.dim, args.void, dataset.ignore_index,
            progress=_fit_progress(len(dataset), size), solver=args.solver)
        meta.update(dataset=args.dataset, split=args.split)
        save_projection(args.out, W, mean, meta)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    explained = meta["explained_variance"].sum() / meta["total_variance"]
    print(f"pca: fitted on {meta['num_blocks']} blocks in {time.time() - start:.1f} s; the "
          f"{args.dim} components explain {100 * explained:.2f}% of the variance; wrote {args.out}")
    return 0


def _fit_progress(total, size):
    """fit_projection's progress(done): images done, rate and ETA; then what comes next."""
    progress = Progress("pca", unit="images")

    def report(done):
        progress(done, total)
        if done == total:
            print(f"pca: eigenvectors of the {size} x {size} covariance ...", flush=True)
    return report

