"""Training on real photos (voc-animals-half) through tinyseg's own trainer, and scoring the result.

One photo run = `tinyseg.training.train` with the settings below in experiments/runs/<name>/
(config.json, projection, last.npz, log.jsonl: a killed run resumes from last.npz), then the
final network scored on the 230 `val` photos at their own size: mIoU over all present classes
and over the seven common ones (common.COMMON_CLASSES), per-class IoU, and its multiply-adds.

The network: small_resnet (tinyseg.models.resnet; units (2, 2, 2, 2), widths 16..128, trained
from scratch) -> ASPP (64 channels) -> a decoder without low-level fusion, as in Table 1:
"bilinear" (1x1 classifier, bilinear x r) or "dupsampling" (1x1 to C~ = 64, W f + mean,
softmax with temperature). W is fitted by PCA on the 3,131 `train_aug` masks; or (the W
study) learned by SGD with the network from a random start, or replaced by the decoder of an
auto-encoder of the same masks' blocks (experiments/autoencoder.py).
"""
import os

import numpy as np

from common import SHARED_DATA, VOC_ANIMALS, machine, projection_file, scores, write_json
from tinyseg import flops
from tinyseg.data import build_dataset
from tinyseg.evaluation import evaluate
from tinyseg.pca import save_projection
from autoencoder import AutoencoderUpsample, autoencoder_file, load_autoencoder
from tinyseg.models import build_model
from tinyseg.training import load_checkpoint, read_log, train

# the budget of one run (the paper: 30k iterations at batch 48, 512 crops, from ImageNet weights)
SETTINGS = dict(backend="numpy", dataset="voc_aug", data_root=VOC_ANIMALS, split="train_aug",
                val_split="val", model="small_resnet", fuse=[], dim=64, loss="cross_entropy",
                pretrained=None, iters=1000, batch_size=8, lr=0.02, momentum=0.9,
                weight_decay=1e-4, crop=160, scale_range=[0.5, 2.0], workers=1, stop_at=None,
                log_every=10, val_every=0, val_images=None, ckpt_every=100, ae_iters=2000)
QUICK = dict(SETTINGS, dataset="synthetic", split="train", model="tiny_resnet", iters=4, batch_size=2, crop=64,
             log_every=2, ckpt_every=2, val_images=3, ae_iters=3)
W_SOURCES = ("pca", "learned", "autoencoder")
# the photos' auto-encoder (half-resolution animal masks): SGD at 0.01, the rate of the VOC
# masks' one, diverged at once; 0.003 is the next rate tried
AUTOENCODER_LR = 0.003
# the pretrained starts of part 2 (tinyseg.tflite): Google's quantised MobileNetV2 ImageNet
# classifier, and the backbone of its DeepLabv3-MobileNetV2 PASCAL model (heads left out)
IMAGENET_MOBILENET = os.path.join(SHARED_DATA, "imagenet-mobilenet", "mobilenet_v2_1.0_224_quant.tflite")
DEEPLAB_MOBILENET = os.path.join(SHARED_DATA, "imagenet-mobilenet", "deeplabv3_mnv2_pascal_quant.tflite")
STARTS = {"imagenet": ("mnv2-", IMAGENET_MOBILENET), "deeplab": ("dlv3-", DEEPLAB_MOBILENET)}


def photo_run(decoder, output_stride, seed, temperature="learned", w_source="pca", quick=False,
              root=None, pretrained=None):
    """A run spec; its name holds every setting that differs between the experiments' rows.

    pretrained: None (small_resnet from scratch), or a key of STARTS: MobileNetV2 fine-tuned at
    lr 0.007 from that TFLite file; the names then start with "mnv2-" or "dlv3-"."""
    settings = dict(QUICK if quick else SETTINGS, decoder=decoder, output_stride=output_stride,
                    temperature=temperature, seed=seed, w_source=w_source,
                    trainable_projection=w_source == "learned")
    prefix = ""
    if pretrained:
        prefix, path = STARTS[pretrained]
        settings.update(model="mobilenet_v2", pretrained=path, lr=0.007)
    if w_source not in W_SOURCES:
        raise ValueError(f"w_source must be one of {W_SOURCES}, got {w_source!r}")
    if root is not None:
        settings["data_root"] = root
    name = f"photos-{decoder}-os{output_stride}"
    if decoder == "dupsampling":
        name += ("-fixedT" if temperature == "fixed" else "") + ("" if w_source == "pca" else f"-W{w_source}")
    return dict(name=f"{prefix}{name}-seed{seed}", kind="photos", settings=settings)


def random_projection_file(path, num_classes, ratio, dim, seed):
    """W drawn as PyTorch draws a 1x1 conv's weights (U(-1/sqrt(C~), 1/sqrt(C~))), mean 0: the
    start of the public DUpsampling code, whose W is an ordinary conv trained with the network."""
    if not os.path.exists(path):
        rng = np.random.default_rng([seed, 12345])
        size = ratio * ratio * num_classes
        W = rng.uniform(-dim ** -0.5, dim ** -0.5, (size, dim)).astype(np.float32)
        meta = dict(ratio=ratio, num_classes=num_classes, dim=dim, init="uniform",
                    explained_variance=np.zeros(dim))
        save_projection(path, W, np.zeros(size, np.float32), meta)
    return path


def execute(run, folders, clock):
    """Train (or resume) one photo run, score it on val, write its result JSON."""
    s = dict(run["settings"])
    out = folders.run_dir(run["name"])
    s.update(out=out, resume=os.path.exists(os.path.join(out, "last.npz")))
    train_set = build_dataset(s["dataset"], s["data_root"], s["split"], labels_only=True)
    customize = None
    if s["decoder"] == "dupsampling":
        if s["w_source"] == "autoencoder":
            s["autoencoder"] = autoencoder_file(train_set, s["output_stride"], s["dim"], folders,
                                                 iters=s["ae_iters"], lr=AUTOENCODER_LR)
            customize = _autoencoder_upsampling(s)
            s["projection"] = None
        elif s["w_source"] == "learned":
            s["projection"] = random_projection_file(os.path.join(out, "projection-init.npz"),
                                                     train_set.num_classes, s["output_stride"],
                                                     s["dim"], s["seed"])
        else:
            s["projection"] = projection_file(train_set, s["output_stride"], s["dim"], folders)
    else:
        s["projection"] = None
    write_json(os.path.join(out, "config.json"), s)  # what evaluate.py reads beside a checkpoint
    if not (s["resume"] and _finished(out, s["iters"])):
        train(s, np, customize)
    train_seconds = clock.total()
    model, meta = trained_model(out, customize)
    val_set = build_dataset(s["dataset"], s["data_root"], s["val_split"])
    confusion = evaluate(model, val_set, np, max_images=s["val_images"])
    records = {}
    for record in read_log(os.path.join(out, "log.jsonl")):
        if "loss" in record:
            records[record["iter"]] = record  # a resumed run logs some iterations twice
    iters = sorted(records)
    result = dict(name=run["name"], kind=run["kind"], settings=s, seed=s["seed"],
                  log_iters=iters, loss=[records[i]["loss"] for i in iters],
                  T=[records[i]["T"] for i in iters] if model.temperature is not None else None,
                  images_per_s=float(np.median([records[i]["images_per_s"] for i in iters])),
                  metrics=scores(confusion, val_set.class_names), iteration=meta["iteration"],
                  val_images=s["val_images"] or len(val_set),
                  macs=dict(val_size=_macs(model, (188, 250)), paper_size=_macs(model, (512, 512))),
                  train_seconds=train_seconds, wall_s=clock.total(),
                  wall_sessions=clock.saved["sessions"] + 1, machine=machine())
    write_json(folders.result_path(run["name"]), result)
    m = result["metrics"]
    print(f"  {run['name']}: val mIoU {100 * m['miou']:.2f}% (common classes "
          f"{100 * m['miou_common']:.2f}%), {result['wall_s']:.0f} s", flush=True)
    return result


def trained_model(out, customize=None):
    """The network of out/last.npz, rebuilt from its config (and customised as it was trained)."""
    model_state, _, meta = load_checkpoint(os.path.join(out, "last.npz"))
    model = build_model(**meta["config"])
    if customize is not None:
        customize(model)
    model.load_state_dict(model_state)
    return model, meta


def _autoencoder_upsampling(settings):
    """customize(model): DUpsample replaced by the auto-encoder's fixed decoder."""
    autoencoder = load_autoencoder(settings["autoencoder"])

    def customize(model):
        model.decoder.dupsample = AutoencoderUpsample.from_autoencoder(autoencoder,
                                                                       settings["output_stride"])
    return customize


def _finished(out, iters):
    """True when last.npz already holds the final iteration (the run only needs scoring)."""
    return load_checkpoint(os.path.join(out, "last.npz"))[2]["iteration"] >= iters


def _macs(model, size):
    """Multiply-adds of one image of `size` (H, W), per group and in total (tinyseg.flops)."""
    records = flops.count(model, size=size)
    groups = {}
    for record in records:
        groups[record.group] = groups.get(record.group, 0) + record.macs
    return dict(groups, total=sum(groups.values()), size=list(size))
