"""The paper's non-linear alternative to W (Sec. 3.1, last paragraph): an auto-encoder of label blocks.

Each r x r block of a label map is one-hot encoded as v (N = r*r*C, DUpsampling's order, the
same encoding and void rule as tinyseg.pca). Linear PCA compresses it to x = W^T (v - mean)
and restores v~ = W x + mean. The auto-encoder puts one hidden ReLU layer on each side:

    encode:  x  = E2 relu(E1 (v - mean) + a1) + a2          (N -> hidden -> C~)
    decode:  v~ = D2 relu(D1 x + b1) + b2                   (C~ -> hidden -> N)

trained, like W (Eq. 3), to minimise the squared reconstruction error sum ||v - v~||^2 over the
training blocks (SGD with momentum and a poly learning rate, mini-batches of blocks).

It starts AT the PCA solution, so that SGD measures what the non-linearity adds: with
y = W^T (v - mean), the first 2 C~ hidden units of the encoder are relu(y) and relu(-y), and
E2 = [I; -I] gives x = relu(y) - relu(-y) = y; the decoder likewise computes relu(x) and
relu(-x) and D2 = [W^T; -W^T] gives W x. The other hidden units start small and random.

In a segmentation network only the decoder is used: the network predicts x at every location of
its 1/r map, and `AutoencoderUpsample` decodes it, v~ = D2 relu(D1 x + b1) + b2 per location,
then depth-to-space as DUpsample does (the last layer IS a DUpsample with W = D2, mean = b2).
"""
import numpy as np

from tinyseg import functional as F
from tinyseg import nn
from tinyseg.autograd import Tensor, no_grad
from tinyseg.backend import to_numpy
from tinyseg.optim import SGD, PolyLR
from tinyseg.blocks import IGNORE_INDEX, encode_blocks, onehot_blocks


class BlockAutoencoder(nn.Module):
    """v (B, N) -> x (B, C~) -> v~ (B, N), with the mean of the training blocks subtracted first."""

    def __init__(self, W, mean, hidden):
        super().__init__()
        size, dim = W.shape
        if hidden < 2 * dim:
            raise ValueError(f"hidden must be >= 2 C~ = {2 * dim} to start at the PCA, got {hidden}")
        self.size, self.dim, self.hidden = size, dim, hidden
        self.register_buffer("mean", np.asarray(mean, np.float32))
        eye, extra = np.eye(dim, dtype=np.float32), hidden - 2 * dim
        small = lambda *shape: nn.init.normal(shape, std=0.01)
        param = lambda *blocks, axis: nn.Parameter(np.concatenate(blocks, axis=axis).astype(np.float32))
        self.E1 = param(W, -W, small(size, extra), axis=1)                      # (N, hidden)
        self.E2 = param(eye, -eye, np.zeros((extra, dim)), axis=0)               # (hidden, C~)
        self.D1 = param(eye, -eye, small(dim, extra), axis=1)                    # (C~, hidden)
        self.D2 = param(W.T, -W.T, np.zeros((extra, size)), axis=0)              # (hidden, N)
        self.a1, self.b1 = (nn.Parameter(np.zeros(hidden, np.float32)) for _ in range(2))
        self.a2 = nn.Parameter(np.zeros(dim, np.float32))
        self.b2 = nn.Parameter(self.mean.copy())

    def encode(self, v):
        h = F.relu(F.matmul(v - self.mean, self.E1) + self.a1)      # (B, hidden)
        return F.matmul(h, self.E2) + self.a2                       # (B, C~)

    def decode(self, x):
        h = F.relu(F.matmul(x, self.D1) + self.b1)                  # (B, hidden)
        return F.matmul(h, self.D2) + self.b2                       # (B, N)

    def forward(self, v):
        return self.decode(self.encode(v))


def label_blocks_of(masks, ratio, num_classes, max_blocks, seed):
    """(B, r*r) uint8 block labels of the masks (void rule "nearest", as the PCA), at most
    max_blocks of them drawn uniformly without replacement; fully void blocks are left out."""
    chunks = []
    for mask in masks:
        blocks, _, valid = encode_blocks(mask, ratio, num_classes)
        chunks.append(blocks[valid.astype(bool)].astype(np.uint8))
    blocks = np.concatenate(chunks)
    if len(blocks) > max_blocks:
        keep = np.random.default_rng(seed).choice(len(blocks), max_blocks, replace=False)
        blocks = blocks[np.sort(keep)]
    return blocks


def fit_autoencoder(blocks, num_classes, W, mean, hidden=256, iters=2000, batch_size=256,
                    lr=0.002, seed=0, progress=None):
    """Train a BlockAutoencoder, started at the PCA (W, mean), on (B, r*r) block labels;
    returns it and the loss curve (squared error per block)."""
    rng = np.random.default_rng([seed, 1])
    nn.init.manual_seed(seed)
    model = BlockAutoencoder(W, mean, hidden)
    optimizer = SGD(list(model.parameters()), lr=lr, momentum=0.9)
    schedule = PolyLR(optimizer, iters)
    curve = []
    for k in range(iters):
        schedule.step(k)
        v = onehot_blocks(blocks[rng.integers(len(blocks), size=batch_size)], num_classes,
                          IGNORE_INDEX)                                           # (B, N)
        error = model(Tensor(v)) - Tensor(v)
        loss = F.sum(error * error) / batch_size                   # Eq. (3)'s error per block
        if not np.isfinite(float(loss.data)):
            raise RuntimeError(f"the auto-encoder's loss became {float(loss.data)} at step {k} "
                               f"(lr {lr}): fit it again with a lower lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(loss.data))
        if progress is not None:
            progress(k + 1, iters, curve[-1])
    return model, curve


def autoencoder_oracle(mask, model, ratio, num_classes):
    """(H, W) labels -> (H, W): encode every block, decode it, argmax (as metrics.dupsampling_oracle)."""
    from tinyseg.blocks import blocks_to_labels

    blocks, grid, _ = encode_blocks(mask, ratio, num_classes)
    v = onehot_blocks(blocks, num_classes, IGNORE_INDEX)
    with no_grad():
        restored = model(Tensor(v)).data.reshape(len(v), ratio * ratio, num_classes)
    return blocks_to_labels(restored.argmax(axis=2), grid, ratio, np.shape(mask))


class AutoencoderUpsample(nn.Module):
    """The auto-encoder's decoder in place of DUpsample: (N, C~, h, w) -> (N, C, r h, r w).

    Fixed (buffers), like the PCA's W: hidden = relu(D1^T x + b1) by a 1x1 conv, then
    DUpsample with W = D2^T, mean = b2."""

    trainable = False
    has_projection = True

    def __init__(self, D1, b1, D2, b2, ratio):
        super().__init__()
        self.ratio = ratio
        self.register_buffer("D1", np.ascontiguousarray(np.asarray(D1, np.float32).T[:, :, None, None]))
        self.register_buffer("b1", np.asarray(b1, np.float32))
        self.register_buffer("W", np.ascontiguousarray(np.asarray(D2, np.float32).T))
        self.register_buffer("mean", np.asarray(b2, np.float32))

    @classmethod
    def from_autoencoder(cls, model, ratio):
        return cls(*(to_numpy(p.data) for p in (model.D1, model.b1, model.D2, model.b2)), ratio)

    def check_projection(self):
        pass

    def forward(self, x):
        hidden = F.relu(F.conv2d(x, self.D1, self.b1))              # (N, hidden, h, w)
        return F.dupsample(hidden, self.W, self.mean, self.ratio)   # (N, C, r h, r w), Eq. (5)


def autoencoder_file(dataset, ratio, dim, folders, subsample=1, hidden=256, iters=2000,
                     max_blocks=200000, seed=0, lr=0.01):
    """The path of an auto-encoder fitted on the dataset's masks (started at their PCA), cached
    beside the PCA files: its weights, its loss curve and the PCA's error on the same blocks."""
    import os

    from common import fitted_projection, projection_file, write_json

    pca_path = projection_file(dataset, ratio, dim, folders, subsample)
    path = pca_path.replace(".npz", f"-autoencoder{hidden}.npz")
    if os.path.exists(path):
        return path
    W, mean, _ = fitted_projection(dataset, ratio, dim, folders, subsample)
    print(f"  fitting an auto-encoder on the blocks of {len(dataset)} masks -> {path} ...", flush=True)
    masks = (dataset.load_mask(i)[::subsample, ::subsample] for i in range(len(dataset)))
    blocks = label_blocks_of(masks, ratio, dataset.num_classes, max_blocks, seed)

    def progress(k, total, loss):
        if k % 200 == 0:
            print(f"  auto-encoder {k}/{total}: error per block {loss:.4f}", flush=True)

    model, curve = fit_autoencoder(blocks, dataset.num_classes, W, mean, hidden, iters,
                                   lr=lr, seed=seed, progress=progress)
    sample = onehot_blocks(blocks[:5000], dataset.num_classes, IGNORE_INDEX)  # training blocks
    with no_grad():
        ae_error = float(((model(Tensor(sample)).data - sample) ** 2).sum(axis=1).mean())
    pca_error = float(((((sample - mean) @ W) @ W.T + mean - sample) ** 2).sum(axis=1).mean())
    write_json(path.replace(".npz", ".json"), dict(curve=curve, blocks=len(blocks), hidden=hidden,
                                                   iters=iters, lr=lr, train_error_per_block=ae_error,
                                                   pca_train_error_per_block=pca_error))
    state = {k: to_numpy(v) for k, v in model.state_dict().items()}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **state)
    os.replace(tmp, path)  # last: the .npz existing means the fit is complete
    return path


def load_autoencoder(path):
    """The BlockAutoencoder saved by autoencoder_file."""
    with np.load(path) as data:
        state = {k: data[k] for k in data.files}
    model = BlockAutoencoder(np.zeros((state["D2"].shape[1], state["E2"].shape[1]), np.float32),
                             state["mean"], state["E1"].shape[1])
    model.load_state_dict(state)
    return model
