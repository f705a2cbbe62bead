"""From the result JSONs to docs/experiments.md: the tables beside the paper's numbers, the figures.

    python experiments/report.py               # experiments/results -> docs/experiments.md + PNGs
    python experiments/report.py --quick       # the --quick results -> experiments/quick/report/

Comparisons follow one rule: with mean and standard deviation over seeds for two rows, their
difference counts only when it exceeds the sum of the two standard deviations; otherwise the
table says "no difference" (neither agreement nor disagreement with the paper).
"""
import argparse
import glob
import os
import sys

import numpy as np

import gallery
from common import REPO, Folders, read_json

PAPER = {  # Table 1 and Sec. 4.1.4 of the paper
    ("labels", "dupsampling", 16): 99.95, ("labels", "bilinear", 16): 98.40,
    ("labels", "dupsampling", 32): 99.90, ("labels", "bilinear", 32): 94.80,
    ("photos", "dupsampling", 16): 73.15, ("photos", "bilinear", 16): 72.15,
    ("photos", "dupsampling", 32): 72.09, ("photos", "bilinear", 32): 70.77,
}
PAPER_FIXED_T = 69.81


def load_results(folders):
    results = {}
    for path in sorted(glob.glob(os.path.join(folders.results, "*.json"))):
        record = read_json(path)
        if "name" in record and "kind" in record:  # a run (tflite-conformance.json is not)
            results[record["name"]] = record
    return results


def conformance_section(folders):
    """tinyseg running Google's TFLite files against LiteRT (experiments/tflite_conformance.py)."""
    path = os.path.join(folders.results, "tflite-conformance.json")
    if not os.path.exists(path):
        return ["Not measured yet: run `python experiments/tflite_conformance.py`."]
    r = read_json(path)
    c, d = r["classifier"], r["deeplab"]
    lines = [f"On the {r['images']} `val` photos of voc-animals-half:", "",
             "| | LiteRT (int8) | tinyseg (float32, dequantised weights) |", "| --- | --- | --- |",
             f"| DeepLabv3-MobileNetV2, mIoU over the 7 common classes (%) | "
             f"{100 * d['litert']['miou_common']:.2f} | {100 * d['tinyseg']['miou_common']:.2f} |",
             f"| DeepLabv3-MobileNetV2, mIoU over all present classes (%) | "
             f"{100 * d['litert']['miou']:.2f} | {100 * d['tinyseg']['miou']:.2f} |"]
    if "pixel_agreement_mean" in d["litert"]:
        lines.append(f"| same class on the same 513 x 513 input, share of pixels (%) | "
                     f"{100 * d['litert']['pixel_agreement_mean']:.2f} (lowest "
                     f"{100 * d['litert']['pixel_agreement_min']:.2f}) | |")
    lines += [f"| MobileNetV2 ImageNet classifier, same top-1 class (%) | "
              f"{100 * c['top1_agreement']:.1f} | |",
              f"| MobileNetV2 ImageNet classifier, top-5 classes shared | {c['top5_overlap']:.2f} of 5 | |", "",
              "LiteRT: the data README's protocol (long side 513, zero-padded, nearest back); tinyseg: "
              "`python -m tinyseg.tflite` then `evaluate.py --long-side 513`. The all-classes figure "
              "moves with rare classes seen in one or two photos (per-class IoUs in the JSON)."]
    return lines


def group(results, prefix):
    """The results of one row: every seed of the run names `prefix`-seed<s>."""
    return [r for name, r in sorted(results.items())
            if name.rsplit("-seed", 1)[0] == prefix and "-seed" in name]


def stats(rows, key="miou"):
    """(mean, std, n) in % of metrics[key] over the rows (std over seeds, ddof 1; 0 for one)."""
    values = [100 * r["metrics"][key] for r in rows if r["metrics"].get(key) is not None]
    if not values:
        return None
    return (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            len(values))


def cell(s):
    if s is None:
        return "not run yet"
    mean, std, n = s
    return f"{mean:.2f} ± {std:.2f} (n={n})"


def verdict(a, b, name_a, name_b):
    """The comparison rule of the module docstring, in words."""
    if a is None or b is None:
        return "not run yet"
    if a[2] < 2 or b[2] < 2:
        return "too few seeds to compare"
    difference = a[0] - b[0]
    if abs(difference) <= a[1] + b[1]:
        return f"no difference ({difference:+.2f}, spread {a[1] + b[1]:.2f})"
    better = name_a if difference > 0 else name_b
    return f"{better} better by {abs(difference):.2f} (spread {a[1] + b[1]:.2f})"


def oracle_row(results, name, row):
    record = results.get(name)
    if record is None or row not in record["rows"]:
        return "not run yet"
    return f"{100 * record['rows'][row]['miou']:.2f}"


def table1_labels(results):
    lines = ["| output stride | head | trained mIoU* (%), mean ± std | oracle mIoU* (%) | paper mIoU* (%) |",
             "| --- | --- | --- | --- | --- |"]
    verdicts = []
    for r in (16, 32):
        row_stats = {}
        for head, oracle_key in (("dupsampling", "PCA"), ("bilinear", "bilinear")):
            row_stats[head] = stats(group(results, f"labels-{head}-os{r}"))
            lines.append(f"| {r} | {head} | {cell(row_stats[head])} | "
                         f"{oracle_row(results, f'oracle-voc-r{r}', oracle_key)} | "
                         f"{PAPER[('labels', head, r)]:.2f} |")
        verdicts.append(f"- OS {r}: " + verdict(row_stats["dupsampling"], row_stats["bilinear"],
                                               "DUpsampling", "bilinear"))
    return lines + [""] + verdicts


def macs_text(rows):
    if not rows:
        return "-"
    macs = rows[0]["macs"]
    return (f"{macs['paper_size']['total'] / 1e9:.2f} ({macs['paper_size'].get('decoder', 0) / 1e9:.3f}) / "
            f"{macs['val_size']['total'] / 1e9:.2f}")


def table1_photos(results, prefix=""):
    lines = ["| output stride | decoder | mIoU, 7 common classes (%) | mIoU, all present (%) | "
             "GMACs at 512² (decoder) / at 250×188 | paper mIoU (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    s = {}
    for r in (32, 16):
        for decoder in ("bilinear", "dupsampling"):
            rows = group(results, f"{prefix}photos-{decoder}-os{r}")
            s[decoder, r] = stats(rows, "miou_common")
            lines.append(f"| {r} | {decoder} | {cell(s[decoder, r])} | {cell(stats(rows))} | "
                         f"{macs_text(rows)} | {PAPER[('photos', decoder, r)]:.2f} |")
    lines += ["", "On the 7 common classes:",
              "- OS 32, DUpsampling vs bilinear: " + verdict(s["dupsampling", 32], s["bilinear", 32], "DUpsampling", "bilinear"),
              "- OS 16, DUpsampling vs bilinear: " + verdict(s["dupsampling", 16], s["bilinear", 16], "DUpsampling", "bilinear"),
              "- DUpsampling OS 32 vs bilinear OS 16 (paper: 72.09 vs 72.15, about equal): "
              + verdict(s["dupsampling", 32], s["bilinear", 16], "DUpsampling OS 32", "bilinear OS 16")]
    return lines


def pretrained_section(results, folders):
    """Part 2's rows (issue 16): the photo comparisons fine-tuned from ImageNet MobileNetV2,
    beside the from-scratch rows; then DUpsampling on the DeepLabv3 model's own backbone."""
    if not any(name.startswith(("mnv2-", "dlv3-")) for name in results):
        return ["Not run yet: `python experiments/pretrained.py` (MobileNetV2 fine-tuned from the "
                "ImageNet TFLite classifier; about 10-15 minutes a run here)."]
    lines = table1_photos(results, "mnv2-")
    lines += ["", "DUpsampling at OS 16, mIoU over the 7 common classes (%):", "",
              "| variant | from scratch (small ResNet) | from ImageNet (MobileNetV2) |", "| --- | --- | --- |"]
    s = {}
    for label, suffix in (("T learned, W by PCA", ""), ("T fixed at 1", "-fixedT"),
                          ("W learned by SGD", "-Wlearned")):
        for prefix in ("", "mnv2-"):
            s[prefix, suffix] = stats(group(results, f"{prefix}photos-dupsampling-os16{suffix}"), "miou_common")
        lines.append(f"| {label} | {cell(s['', suffix])} | {cell(s['mnv2-', suffix])} |")
    lines += ["", "From ImageNet:",
              "- learned T vs fixed T: " + verdict(s["mnv2-", ""], s["mnv2-", "-fixedT"], "learned T", "fixed T"),
              "- W by PCA vs W learned by SGD: " + verdict(s["mnv2-", ""], s["mnv2-", "-Wlearned"], "PCA", "learned W")]
    dlv3 = stats(group(results, "dlv3-photos-dupsampling-os16"), "miou_common")
    path = os.path.join(folders.results, "tflite-conformance.json")
    own = f"{100 * read_json(path)['deeplab']['tinyseg']['miou_common']:.2f}" if os.path.exists(path) else "-"
    lines += ["", "The DUpsampling decoder (OS 16, W by PCA) on the backbone of the DeepLabv3-MobileNetV2 "
              "PASCAL model, fine-tuned from it with the same budget; beside it the DeepLabv3 model "
              "as it comes (its image pooling + 1x1 head, bilinear), and DUpsampling from ImageNet:", "",
              "| network | mIoU, 7 common classes (%) |", "| --- | --- |",
              f"| DeepLabv3-MobileNetV2 as trained by Google (no fine-tuning here) | {own} |",
              f"| its backbone + DUpsampling, fine-tuned here | {cell(dlv3)} |",
              f"| ImageNet MobileNetV2 + DUpsampling, fine-tuned here | {cell(s['mnv2-', ''])} |"]
    return lines


def temperature_table(results):
    lines = ["| network | T | mIoU (%) | final T, mean over seeds | paper mIoU (%) |",
             "| --- | --- | --- | --- | --- |"]
    verdicts = []
    for kind, key, label in (("photos", "miou_common", "photos, OS 16 (7 common classes)"),
                             ("labels", "miou", "label-only net, OS 16 (mIoU*)")):
        s = {}
        for temperature, suffix in (("learned", ""), ("fixed at 1", "-fixedT")):
            rows = group(results, f"{kind}-dupsampling-os16{suffix}")
            s[temperature] = stats(rows, key)
            final_t = [r["T"][-1] for r in rows if r.get("T")]
            t_text = f"{np.mean(final_t):.3f}" if final_t else "-"
            paper = (73.15 if temperature == "learned" else PAPER_FIXED_T) if kind == "photos" else "-"
            lines.append(f"| {label} | {temperature} | {cell(s[temperature])} | {t_text} | {paper} |")
        verdicts.append(f"- {label}: " + verdict(s["learned"], s["fixed at 1"], "learned T", "fixed T"))
    return lines + [""] + verdicts


def projection_tables(results):
    lines = ["Oracle (no network): val masks encoded and decoded.", "",
             "| r | data | decoding | oracle mIoU* (%) |", "| --- | --- | --- | --- |"]
    for r in (16, 32):
        for row in ("PCA", "auto-encoder", "bilinear"):
            value = oracle_row(results, f"oracle-voc-r{r}", row)
            if value != "not run yet" or row != "auto-encoder" or r == 16:
                lines.append(f"| {r} | VOC val, full resolution | {row} | {value} |")
    ae = results.get("oracle-voc-r16", {}).get("rows", {}).get("auto-encoder", {}).get("fit")
    for seed_name in sorted(n for n in results if n.startswith("oracle-learnedW")):
        rows = results[seed_name]["rows"]
        lines.append(f"| 16 | animal val, half resolution | learned W, seed {seed_name.rsplit('seed', 1)[1]} "
                     f"(least-squares codes) | {100 * rows['learned W (least-squares codes)']['miou']:.2f} |")
    first = next((results[n] for n in sorted(results) if n.startswith("oracle-learnedW")), None)
    if first:
        lines.append(f"| 16 | animal val, half resolution | PCA | "
                     f"{100 * first['rows']['PCA W, same masks']['miou']:.2f} |")
    if ae:
        ae_error = ae.get("train_error_per_block", ae.get("error_per_block"))
        pca_error = ae.get("pca_train_error_per_block", ae.get("pca_error_per_block"))
        lines += ["", f"The auto-encoder (started at the PCA, {ae['iters']} SGD steps on "
                  f"{ae['blocks']:,} training blocks) reconstructs 5,000 of its training blocks "
                  f"with a squared error of {ae_error:.3f} per block, the PCA with "
                  f"{pca_error:.3f} (in-sample; the val masks' oracle mIoU* above is the "
                  "held-out measure)."]
    lines += ["", "Trained on real photos (OS 16, DUpsampling, learned T):", "",
              "| W | mIoU, 7 common classes (%) | mIoU, all present (%) |", "| --- | --- | --- |"]
    s = {}
    for label, suffix in (("PCA (the paper)", ""), ("learned by SGD from a random start", "-Wlearned"),
                          ("auto-encoder's decoder", "-Wautoencoder")):
        rows = group(results, f"photos-dupsampling-os16{suffix}")
        s[label] = stats(rows, "miou_common")
        lines.append(f"| {label} | {cell(s[label])} | {cell(stats(rows))} |")
    lines += ["", "- PCA vs learned W: " + verdict(s["PCA (the paper)"], s["learned by SGD from a random start"], "PCA", "learned W"),
              "- PCA vs auto-encoder: " + verdict(s["PCA (the paper)"], s["auto-encoder's decoder"], "PCA", "auto-encoder"),
              "", "W fitted on one label distribution, used on another (r = 16, half resolution, oracle mIoU* %):", "",
              "| W fitted on | all VOC val (725) | animal val (230) |", "| --- | --- | --- |"]
    cross = results.get("oracle-cross-r16", {}).get("rows", {})
    for fit in ("all VOC (train_aug)", "animal scenes (train_aug)"):
        values = [cross.get(f"fit {fit}, score {v}") for v in ("all VOC val", "animal val")]
        lines.append(f"| {fit} | " + " | ".join(
            "not run yet" if v is None else
            f"{100 * v['miou']:.2f} (7 common classes: {100 * v['miou_common']:.2f})" for v in values) + " |")
    rare = _rarest_losses(cross.get("fit animal scenes (train_aug), score all VOC val"))
    if rare:
        lines += ["", "Classes the animal-scene W restores worst on all of VOC val (oracle IoU %): " + rare]
    return lines


def _rarest_losses(row, count=6):
    if row is None:
        return ""
    ious = sorted((v, k) for k, v in row["per_class_iou"].items() if v is not None)[:count]
    return ", ".join(f"{name} {100 * v:.1f}" for v, name in ious)


def machine_line(results):
    """Which machine ran the runs, and the median wall time of each kind of run."""
    machines = sorted({f"{r['machine']['cpu']} ({r['machine']['cores']} cores)" for r in results.values()})
    times = []
    for kind in ("labels", "photos", "oracle"):
        walls = [r["wall_s"] for r in results.values() if r["kind"] == kind]
        if walls:
            times.append(f"{kind} runs: {len(walls)}, median {np.median(walls) / 60:.1f} min")
    return (f"{len(results)} result files in `experiments/results/`; machine: "
            f"{', '.join(machines) or '-'}, two runs at a time with one thread each. " + "; ".join(times) + ".")


def write_report(folders, out_dir=None):
    """Write the tables, figures and gallery; returns the markdown file's path."""
    import figures

    results = load_results(folders)
    quick = folders.quick
    doc_dir = out_dir or (os.path.join(folders.runs, "..", "report") if quick else os.path.join(REPO, "docs"))
    fig_dir = os.path.join(doc_dir, "figures", "experiments")
    os.makedirs(fig_dir, exist_ok=True)
    pictures = figures.draw_all(results, fig_dir)
    picture_links = [f"![{title}](figures/experiments/{os.path.basename(path)})" for title, path in pictures]
    gallery_path = gallery.make_gallery(results, folders, fig_dir, quick)
    with open(os.path.join(os.path.dirname(__file__), "report_intro.md")) as f:
        intro = f.read().rstrip()
    sections = [intro, "",
                "## 1. Table 1, mIoU*: the label-only network", ""] + table1_labels(results) + [
                "", "## 2. Table 1, mIoU on real photos", ""] + table1_photos(results) + [
                "", "## 3. The adaptive temperature (Sec. 4.1.4, Fig. 5)", ""] + temperature_table(results) + [
                "", *picture_links, "", "## 4. How W is obtained", ""] + projection_tables(results) + [
                "", "## 5. Gallery", ""]
    sections.append(f"![gallery](figures/experiments/{os.path.basename(gallery_path)})" if gallery_path
                    else "Not drawn yet: the OS 32 and OS 16 photo runs of seed 0 are not all finished.")
    reading = os.path.join(os.path.dirname(__file__), "report_reading.md")
    if os.path.exists(reading):  # written by hand once the runs are in: what the numbers say
        with open(reading) as f:
            sections += ["", f.read().rstrip()]
    sections += ["", "## Part 2: the photo rows from an ImageNet start (MobileNetV2)", ""]
    sections += pretrained_section(results, folders)
    reading = os.path.join(os.path.dirname(__file__), "report_reading_part2.md")
    if os.path.exists(reading):  # by hand, once part 2's runs are in
        with open(reading) as f:
            sections += ["", f.read().rstrip()]
    sections += ["", "## A real trained network through tinyseg (for part 2)", ""]
    sections += conformance_section(folders)
    sections += ["", "## Where and how long", "", machine_line(results)]
    path = os.path.join(doc_dir, "experiments.md")
    with open(path, "w") as f:
        f.write("\n".join(sections) + "\n")
    print(f"report: {path}")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="report on the --quick results")
    parser.add_argument("--scratch", default=None, help="--quick: the folder the quick runs wrote to")
    args = parser.parse_args(argv)
    write_report(Folders(args.quick, args.scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
