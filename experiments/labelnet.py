"""The paper's mIoU* network (Sec. 4.1.1): a light CNN fed the one-hot GROUND TRUTH, not the image.

    one-hot labels (N, C, H, W) -> five 3x3 conv + BN + ReLU (width w) -> (N, w, H/r, W/r)
                                -> head: bilinear (1x1 classifier, bilinear x r)
                                      or DUpsampling (1x1 to C~, W f + mean, softmax(z / T))

The five convs all have stride 2 for output stride 32; for output stride 16 the LAST conv has
stride 1 (four halvings). Void pixels (255) are all-zero one-hot vectors and are not scored.
The experiments use w = 32 (table1_labels.SETTINGS). What the network can score is an upper
bound of each head: its input already holds the answer, so the only loss is what the head
cannot restore from 1/r of the resolution.

Training samples: a random crop x crop window of a training mask (padded with void where the
mask is smaller) and a random left-right flip; batch k depends only on (seed, k), so a resumed
run sees the batches an uninterrupted one would. Scored at full mask resolution on val.
"""
import math
import os

import numpy as np

from tinyseg import functional as F
from tinyseg import nn
from tinyseg.autograd import Tensor, no_grad
from tinyseg.data import IGNORE_INDEX
from tinyseg.metrics import ConfusionMatrix
from tinyseg.models.decoders import BilinearHead, DUpsamplingDecoder
from tinyseg.optim import SGD, PolyLR
from tinyseg.training import load_checkpoint, save_checkpoint


class StridedConvBNReLU(nn.Module):
    """3x3 conv (stride s, padding 1) -> BN -> ReLU: (N, C_in, H, W) -> (N, C_out, H/s, W/s)."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x), relu=True)


class LabelNet(nn.Module):
    """One-hot labels (N, C, H, W) -> scores (N, C, H, W); H, W multiples of output_stride."""

    def __init__(self, num_classes, output_stride, decoder, dim=64, width=64,
                 temperature="learned", trainable_projection=False):
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError(f"LabelNet: output stride 16 or 32, got {output_stride}")
        strides = (2, 2, 2, 2, 2) if output_stride == 32 else (2, 2, 2, 2, 1)
        channels = (num_classes,) + (width,) * 5
        self.convs = nn.Sequential(*(StridedConvBNReLU(channels[i], channels[i + 1], s)
                                     for i, s in enumerate(strides)))
        self.num_classes, self.output_stride, self.decoder_name = num_classes, output_stride, decoder
        if decoder == "dupsampling":
            self.head = DUpsamplingDecoder(width, {}, num_classes, output_stride, dim,
                                           temperature=temperature,
                                           trainable_projection=trainable_projection)
        elif decoder == "bilinear":
            self.head = BilinearHead(width, num_classes)
        else:
            raise ValueError(f"LabelNet: decoder 'dupsampling' or 'bilinear', got {decoder!r}")

    @property
    def temperature(self):
        return self.head.temperature if self.decoder_name == "dupsampling" else None

    def forward(self, onehot):
        return self.head(self.convs(onehot), {}, onehot.shape[2:])

    def loss(self, onehot, masks):
        scores = self(onehot)
        if self.decoder_name == "dupsampling":
            return F.nll_loss(scores, masks)  # scores are log softmax(z / T): Eq. (6)
        return F.cross_entropy(scores, masks)

    def param_groups(self, weight_decay):
        no_decay = self.head.no_decay_parameters() if self.decoder_name == "dupsampling" else []
        skip = {id(p) for p in no_decay}
        groups = [{"params": [p for p in self.parameters() if id(p) not in skip],
                   "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups


def onehot(masks, num_classes):
    """(N, H, W) ids with 255 void -> (N, C, H, W) float32 one-hot; void pixels all zero."""
    n, h, w = masks.shape
    out = np.zeros((n, num_classes, h, w), np.float32)
    valid = masks != IGNORE_INDEX
    idx_n, idx_h, idx_w = np.nonzero(valid)
    out[idx_n, masks[valid].astype(np.int64), idx_h, idx_w] = 1.0
    return out


def pad_masks(mask, multiple):
    """(H, W) -> (H', W') padded with void at the bottom and right to multiples of `multiple`."""
    h, w = mask.shape
    padded = np.full((h + -h % multiple, w + -w % multiple), IGNORE_INDEX, mask.dtype)
    padded[:h, :w] = mask
    return padded


def sample_batch(masks, batch_size, crop, seed, k):
    """Batch k of (seed): random masks, a random crop x crop window of each, random flips."""
    rng = np.random.default_rng([seed, k])
    batch = np.full((batch_size, crop, crop), IGNORE_INDEX, np.int64)
    for b, i in enumerate(rng.integers(len(masks), size=batch_size)):
        mask = masks[i]
        h, w = mask.shape
        top, left = rng.integers(max(h - crop, 0) + 1), rng.integers(max(w - crop, 0) + 1)
        window = mask[top:top + crop, left:left + crop]
        if rng.random() < 0.5:
            window = window[:, ::-1]
        batch[b, :window.shape[0], :window.shape[1]] = window
    return batch


def evaluate_labelnet(model, masks, num_classes):
    """Confusion matrix of the model's predictions on full-resolution masks (one at a time)."""
    confusion = ConfusionMatrix(num_classes)
    model.eval()
    with no_grad():
        for mask in masks:
            padded = pad_masks(mask, model.output_stride)
            scores = model(Tensor(onehot(padded[None], num_classes))).data[0]   # (C, H', W')
            prediction = scores.argmax(axis=0)[:mask.shape[0], :mask.shape[1]]
            confusion.update(prediction, mask)
    model.train()
    return confusion


def train_labelnet(model, masks, settings, run_dir, log):
    """Train `model` on `masks` (a list of (H, W) arrays) with SGD + poly LR, resumably.

    settings: iters, batch_size, crop, lr, momentum, weight_decay, seed, ckpt_every.
    log(iteration, loss, T) is called every iteration; checkpoints go to run_dir/last.npz."""
    optimizer = SGD(model.param_groups(settings["weight_decay"]), lr=settings["lr"],
                    momentum=settings["momentum"])
    schedule = PolyLR(optimizer, settings["iters"])
    last = os.path.join(run_dir, "last.npz")
    start = 0
    if os.path.exists(last):
        model_state, optim_state, meta = load_checkpoint(last)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        start = meta["iteration"]
        print(f"  resumed at iteration {start}", flush=True)
    model.config = {}  # save_checkpoint stores it; this network is rebuilt from the run's settings
    done = start  # iterations whose SGD step is in the weights
    try:
        for iteration in range(start, settings["iters"]):
            schedule.step(iteration)
            batch = sample_batch(masks, settings["batch_size"], settings["crop"], settings["seed"],
                                 iteration)
            loss = model.loss(Tensor(onehot(batch, model.num_classes)), batch)
            value = float(loss.data)
            if not math.isfinite(value):
                raise RuntimeError(f"loss became {value} at iteration {iteration}; the last "
                                   f"checkpoint is {last}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done = iteration + 1
            log(done, value, model.temperature)
            if done % settings["ckpt_every"] == 0:
                save_checkpoint(last, model, optimizer, done)
    except KeyboardInterrupt:
        save_checkpoint(last, model, optimizer, done)
        print(f"  interrupted: saved {last} at iteration {done}; run the command again to go on",
              flush=True)
        raise
    save_checkpoint(last, model, optimizer, done)
