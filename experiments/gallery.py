"""Section 5's gallery: six val photos, image | truth | bilinear OS 32 | DUpsampling OS 32 | OS 16.

The pictures come from `evaluate.py --save-dir` run on the seed-0 checkpoint of each photo
run (its NAME_panel.png is image | truth | prediction); this file only puts them side by side.
"""
import os
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

from common import REPO
from tinyseg.data import build_dataset
from tinyseg.evaluation import legend

COLUMNS = (("bilinear OS 32", "photos-bilinear-os32-seed0"),
           ("DUpsampling OS 32", "photos-dupsampling-os32-seed0"),
           ("DUpsampling OS 16", "photos-dupsampling-os16-seed0"))
IMAGES = 6


def predictions_of(run_dir, save_dir, images):
    """Run evaluate.py on the run's last checkpoint; {id: (panel, label map)} of the first
    `images` val photos (the panel is image | truth | prediction, then a legend strip)."""
    if not os.path.isdir(save_dir) or len([f for f in os.listdir(save_dir) if f.endswith("_panel.png")]) < images:
        subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--checkpoint",
                        os.path.join(run_dir, "last.npz"), "--max-images", str(images),
                        "--save-dir", save_dir], check=True, stdout=subprocess.DEVNULL)
    names = sorted(f[:-len("_panel.png")] for f in os.listdir(save_dir) if f.endswith("_panel.png"))
    return {name: (Image.open(os.path.join(save_dir, f"{name}_panel.png")).convert("RGB"),
                   np.asarray(Image.open(os.path.join(save_dir, f"{name}.png"))))
            for name in names[:images]}


def make_gallery(results, folders, fig_dir, quick=False):
    """Write gallery.png; None while one of the three seed-0 runs is unfinished."""
    if any(run not in results for _, run in COLUMNS):
        return None
    columns = [predictions_of(folders.run_dir(run), os.path.join(folders.runs, "gallery", run), IMAGES)
               for _, run in COLUMNS]
    ids = sorted(columns[0])
    settings = results[COLUMNS[0][1]]["settings"]
    dataset = build_dataset(settings["dataset"], settings["data_root"], settings["val_split"])
    truths = {image_id: dataset.load_mask(dataset.ids.index(image_id)) for image_id in ids}
    sizes = {image_id: truths[image_id].shape for image_id in ids}          # (h, w) of each photo
    cell_w, cell_h = max(w for _, w in sizes.values()), max(h for h, _ in sizes.values())
    header = 18
    sheet = Image.new("RGB", (5 * cell_w, header + len(ids) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, title in enumerate(["image", "truth"] + [t for t, _ in COLUMNS]):
        draw.text((k * cell_w + 4, 3), title, fill="black")
    for row, image_id in enumerate(ids):
        h, w = sizes[image_id]
        top = header + row * cell_h
        panel = columns[0][image_id][0]
        for k in range(2):                                                   # image, truth
            sheet.paste(panel.crop((k * w, 0, (k + 1) * w, h)), (k * cell_w, top))
        for k, column in enumerate(columns):                                 # the predictions
            sheet.paste(column[image_id][0].crop((2 * w, 0, 3 * w, h)), ((2 + k) * cell_w, top))
    labels = list(truths.values()) + [column[i][1] for column in columns for i in ids]
    sheet = legend(sheet, labels, dataset.class_names, dataset.palette)
    path = os.path.join(fig_dir, "gallery.png")
    sheet.save(path)
    return path
