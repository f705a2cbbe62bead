"""Table 1, mIoU*: DUpsampling vs bilinear on the label-only network (experiments/labelnet.py).

    python experiments/table1_labels.py                  # every run missing a result
    python experiments/table1_labels.py --quick          # end to end in seconds, generated data

Trained on the 1,464 real VOC `train` masks (the paper's choice), scored on the 725 `val` masks
of ../shared/data/voc-masks at full resolution; W fitted by PCA on `train` (C~ = 64). Each
(head, output stride) is run for every seed; the temperature study adds the same network with
T fixed at 1 (`--temperature fixed` rows, see experiments/temperature.py).
Results: experiments/results/labels-<head>-os<r>[-fixedT]-seed<s>.json.
"""
import os
import sys

from common import VOC_MASKS, experiment_main, fitted_projection, machine, scores, write_json
from labelnet import LabelNet, evaluate_labelnet, train_labelnet
from tinyseg import nn
from tinyseg.data import build_dataset
from tinyseg.training import JsonLog, read_log

# the budget of one run (the paper: 100k iterations at batch 48, lr 0.07)
SETTINGS = dict(dataset="voc", data_root=VOC_MASKS, split="train", val_split="val", dim=64,
                width=32, iters=1000, batch_size=8, crop=192, lr=0.07, momentum=0.9,
                weight_decay=1e-4, ckpt_every=250, val_images=None)
QUICK = dict(SETTINGS, dataset="synthetic", width=8, iters=6, batch_size=2, crop=64,
             ckpt_every=3, val_images=3)

_masks = {}  # (dataset, root, split) -> list of masks, read once per process


def masks_of(name, root, split, limit=None):
    key = (name, root, split)
    if key not in _masks:
        dataset = build_dataset(name, root, split, labels_only=True)
        print(f"  reading {len(dataset)} {name} {split} masks ...", flush=True)
        _masks[key] = (dataset, [dataset.load_mask(i) for i in range(len(dataset))])
    dataset, masks = _masks[key]
    return dataset, masks[:limit]


def label_run(decoder, output_stride, seed, temperature="learned", quick=False, root=None):
    settings = dict(QUICK if quick else SETTINGS, decoder=decoder, output_stride=output_stride,
                    temperature=temperature, seed=seed)
    if root is not None:
        settings["data_root"] = root
    name = f"labels-{decoder}-os{output_stride}" + ("-fixedT" if temperature == "fixed" else "")
    return dict(name=f"{name}-seed{seed}", kind="labels", settings=settings)


def table1_runs(seeds, quick=False, root=None):
    return [label_run(decoder, r, seed, quick=quick, root=root)
            for r in (32, 16) for decoder in ("dupsampling", "bilinear") for seed in seeds]


def execute(run, folders, clock):
    """Train one label-only network, score it on val, write its result JSON."""
    s = run["settings"]
    run_dir = folders.run_dir(run["name"])
    train_set, train_masks = masks_of(s["dataset"], s["data_root"], s["split"])
    val_set, val_masks = masks_of(s["dataset"], s["data_root"], s["val_split"], s["val_images"])
    nn.init.manual_seed(s["seed"])
    model = LabelNet(train_set.num_classes, s["output_stride"], s["decoder"], s["dim"],
                     s["width"], s["temperature"])
    if s["decoder"] == "dupsampling":
        W, mean, meta = fitted_projection(train_set, s["output_stride"], s["dim"], folders)
        model.head.dupsample.set_projection(W, mean)
    log = JsonLog(os.path.join(run_dir, "log.jsonl"))

    def write(iteration, loss, temperature):
        log.write(iter=iteration, loss=loss, T=temperature)
        if iteration % 100 == 0 or iteration == s["iters"]:
            t_text = "" if temperature is None else f" T {temperature:.3f}"
            print(f"  iter {iteration}/{s['iters']} loss {loss:.4f}{t_text} "
                  f"({clock.total():.0f} s)", flush=True)

    try:
        train_labelnet(model, train_masks, s, run_dir, write)
    finally:
        log.close()
    train_seconds = clock.total()
    confusion = evaluate_labelnet(model, val_masks, val_set.num_classes)
    curve = {}
    for record in read_log(os.path.join(run_dir, "log.jsonl")):
        curve[record["iter"]] = record  # a resumed run logs some iterations twice: keep the last
    iters = sorted(curve)
    result = dict(name=run["name"], kind=run["kind"], settings=s, seed=s["seed"],
                  loss=[curve[i]["loss"] for i in iters],
                  T=[curve[i]["T"] for i in iters] if model.temperature is not None else None,
                  metrics=scores(confusion, val_set.class_names),
                  val_images=len(val_masks), train_seconds=train_seconds,
                  wall_s=clock.total(), wall_sessions=clock.saved["sessions"] + 1,
                  machine=machine())
    write_json(folders.result_path(run["name"]), result)
    m = result["metrics"]
    print(f"  {run['name']}: val mIoU* {100 * m['miou']:.2f}% (pixel acc. "
          f"{100 * m['pixel_acc']:.2f}%), {result['wall_s']:.0f} s", flush=True)
    return result


def main(argv=None):
    experiment_main(__doc__, table1_runs, execute, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
