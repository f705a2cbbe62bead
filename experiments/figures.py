"""The report's figures, drawn from the result JSONs (matplotlib, the `plots` extra)."""
import os

from tinyseg.plot import moving_average


def curve_iters(record):
    """The iteration of every logged loss (photo runs log every few iterations)."""
    return record.get("log_iters") or list(range(1, len(record["loss"]) + 1))


def draw_all(results, fig_dir):
    """[(title, path)] of the figures drawn (none without matplotlib or without results)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no figures: matplotlib is not installed (pip install -e '.[plots]')")
        return []
    drawn = []
    panels = [("photos", "real photos, OS 16", 5), ("labels", "label-only network, OS 16", 50)]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for column, (kind, title, window) in enumerate(panels):
        for suffix, colour, label in (("", "tab:blue", "T learned"), ("-fixedT", "tab:orange", "T fixed at 1")):
            prefix = f"{kind}-dupsampling-os16{suffix}-seed"
            for k, name in enumerate(sorted(n for n in results if n.startswith(prefix))):
                record = results[name]
                iters = curve_iters(record)
                axes[0, column].plot(iters, moving_average(record["loss"], window), color=colour, lw=1,
                                     label=label if k == 0 else None)
                if record.get("T"):
                    axes[1, column].plot(iters, record["T"], color=colour, lw=1,
                                         label=label if k == 0 else None)
        axes[0, column].set_title(f"training loss (moving average), {title}")
        axes[1, column].set_title(f"temperature T, {title}")
        axes[1, column].set_yscale("log")
        for ax in axes[:, column]:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    figure.tight_layout()
    path = os.path.join(fig_dir, "temperature.png")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    drawn.append(("training loss and T, learned vs fixed temperature (one line per seed)", path))
    return drawn
