"""Section 5's gallery: six val photos, image | truth | bilinear OS 32 | DUpsampling OS 32 | OS 16.

The pictures come from `evaluate.py --save-dir` run on the seed-0 checkpoint of each photo
run (its NAME_panel.png is image | truth | prediction); this file only puts them side by side.
"""
import os
import subprocess
import sys

from PIL import Image, ImageDraw

from common import REPO

COLUMNS = (("bilinear OS 32", "photos-bilinear-os32-seed0"),
           ("DUpsampling OS 32", "photos-dupsampling-os32-seed0"),
           ("DUpsampling OS 16", "photos-dupsampling-os16-seed0"))
IMAGES = 6


def panels_of(run_dir, save_dir, images):
    """Run evaluate.py on the run's last checkpoint; {id: panel image} of the first `images`."""
    if not os.path.isdir(save_dir) or len([f for f in os.listdir(save_dir) if f.endswith("_panel.png")]) < images:
        subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--checkpoint",
                        os.path.join(run_dir, "last.npz"), "--max-images", str(images),
                        "--save-dir", save_dir], check=True, stdout=subprocess.DEVNULL)
    names = sorted(f for f in os.listdir(save_dir) if f.endswith("_panel.png"))[:images]
    return {name[:-len("_panel.png")]: Image.open(os.path.join(save_dir, name)).convert("RGB")
            for name in names}


def make_gallery(results, folders, fig_dir, quick=False):
    """Write gallery.png; None while one of the three seed-0 runs is unfinished."""
    if any(run not in results for _, run in COLUMNS):
        return None
    columns = [panels_of(folders.run_dir(run), os.path.join(folders.runs, "gallery", run), IMAGES)
               for _, run in COLUMNS]
    ids = sorted(columns[0])
    width, height = columns[0][ids[0]].width // 3, max(p.height for p in columns[0].values())
    header = 18
    sheet = Image.new("RGB", (5 * width, header + len(ids) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, title in enumerate(["image", "truth"] + [t for t, _ in COLUMNS]):
        draw.text((k * width + 4, 3), title, fill="black")
    for row, image_id in enumerate(ids):
        top = header + row * height
        panel = columns[0][image_id]
        w = panel.width // 3
        sheet.paste(panel.crop((0, 0, 2 * w, panel.height)), (0, top))     # image | truth
        for k, column in enumerate(columns):
            p = column[image_id]
            sheet.paste(p.crop((2 * w, 0, 3 * w, p.height)), ((2 + k) * width, top))
    path = os.path.join(fig_dir, "gallery.png")
    sheet.save(path)
    return path
