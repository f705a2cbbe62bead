"""The block contract: how a label map becomes the vectors v that DUpsampling decodes (Sec. 3.1).

A label map (H, W) is padded with void to multiples of r and cut into r x r blocks; each block
is one-hot encoded as a vector v in {0, 1}^N, N = r*r*C, in DUpsampling's order (class fastest,
tinyseg/functional/dupsample.py):

    v[(i*r + j)*C + c] = 1   when the block's pixel at row i, column j has class c.

Compression and reconstruction are linear (Eq. 2, with the mean offset the paper mentions):

    x = P (v - mean),   v~ = W x + mean,   P = W^T,   W: (N, C~) with orthonormal columns.

The one other order a block vector is ever read in is class-major, (c, i, j), index c*r*r + p
with p = i*r + j: the PCA fit (tinyseg/pca.py) and the fast DUpsample work in it, and
class_major_order is the one permutation between the two.

Void (255, IGNORE_INDEX of tinyseg/data/), `void=` (docs/pca.md compares them on VOC val):
  "nearest" (default): a void pixel within NEAREST_STEPS 4-neighbour steps of a labelled pixel
            takes the label of the nearest one; farther void is encoded as "zero". This
            closes VOC's 5-pixel void borders along the middle, where the boundary really is.
  "impute": a void pixel takes the most frequent class of its r x r block.
  "zero":   a void pixel contributes no class (an all-zero class vector at its position).
  "skip":   blocks containing any void are left out of the fit (and encoded as "zero").
A block that is still entirely void (e.g. padding) carries no label and is never fitted.

The models (compress_labels, Eq. 4's targets), the metrics (the oracles of Table 1) and the fit
of W all encode labels through encode_blocks and onehot_blocks, so they agree by construction.
"""
import numpy as np

from .data.base import IGNORE_INDEX

VOID_MODES = ("nearest", "impute", "zero", "skip")
NEAREST_STEPS = 8  # how far "nearest" fills void, in 4-neighbour steps


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


# ----------------------------------------------------------------- the void rules
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


# ----------------------------------------------------------------- vectors and their order
def onehot_blocks(blocks, num_classes, ignore_index=IGNORE_INDEX, dtype=np.float32):
    """blocks: (B, r*r) labels -> (B, r*r*C) one-hot vectors, index p*C + c; void -> zeros."""
    labelled = (blocks != ignore_index)[:, :, None]                    # (B, r*r, 1)
    onehot = (blocks[:, :, None] == np.arange(num_classes)) & labelled  # (B, r*r, C)
    return onehot.reshape(len(blocks), -1).astype(dtype)


def class_major_order(ratio, num_classes, xp=np):
    """Indices taking a block vector from the contract's order to class-major: v[order].

    (r*r*C,) int: order[c*r*r + p] = p*C + c, so v[order] lists class 0's r*r pixels, then
    class 1's, ...; rows of W and entries of mean are reordered the same way.
    """
    order = xp.arange(ratio * ratio * num_classes)
    return order.reshape(ratio * ratio, num_classes).T.ravel()  # (p, c) -> (c, p)


def block_order(ratio, num_classes, xp=np):
    """The inverse of class_major_order: a class-major vector u gives u[block_order] in the
    contract's order (p*C + c)."""
    return xp.argsort(class_major_order(ratio, num_classes, xp))


# ----------------------------------------------------------------- compression (Eq. 2)
def compress(onehot, W, mean):
    """x = P (v - mean), P = W^T (Eq. 2).  onehot: (B, N) -> x: (B, C~)."""
    return (onehot - mean) @ W


def decompress(x, W, mean):
    """v~ = W x + mean (Eq. 2).  x: (B, C~) -> (B, N)."""
    return x @ W.T + mean
