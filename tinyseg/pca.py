"""Fitting DUpsampling's reconstruction matrix W by PCA (paper Sec. 3.1, Eqs. (2)-(3)).

The label blocks and their vectors v (N = r*r*C, DUpsampling's order), the void rules and
Eq. 2's x = P (v - mean), v~ = W x + mean are the block contract of tinyseg/blocks.py. The W
minimising sum_v ||v - v~||^2 (Eq. 3) holds the C~ leading eigenvectors of the covariance of v
over the training blocks (PCA); the mean error per block is the sum of the N - C~ eigenvalues
left out. The command line, `python -m tinyseg.pca`, is tinyseg/pca_cli.py.

Streaming fit. The fit never holds all blocks: it accumulates, in float64, the number of
blocks n, the sum s = sum v and the second moment M = sum v v^T, then

    mean = s / n,   covariance = M / n - mean mean^T,   W = top C~ eigenvectors.

Fast accumulation. Write v class by class: its part for class c is m_c in {0, 1}^(r*r), the
mask of the block's pixels of class c. In class-major order (index c*r*r + p, p = i*r + j) the
(c, d) tile of M is sum over blocks of m_c m_d^T = A_c^T A_d, where A_c stacks the masks m_c
of the blocks as rows: one float32 matmul per pair of classes, over only the blocks holding
both classes. A block of a single class c (three in four on VOC at r = 16) adds the all-ones
tile to (c, c), so those are only counted. The PCA runs in class-major order; W and the mean
are then permuted into DUpsampling's order (blocks.block_order; permuting coordinates does not
change a PCA).

How well the fitted W can reconstruct labels (Table 1's upper bound) is measured by
tinyseg.metrics.dupsampling_oracle, against bilinear_oracle.
"""
import json
import os
import sys
import warnings
import zipfile

import numpy as np

from .blocks import IGNORE_INDEX, VOID_MODES, block_order, encode_blocks

SOLVERS = ("auto", "eigh", "subspace")
EIGH_MAX_DIM = 2048  # "auto" solver: exact eigh up to this N, subspace iteration above


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


def main(argv=None):
    """`python -m tinyseg.pca ...`: the command line of tinyseg/pca_cli.py."""
    from .pca_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
