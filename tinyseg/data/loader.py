"""Batches of augmented samples, read ahead by background threads, reproducible from a seed.

    for images, masks in loader:                      # one epoch
    for images, masks in loader.iterate(start=k, stop=max_iter):  # by global batch index

    images: float32 (N, 3, H, W), normalised; masks: int64 (N, H, W), class ids and 255 void.

Reproducibility is built on one rule: batch k depends only on (seed, k). Batch k is batch
k % len(loader) of epoch k // len(loader); each epoch's order is a permutation drawn from
(seed, epoch), and each sample's augmentation uses a generator seeded by (seed, epoch,
position in the epoch). Nothing depends on which thread ran first or on what came before,
so a training run resumed at iteration k (`iterate(start=k)`) sees exactly the batches an
uninterrupted run would have seen.

Reading ahead: `num_workers` threads build the next batches while the network trains on the
current one (decoding JPEGs and resizing in Pillow release the GIL, so threads do run in
parallel). At most `prefetch` batches are in flight, and they are handed out in order. An
exception in a worker is raised again in the main thread, naming the file.
"""
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import numpy as np

from .base import DataError
from .transforms import EvalTransform

# Separate tags keep the generators for epoch orders and for samples from ever coinciding
# (a SeedSequence pads its entropy with zeros, so [seed, 3] and [seed, 3, 0] seed alike).
ORDER_STREAM, SAMPLE_STREAM = 0, 1


class DataLoader:
    """Iterate over `dataset` in batches of `batch_size` transformed samples.

    transform: called as transform(image, mask, rng) -> (float32 (3, H, W), int64 (H, W));
        None means EvalTransform() (normalisation only: batch_size 1 for images of mixed size).
    shuffle: a new random order every epoch (else dataset order; augmentation stays random).
    drop_last: leave out the last, smaller batch of each epoch.
    num_workers: background threads (0: load in the calling thread).
    part: (rank, processes) for data-parallel training (tinyseg/distributed.py): every global
        batch is dealt to the processes in equal contiguous shares, and this loader serves
        share `rank`; batch k is the same set of samples for any number of processes.
    For a labels_only dataset the images of every batch are None.
    """

    def __init__(self, dataset, batch_size, shuffle=True, transform=None, seed=0,
                 num_workers=2, drop_last=True, prefetch=None, part=(0, 1)):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be >= 0, got {num_workers}")
        if seed < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative integer, got {seed}")
        if drop_last and len(dataset) < batch_size:
            raise DataError(f"{dataset.name} split {dataset.split!r} has {len(dataset)} samples, "
                            f"fewer than one batch of {batch_size} (drop_last=True)")
        rank, processes = part
        if batch_size % processes or not 0 <= rank < processes:
            raise ValueError(f"DataLoader: a batch of {batch_size} cannot be dealt to "
                             f"{processes} processes in equal shares (rank {rank})")
        self.dataset = dataset
        self.batch_size = batch_size
        self.part = rank, processes
        self.shuffle = shuffle
        self.transform = transform if transform is not None else EvalTransform()
        self.seed = seed
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.prefetch = prefetch if prefetch is not None else 2 * max(num_workers, 1)
        self.epoch = 0  # the epoch that the next `for ... in loader` runs

    def __len__(self):
        """Batches per epoch."""
        if self.drop_last:
            return len(self.dataset) // self.batch_size
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch_order(self, epoch):
        """The dataset indices of one epoch, in the order they are served."""
        if not self.shuffle:
            return np.arange(len(self.dataset))
        rng = np.random.default_rng([self.seed, ORDER_STREAM, epoch])
        return rng.permutation(len(self.dataset))

    def load_batch(self, k):
        """Global batch k (this process's share of it, see `part`): (images float32 (N, 3, H, W)
        or None, masks int64 (N, H, W))."""
        epoch, b = divmod(k, len(self))
        order = self.epoch_order(epoch)
        rank, share = self.part[0], self.batch_size // self.part[1]
        first = b * self.batch_size + rank * share
        positions = range(first, min(first + share, len(order)))
        samples = [self._load_sample(int(order[p]), epoch, p) for p in positions]
        images, masks = zip(*samples)
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise ValueError(f"DataLoader: batch {k} mixes samples of sizes {sorted(shapes)}; "
                             "use a transform with a fixed output size, or batch_size=1")
        masks = np.stack(masks)  # N x (H, W) -> (N, H, W)
        if images[0] is None:
            return None, masks
        return np.stack(images), masks  # N x (3, H, W) -> (N, 3, H, W)

    def _load_sample(self, i, epoch, position):
        """Read and transform sample i; its augmentation is drawn from (seed, epoch, position)."""
        rng = np.random.default_rng([self.seed, SAMPLE_STREAM, epoch, position])
        try:
            image, mask = self.dataset[i]
            return self.transform(image, mask, rng)
        except DataError:
            raise  # already names the file
        except Exception as e:
            raise RuntimeError(f"loading sample {i} ({self.dataset.mask_path(i)}) failed: "
                               f"{type(e).__name__}: {e}") from e

    def iterate(self, start=0, stop=None):
        """Yield global batches start, start + 1, ..., stop - 1 (endlessly when stop is None)."""
        indices = count(start) if stop is None else iter(range(start, stop))
        if self.num_workers == 0:
            for k in indices:
                yield self.load_batch(k)
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="tinyseg-loader") as pool:
            pending = deque()  # futures of the batches in flight, oldest first
            try:
                while True:
                    while len(pending) < self.prefetch:
                        k = next(indices, None)
                        if k is None:
                            break
                        pending.append(pool.submit(self.load_batch, k))
                    if not pending:
                        return
                    yield pending.popleft().result()  # re-raises a worker's exception here
            finally:
                for future in pending:  # the consumer stopped early: drop what is queued
                    future.cancel()

    def __iter__(self):
        """One epoch (the next one: each `for` over the loader advances `self.epoch`)."""
        epoch = self.epoch
        self.epoch += 1
        return self.iterate(epoch * len(self), (epoch + 1) * len(self))
