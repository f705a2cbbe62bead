"""How W is obtained: closed-form PCA (the paper) vs learned by SGD vs a non-linear auto-encoder.

    python experiments/projection.py                     # every run missing a result
    python experiments/projection.py --quick             # end to end in seconds, generated data

Two measures for each way of obtaining the decoding:
* oracle mIoU*: every r x r block of the val masks encoded and decoded without any network
  (tinyseg.metrics.dupsampling_oracle for PCA; the auto-encoder's own encoder; for a learned W,
  which has no encoder, the best code for it, least squares x = pinv(W) (v - mean));
* trained mIoU on real photos: the OS 16 DUpsampling network of experiments/photos.py with W
  from PCA (the Table 1 row), learned from a random start ("Wlearned", as the public code does),
  or the auto-encoder's decoder in DUpsample's place ("Wautoencoder").
And the question users ask, W fitted on one label distribution and used on another: W fitted
on all of VOC (train_aug) or on the animal scenes (voc-animals-half train_aug), each scored on
all of the val half and on the animal val photos' masks, all at half resolution (the animal
masks are the VOC masks with every second pixel; the others are subsampled the same way).
Results: experiments/results/oracle-*.json and photos-dupsampling-os16-W*-seed<s>.json.
"""
import os
import sys

import numpy as np

import photos
from autoencoder import autoencoder_file, autoencoder_oracle, load_autoencoder
from common import (VOC_ANIMALS, VOC_MASKS, experiment_main, fitted_projection, machine,
                    read_json, scores, write_json)
from tinyseg.data import build_dataset
from tinyseg.metrics import ConfusionMatrix, bilinear_oracle, dupsampling_oracle
from tinyseg.blocks import IGNORE_INDEX, blocks_to_labels, encode_blocks, onehot_blocks
from tinyseg.training import load_checkpoint



def oracle_run(name, quick, root, **settings):
    full = dict(voc=VOC_MASKS, animals=VOC_ANIMALS, dataset="voc", aug_dataset="voc_aug",
                fit_split="train", aug_split="train_aug", val_split="val", dim=64,
                ae_iters=2000, val_images=None)
    if quick:
        full.update(voc=root, animals=root, dataset="synthetic", aug_dataset="synthetic",
                     aug_split="train", ae_iters=3, val_images=4)
    return dict(name=f"oracle-{name}", kind="oracle", settings=dict(full, **settings))


def projection_runs(seeds, quick=False, root=None):
    runs = [oracle_run("voc-r16", quick, root, ratio=16, autoencoder=True),
            oracle_run("voc-r32", quick, root, ratio=32, autoencoder=False),
            oracle_run("cross-r16", quick, root, ratio=16)]
    for w_source in ("pca", "learned", "autoencoder"):
        runs += [photos.photo_run("dupsampling", 16, seed, w_source=w_source, quick=quick,
                                  root=root) for seed in seeds]
    runs += [oracle_run(f"learnedW-seed{seed}", quick, root, ratio=16, seed=seed,
                        photo_run=photos.photo_run("dupsampling", 16, seed, w_source="learned",
                                                   quick=quick, root=root)["name"])
             for seed in seeds]
    return runs


def oracle_scores(masks, restore, dataset):
    """Scores of restore(mask) -> labels against the masks themselves."""
    confusion = ConfusionMatrix(dataset.num_classes)
    for mask in masks:
        confusion.update(restore(mask), mask)
    return scores(confusion, dataset.class_names)


def least_squares_oracle(mask, W, mean, ratio):
    """As dupsampling_oracle, for a W without orthonormal columns: x = pinv(W) (v - mean)."""
    num_classes = W.shape[0] // (ratio * ratio)
    blocks, grid, _ = encode_blocks(mask, ratio, num_classes)
    v = onehot_blocks(blocks, num_classes, IGNORE_INDEX)                       # (B, N)
    x = np.linalg.lstsq(W.astype(np.float64), (v - mean).T.astype(np.float64), rcond=None)[0]
    restored = (W @ x).T + mean                                                # (B, N)
    restored = restored.reshape(len(v), ratio * ratio, num_classes)
    return blocks_to_labels(restored.argmax(axis=2), grid, ratio, np.shape(mask))


def masks_of(name, root, split, subsample=1, limit=None):
    dataset = build_dataset(name, root, split, labels_only=True)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return dataset, [dataset.load_mask(i)[::subsample, ::subsample] for i in range(count)]


def execute_any(run, folders, clock):
    """Any run of any experiment, by its kind."""
    import table1_labels

    executors = {"labels": table1_labels.execute, "photos": photos.execute, "oracle": execute}
    return executors[run["kind"]](run, folders, clock)


def execute(run, folders, clock):
    """An oracle run (or, for the trained rows, a photo run)."""
    if run["kind"] == "photos":
        return photos.execute(run, folders, clock)
    s, name = run["settings"], run["name"]
    r = s["ratio"]
    rows = {}
    if name.startswith("oracle-learnedW"):
        result_path = folders.result_path(s["photo_run"])
        if not os.path.exists(result_path):
            print(f"  {name}: waits for {s['photo_run']} (not finished yet)", flush=True)
            return None
        photo = read_json(result_path)["settings"]
        state = load_checkpoint(os.path.join(folders.run_dir(s["photo_run"]), "last.npz"))[0]
        W, mean = state["decoder.dupsample.W"], state["decoder.dupsample.mean"]
        train_set = build_dataset(photo["dataset"], photo["data_root"], photo["split"], labels_only=True)
        val_set, val = masks_of(photo["dataset"], photo["data_root"], s["val_split"], limit=s["val_images"])
        W_pca, mean_pca, _ = fitted_projection(train_set, r, s["dim"], folders)
        rows["learned W (least-squares codes)"] = oracle_scores(val, lambda m: least_squares_oracle(m, W, mean, r), val_set)
        rows["PCA W, same masks"] = oracle_scores(val, lambda m: dupsampling_oracle(m, W_pca, mean_pca, r), val_set)
        rows["learned W"] = dict(singular_values=np.linalg.svd(W, compute_uv=False).tolist())
    elif name.startswith("oracle-cross"):
        fits = {"all VOC (train_aug)": (s["aug_dataset"], s["voc"], s["aug_split"], 2),
                "animal scenes (train_aug)": (s["aug_dataset"], s["animals"], s["aug_split"], 1)}
        vals = {"all VOC val": (s["aug_dataset"], s["voc"], 2), "animal val": (s["aug_dataset"], s["animals"], 1)}
        for fit_name, (dataset, root, split, sub) in fits.items():
            train_set = build_dataset(dataset, root, split, labels_only=True)
            W, mean, _ = fitted_projection(train_set, r, s["dim"], folders, subsample=sub)
            for val_name, (vdataset, vroot, vsub) in vals.items():
                val_set, val = masks_of(vdataset, vroot, s["val_split"], vsub, s["val_images"])
                rows[f"fit {fit_name}, score {val_name}"] = oracle_scores(
                    val, lambda m: dupsampling_oracle(m, W, mean, r), val_set)
    else:  # oracle-voc-r<r>: the full-resolution VOC masks, as Table 1
        train_set = build_dataset(s["dataset"], s["voc"], s["fit_split"], labels_only=True)
        val_set, val = masks_of(s["dataset"], s["voc"], s["val_split"], limit=s["val_images"])
        W, mean, meta = fitted_projection(train_set, r, s["dim"], folders)
        rows["PCA"] = oracle_scores(val, lambda m: dupsampling_oracle(m, W, mean, r), val_set)
        rows["PCA"]["explained"] = float(np.sum(meta["explained_variance"]) / meta["total_variance"])
        rows["bilinear"] = oracle_scores(val, lambda m: bilinear_oracle(m, r, val_set.num_classes), val_set)
        if s["autoencoder"]:
            path = autoencoder_file(train_set, r, s["dim"], folders, iters=s["ae_iters"])
            model = load_autoencoder(path)
            rows["auto-encoder"] = oracle_scores(
                val, lambda m: autoencoder_oracle(m, model, r, val_set.num_classes), val_set)
            rows["auto-encoder"]["fit"] = read_json(path.replace(".npz", ".json"))
            rows["auto-encoder"]["fit"].pop("curve")
    result = dict(name=name, kind="oracle", settings=s, rows=rows, wall_s=clock.total(),
                  machine=machine())
    write_json(folders.result_path(name), result)
    for row, m in rows.items():
        if "miou" in m:
            print(f"  {name}: {row}: mIoU* {100 * m['miou']:.2f}%", flush=True)
    return result


def main(argv=None):
    experiment_main(__doc__, projection_runs, execute, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
