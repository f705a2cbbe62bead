"""A run's curves from its log: `python -m tinyseg.plot RUN` writes RUN/curves.png.

Three panels: the training loss (every logged point, and its moving average over the last
SMOOTH points, which is what to read: one batch's loss is noisy), the validation mIoU in %
(as the console prints it), and DUpsampling's temperature T. train.py redraws the file at every
validation, on Ctrl-C and at the end.
"""
import argparse
import os
import sys

import numpy as np

SMOOTH = 20  # logged points in the loss's moving average


def moving_average(values, window):
    """values[k] averaged with the (window - 1) before it (fewer at the start)."""
    values = np.asarray(values, np.float64)
    total = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(len(values)) + 1 - window, 0)
    return (total[1:] - total[starts]) / (np.arange(len(values)) + 1 - starts)


def plot_curves(log_path, png_path):
    """Draw loss, validation mIoU and T over iterations from a log.jsonl into a PNG."""
    from .run import read_log

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install tinyseg[plots]") from None
    records = read_log(log_path)
    steps = [r for r in records if "loss" in r]
    vals = [r for r in records if "val_miou" in r]
    temps = [r for r in steps if r.get("T") is not None]
    panels = [p for p in (("training loss", steps), ("validation mIoU (%)", vals),
                          ("temperature T", temps)) if p[1]]
    if not panels:
        raise RuntimeError(f"{log_path} holds no logged iteration yet")
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        iters = [r["iter"] for r in rows]
        if title == "training loss":
            losses = [r["loss"] for r in rows]
            ax.plot(iters, losses, ".", ms=2, alpha=0.35, label="logged")
            ax.plot(iters, moving_average(losses, SMOOTH), label=f"mean of the last {SMOOTH}")
            ax.legend()
        elif title.startswith("validation"):
            ax.plot(iters, [100 * r["val_miou"] for r in rows], marker=".")
        else:
            ax.plot(iters, [r["T"] for r in rows])
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyseg.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder written by train.py (holds log.jsonl)")
    parser.add_argument("--out", default=None, help="the PNG to write (default RUN/curves.png)")
    args = parser.parse_args(argv)
    log_path = os.path.join(args.run, "log.jsonl")
    if not os.path.isfile(log_path):
        print(f"error: {log_path} not found (is {args.run} a run folder of train.py?)", file=sys.stderr)
        return 2
    try:
        print(plot_curves(log_path, args.out or os.path.join(args.run, "curves.png")))
    except (RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
