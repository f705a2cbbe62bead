"""Fitting DUpsampling's reconstruction matrix W by PCA (`python -m tinyseg.pca`).

Paper Sec. 3.1, Eqs. (2)-(3). A label map (H, W) is cut into r x r blocks and each block is
one-hot encoded as a vector v in {0, 1}^N, N = r*r*C, in the order DUpsampling decodes it
(tinyseg.functional.dupsample; class fastest):

    v[(i*r + j)*C + c] = 1   when the block's pixel at row i, column j has class c.

Compression and reconstruction are linear (Eq. 2, with the mean offset the paper mentions):

    x = P (v - mean),   v~ = W x + mean,   P = W^T,   W: (N, C~) with orthonormal columns.

The W minimising sum_v ||v - v~||^2 (Eq. 3) holds the C~ leading eigenvectors of the covariance
of v over the training blocks (PCA); the mean error per block is the sum of the N - C~
eigenvalues left out.

Streaming fit. The fit never holds all blocks: it accumulates, in float64, the number of
blocks n, the sum s = sum v and the second moment M = sum v v^T, then

    mean = s / n,   covariance = M / n - mean mean^T,   W = top C~ eigenvectors.

Fast accumulation. Write v class by class: its part for class c is m_c in {0, 1}^(r*r), the
mask of the block's pixels of class c. In class-major order (index c*r*r + p, p = i*r + j) the
(c, d) tile of M is sum over blocks of m_c m_d^T = A_c^T A_d, where A_c stacks the masks m_c
of the blocks as rows: one float32 matmul per pair of classes, over only the blocks holding
both classes. A block of a single class c (three in four on VOC at r = 16) adds the all-ones
tile to (c, c), so those are only counted. The PCA runs in class-major order; W and the mean
are then permuted into DUpsampling's order (permuting coordinates does not change a PCA).

Void (255), `void=` (docs/pca.md compares them on VOC val):
  "nearest" (default): a void pixel within NEAREST_STEPS 4-neighbour steps of a labelled pixel
            takes the label of the nearest one; farther void is encoded as "zero". This
            closes VOC's 5-pixel void borders along the middle, where the boundary really is.
  "impute": a void pixel takes the most frequent class of its r x r block.
  "zero":   a void pixel contributes no class (an all-zero class vector at its position).
  "skip":   blocks containing any void are left out of the fit (and encoded as "zero").
A block that is still entirely void (e.g. padding) carries no label and is never fitted. Masks
whose sides are not multiples of r are padded with void.

How well the fitted W can reconstruct labels (Table 1's upper bound) is measured by
tinyseg.metrics.dupsampling_oracle, against bilinear_oracle.
"""
import argparse
import json
import os
import sys
import time
import warnings
import zipfile

import numpy as np

IGNORE_INDEX = 255
VOID_MODES = ("nearest", "impute", "zero", "skip")
NEAREST_STEPS = 8  # how far "nearest" fills void, in 4-neighbour steps
SOLVERS = ("auto", "eigh", "subspace")
EIGH_MAX_DIM = 2048  # "auto" solver: exact eigh up to this N, subspace iteration above


# ----------------------------------------------------------------- blocks of a label map
def pad_to_multiple(mask, ratio, ignore_index=IGNORE_INDEX):
    """(H, W) -> (gh*r, gw*r), gh = ceil(H / r), gw = ceil(W / r): void added below and right."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a label map of shape (H, W), got shape {mask.shape}")
    height, width = mask.shape
    padded = np.full((-(-height // ratio) * ratio, -(-width // ratio) * ratio), ignore_index,
                     dtype=mask.dtype)
    padded[:height, :width] = mask
    return padded


def label_blocks(mask, ratio, ignore_index=IGNORE_INDEX):
    """mask: (H, W) labels -> blocks: (gh*gw, r*r) labels and the grid (gh, gw).

    The mask is padded with void to (gh*r, gw*r); blocks run row by row over the grid and
    the pixels of a block run i*r + j (row offset i, column offset j).
    """
    padded = pad_to_multiple(mask, ratio, ignore_index)
    grid = (padded.shape[0] // ratio, padded.shape[1] // ratio)
    blocks = padded.reshape(grid[0], ratio, grid[1], ratio)  # (gh, i, gw, j)
    blocks = blocks.transpose(0, 2, 1, 3)                    # (gh, gw, i, j)
    return blocks.reshape(grid[0] * grid[1], ratio * ratio), grid


def blocks_to_labels(blocks, grid, ratio, size):
    """Inverse of label_blocks: (gh*gw, r*r) -> (H, W), cropping the padding back to `size`."""
    labels = blocks.reshape(grid[0], grid[1], ratio, ratio)    # (gh, gw, i, j)
    labels = labels.transpose(0, 2, 1, 3)                      # (gh, i, gw, j)
    labels = labels.reshape(grid[0] * ratio, grid[1] * ratio)  # (H_pad, W_pad)
    return labels[:size[0], :size[1]]


def impute_void(blocks, num_classes, ignore_index=IGNORE_INDEX):
    """Replace each void pixel by its block's most frequent class; all-void blocks stay void.

    blocks: (B, r*r) labels -> (B, r*r) labels. Ties go to the smaller class id.
    """
    void = blocks == ignore_index
    if not void.any():
        return blocks
    rows = np.broadcast_to(np.arange(len(blocks))[:, None], blocks.shape)  # (B, r*r)
    counts = np.bincount(rows[~void] * num_classes + blocks[~void],
                         minlength=len(blocks) * num_classes)
    most_frequent = counts.reshape(len(blocks), num_classes).argmax(axis=1)  # (B,)
    filled = np.where(void, most_frequent[:, None], blocks).astype(blocks.dtype)
    return np.where(void.all(axis=1, keepdims=True), blocks, filled)


def fill_void_nearest(mask, steps=NEAREST_STEPS, ignore_index=IGNORE_INDEX):
    """(H, W) -> (H, W): void within `steps` 4-neighbour steps of a label takes the nearest label.

    A breadth-first fill, one step per round: a void pixel next to a pixel labelled in the
    previous round takes its label (ties: the neighbour above, below, left, right, in that order).
    """
    filled = np.array(mask)
    # (destination, source) slices: the pixel and its neighbour above, below, left, right
    neighbours = [((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                  ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                  ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                  ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))]
    for _ in range(steps):
        if not (filled == ignore_index).any():
            break
        previous = filled.copy()
        for destination, source in neighbours:
            take = (filled[destination] == ignore_index) & (previous[source] != ignore_index)
            filled[destination][take] = previous[source][take]
    return filled


def encode_blocks(mask, ratio, num_classes, void="nearest", ignore_index=IGNORE_INDEX):
    """mask: (H, W) -> blocks: (B, r*r) labels after the void rule, grid (gh, gw), valid: (B,).

    The one place the void rule is applied (see the module text), for fitting W and for
    compressing labels alike. `valid` is False for the blocks the fit leaves out: those
    still entirely void, and with void="skip" those holding any void. Void left in `blocks`
    becomes an all-zero class vector in onehot_blocks.
    """
    if void not in VOID_MODES:
        raise ValueError(f"void must be one of {VOID_MODES}, got {void!r}")
    if void == "nearest":
        padded = pad_to_multiple(mask, ratio, ignore_index)
        mask = fill_void_nearest(padded, ignore_index=ignore_index)
    blocks, grid = label_blocks(mask, ratio, ignore_index)
    if void == "impute":
        blocks = impute_void(blocks, num_classes, ignore_index)
    is_void = blocks == ignore_index
    valid = ~is_void.any(axis=1) if void == "skip" else ~is_void.all(axis=1)
    return blocks, grid, valid


def onehot_blocks(blocks, num_classes, ignore_index=IGNORE_INDEX, dtype=np.float32):
    """blocks: (B, r*r) labels -> (B, r*r*C) one-hot vectors, index p*C + c; void -> zeros."""
    labelled = (blocks != ignore_index)[:, :, None]                    # (B, r*r, 1)
    onehot = (blocks[:, :, None] == np.arange(num_classes)) & labelled  # (B, r*r, C)
    return onehot.reshape(len(blocks), -1).astype(dtype)


def block_order(ratio, num_classes):
    """Index array taking a class-major vector (c*r*r + p) to DUpsampling's order (p*C + c)."""
    return np.arange(num_classes * ratio * ratio).reshape(num_classes, ratio * ratio).T.ravel()


# ----------------------------------------------------------------- streaming moments
class BlockMoments:
    """Running count, sum and second moment of the one-hot block vectors, in float64.

    `update(mask)` adds one label map; its blocks (uint8 labels) are buffered and folded in
    by chunks of about `chunk_pixels` pixels (16 MB by default, ~45 VOC images): few, large
    matmuls rather than thousands of small ones, which run slowly on a busy machine where
    each multi-threaded BLAS call waits for its slowest thread.
    The statistics are kept in class-major order, index c*r*r + p.
    """

    def __init__(self, num_classes, ratio, void="nearest", ignore_index=IGNORE_INDEX,
                 chunk_pixels=1 << 24):
        if void not in VOID_MODES:
            raise ValueError(f"void must be one of {VOID_MODES}, got {void!r}")
        if int(ratio) != ratio or ratio < 1 or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"ratio and num_classes must be positive integers, got ratio={ratio}"
                             f", num_classes={num_classes}")
        self.num_classes, self.ratio, self.void = num_classes, ratio, void
        self.ignore_index, self.chunk_pixels = ignore_index, chunk_pixels
        pixels = ratio * ratio
        self.count = 0
        self.sum = np.zeros((num_classes, pixels))                    # sum of the m_c
        self.uniform = np.zeros(num_classes, dtype=np.int64)          # single-class blocks
        self.tiles = {}  # (c, d) with c <= d -> (r*r, r*r) sum of A_c^T A_d over mixed blocks
        self._buffer, self._buffered = [], 0

    def update(self, mask):
        """Add the blocks of one (H, W) label map."""
        mask = np.asarray(mask)
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(f"mask has label {int(mask[bad][0])}, outside the class ids "
                             f"0..{self.num_classes - 1} and void {self.ignore_index}")
        blocks, _, valid = encode_blocks(mask, self.ratio, self.num_classes, self.void,
                                         self.ignore_index)
        blocks = blocks[valid]
        self._buffer.append(blocks)
        self._buffered += blocks.size
        if self._buffered >= self.chunk_pixels:
            self._flush()

    def _flush(self):
        """Fold the buffered blocks into count, sum and the moment tiles."""
        if not self._buffer:
            return
        blocks = np.concatenate(self._buffer)  # (B, r*r)
        self._buffer, self._buffered = [], 0
        self.count += len(blocks)
        num_classes, pixels = self.num_classes, self.ratio * self.ratio
        single = (blocks == blocks[:, :1]).all(axis=1)  # all-void blocks were dropped before
        uniform = np.bincount(blocks[single, 0], minlength=num_classes)  # (C,)
        self.uniform += uniform
        self.sum += uniform[:, None]  # a block of class c adds ones to the whole row c
        mixed = blocks[~single]                                   # (B_mixed, r*r)
        rows = np.broadcast_to(np.arange(len(mixed))[:, None], mixed.shape)  # block of a pixel
        positions = np.broadcast_to(np.arange(pixels), mixed.shape)          # its p = i*r + j
        labelled = mixed != self.ignore_index
        labels = mixed[labelled].astype(np.int64)                 # (labelled pixels,)
        self.sum += np.bincount(labels * pixels + positions[labelled],
                                minlength=num_classes * pixels).reshape(num_classes, pixels)
        present = np.bincount(rows[labelled] * num_classes + labels,
                              minlength=len(mixed) * num_classes)
        present = present.reshape(len(mixed), num_classes) > 0   # (B_mixed, C): class in block
        exact = np.float32 if len(mixed) < 2 ** 24 else np.float64  # integer counts stay exact
        for c in range(num_classes):
            for d in range(c, num_classes):
                both = present[:, c] & present[:, d]
                if not both.any():
                    continue
                holding = mixed[both]                             # (B_cd, r*r)
                a_c = (holding == c).astype(exact)                # A_c: (B_cd, r*r)
                a_d = a_c if d == c else (holding == d).astype(exact)
                tile = a_c.T @ a_d                                # (r*r, r*r)
                if (c, d) in self.tiles:
                    self.tiles[c, d] += tile
                else:
                    self.tiles[c, d] = tile.astype(np.float64)

    def statistics(self):
        """(count, mean (N,), covariance (N, N)), both in class-major order (c*r*r + p)."""
        self._flush()
        if self.count == 0:
            raise ValueError("no labelled blocks to fit: every block was void (or skipped)")
        num_classes, pixels = self.num_classes, self.ratio * self.ratio
        size = num_classes * pixels
        covariance = np.zeros((size, size))  # first the second moment M
        tiles = covariance.reshape(num_classes, pixels, num_classes, pixels)  # (c, p, d, q)
        for c in range(num_classes):
            tiles[c, :, c] = self.uniform[c]
        for (c, d), tile in self.tiles.items():
            tiles[c, :, d] += tile
            if d != c:
                tiles[d, :, c] = tile.T
        mean = self.sum.ravel() / self.count
        covariance /= self.count
        for start in range(0, size, 1024):  # minus mean mean^T, a band of rows at a time
            covariance[start:start + 1024] -= np.outer(mean[start:start + 1024], mean)
        return self.count, mean, covariance


# ----------------------------------------------------------------- PCA
def principal_components(covariance, dim, solver="auto"):
    """covariance: (N, N) -> W: (N, dim) orthonormal, eigenvalues: (dim,) descending.

    solver "eigh": numpy.linalg.eigh, exact, all N eigenpairs: O(N^3), 12-20 s at N = 5,376
    (r = 16, C = 21) on two cores and out of reach at r = 32 (N = 21,504). "subspace": only
    the leading ones, by subspace_iteration: ~1.2 s at N = 5,376, giving the same oracle mIoU
    to 6 digits (docs/pca.md). "auto": eigh up to N = EIGH_MAX_DIM, subspace above.
    Each column's largest entry is made positive, so W does not depend on the solver's signs.
    """
    size = covariance.shape[0]
    if not 1 <= dim <= size:
        raise ValueError(f"dim (C~) must be in 1..{size} (N = r*r*C), got {dim}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "eigh" or (solver == "auto" and size <= EIGH_MAX_DIM):
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
        eigenvalues, W = eigenvalues[::-1][:dim], eigenvectors[:, ::-1][:, :dim]
    else:
        eigenvalues, W = subspace_iteration(covariance, dim)
    largest = np.abs(W).argmax(axis=0)
    W = W * np.sign(W[largest, np.arange(dim)])
    return W, eigenvalues


def subspace_iteration(matrix, dim, oversample=32, tol=1e-6, max_iter=300, seed=0):
    """Leading `dim` eigenpairs of a symmetric PSD (N, N) matrix A: eigenvalues (dim,), W (N, dim).

    Block power iteration: multiplying a basis Q of k = dim + oversample columns by A scales
    its component along eigenvector i by lambda_i, so after t rounds the directions beyond
    the k-th have shrunk by (lambda_k+1 / lambda_i)^t and Q spans the leading eigenvectors.
    Each round: Z = A Q; the Rayleigh-Ritz step eigen-decomposes the small (k, k) matrix
    Q^T Z to get the best eigenpair estimates within span(Q); then Q = orthonormalised Z.
    Stops when every residual ||A v - lambda v|| is below tol * lambda_1.
    """
    rng = np.random.default_rng(seed)
    width = min(dim + oversample, matrix.shape[0])
    basis, _ = np.linalg.qr(rng.standard_normal((matrix.shape[0], width)))  # (N, k)
    for _ in range(max_iter):
        image = matrix @ basis                                     # Z = A Q: (N, k)
        ritz_values, rotation = np.linalg.eigh(basis.T @ image)    # (k,), (k, k) ascending
        ritz_values, rotation = ritz_values[::-1], rotation[:, ::-1]
        vectors, image = basis @ rotation, image @ rotation        # v = Q s and A v: (N, k)
        residual = np.linalg.norm(image[:, :dim] - vectors[:, :dim] * ritz_values[:dim], axis=0)
        if residual.max() <= tol * ritz_values[0]:
            break
        basis, _ = np.linalg.qr(image)
    else:
        warnings.warn(f"subspace iteration stopped after {max_iter} rounds with a residual of "
                      f"{residual.max() / ritz_values[0]:.1e} * lambda_1 (tolerance {tol:.0e})")
    return ritz_values[:dim], vectors[:, :dim]


def fit_projection(masks, num_classes, ratio, dim, void="nearest", ignore_index=IGNORE_INDEX,
                   progress=None, solver="auto"):
    """Fit W: (r*r*C, C~) and mean: (r*r*C,) on an iterable of (H, W) label maps (Eq. 3).

    Returns (W, mean, meta); meta holds ratio, num_classes, dim, void, num_blocks,
    explained_variance (the dim leading eigenvalues) and total_variance (the trace).
    progress(images_done) is called after each mask; solver: see principal_components.
    """
    moments = BlockMoments(num_classes, ratio, void, ignore_index)
    for done, mask in enumerate(masks, start=1):
        moments.update(mask)
        if progress is not None:
            progress(done)
    count, mean, covariance = moments.statistics()
    total_variance = float(np.trace(covariance))
    W, eigenvalues = principal_components(covariance, dim, solver)
    order = block_order(ratio, num_classes)
    meta = dict(ratio=ratio, num_classes=num_classes, dim=dim, void=void, num_blocks=count,
                explained_variance=eigenvalues, total_variance=total_variance)
    return W[order], mean[order], meta


# ----------------------------------------------------------------- saving and loading
def save_projection(path, W, mean, meta):
    """Write W, mean, explained_variance and the JSON meta to an .npz, atomically.

    meta must hold ratio, num_classes, dim and explained_variance; other keys (void, dataset,
    split, ...) are stored as they are.
    """
    meta = dict(meta)
    if "explained_variance" not in meta:
        raise ValueError(f"{path}: meta lacks ['explained_variance']")
    explained = np.asarray(meta.pop("explained_variance"), dtype=np.float64)
    _check_projection(W, mean, explained, meta, path)
    text = json.dumps(meta, default=lambda value: value.item())  # NumPy scalars as numbers
    tmp = f"{path}.tmp{os.getpid()}"  # written whole, then renamed: never a half-written file
    try:
        with open(tmp, "wb") as f:
            np.savez(f, W=W, mean=mean, explained_variance=explained, meta=text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_projection(path):
    """(W: (N, C~), mean: (N,), meta) from save_projection's file; shapes checked against meta."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"projection file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(str(arrays.get("meta", "{}")))
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"cannot read projection file {path} (expected an .npz written by "
                         f"tinyseg.pca): {e}") from None
    missing = {"W", "mean", "explained_variance", "meta"} - set(arrays)
    if missing:
        raise ValueError(f"{path} is not a projection file: arrays {sorted(missing)} missing")
    W, mean, explained = arrays["W"], arrays["mean"], arrays["explained_variance"]
    _check_projection(W, mean, explained, meta, path)
    meta["explained_variance"] = explained
    return W, mean, meta


def _check_projection(W, mean, explained, meta, path):
    missing = {"ratio", "num_classes", "dim"} - set(meta)
    if missing:
        raise ValueError(f"{path}: meta lacks {sorted(missing)}")
    size = meta["ratio"] ** 2 * meta["num_classes"]
    expected = {"W": (size, meta["dim"]), "mean": (size,), "explained_variance": (meta["dim"],)}
    for name, array in (("W", W), ("mean", mean), ("explained_variance", explained)):
        if np.shape(array) != expected[name]:
            raise ValueError(f"{path}: {name} has shape {np.shape(array)}, expected "
                             f"{expected[name]} for ratio={meta['ratio']}, "
                             f"num_classes={meta['num_classes']}, dim={meta['dim']}")


# ----------------------------------------------------------------- compression (Eq. 2)
def compress(onehot, W, mean):
    """x = P (v - mean), P = W^T (Eq. 2).  onehot: (B, N) -> x: (B, C~)."""
    return (onehot - mean) @ W


def decompress(x, W, mean):
    """v~ = W x + mean (Eq. 2).  x: (B, C~) -> (B, N)."""
    return x @ W.T + mean


# ----------------------------------------------------------------- command line
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinyseg.pca",
        description="Fit DUpsampling's W and mean by PCA of a dataset's training masks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="voc", help="voc, voc_aug, context, cityscapes, ...")
    parser.add_argument("--data-root", required=True, help="the folder that holds VOCdevkit/ etc.")
    parser.add_argument("--split", default="train", help="the split whose masks W is fitted on")
    parser.add_argument("--ratio", type=int, default=16, help="upsampling ratio r (16 or 32)")
    parser.add_argument("--dim", type=int, default=64, help="number of components C~")
    parser.add_argument("--void", choices=VOID_MODES, default="nearest",
                        help="how void (255) pixels are encoded (module docstring; docs/pca.md)")
    parser.add_argument("--solver", choices=SOLVERS, default="auto",
                        help="eigh: exact, all eigenpairs; subspace: the leading ones, faster; "
                             f"auto: eigh up to N = {EIGH_MAX_DIM}")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    args = parser.parse_args(argv)
    from .data import DataError, build_dataset
    try:
        out_folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_folder):
            raise ValueError(f"output folder not found: {out_folder} (for --out {args.out})")
        dataset = build_dataset(args.dataset, args.data_root, args.split, labels_only=True)
        size = args.ratio ** 2 * dataset.num_classes
        if args.ratio < 1 or not 1 <= args.dim <= size:
            raise ValueError(f"need ratio >= 1 and 1 <= dim <= r*r*C = {size}, "
                             f"got ratio={args.ratio}, dim={args.dim}")
        print(f"pca: {len(dataset)} masks of {args.dataset}/{args.split}, r={args.ratio}, "
              f"C={dataset.num_classes}, N={size}, C~={args.dim}, void={args.void}", flush=True)
        start = time.time()
        W, mean, meta = fit_projection(
            (dataset.load_mask(i) for i in range(len(dataset))), dataset.num_classes,
            args.ratio, args.dim, args.void, dataset.ignore_index,
            progress=_progress_printer(len(dataset), start, size), solver=args.solver)
        meta.update(dataset=args.dataset, split=args.split)
        save_projection(args.out, W, mean, meta)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    explained = meta["explained_variance"].sum() / meta["total_variance"]
    print(f"pca: fitted on {meta['num_blocks']} blocks in {time.time() - start:.1f} s; the "
          f"{args.dim} components explain {100 * explained:.2f}% of the variance; wrote {args.out}")
    return 0


def _progress_printer(total, start, size, every=2.0):
    """A progress(done) callback printing images done, rate and ETA every few seconds."""
    last = [start]

    def progress(done):
        now = time.time()
        if now - last[0] >= every or done == total:
            last[0] = now
            rate = done / max(now - start, 1e-9)
            print(f"pca: {done}/{total} images, {rate:.0f} img/s, "
                  f"ETA {(total - done) / rate:.0f} s", flush=True)
        if done == total:
            print(f"pca: eigenvectors of the {size} x {size} covariance ...", flush=True)
    return progress

if __name__ == "__main__":
    sys.exit(main())
