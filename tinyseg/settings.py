"""What a training run is made of: every setting, with its default, in one dataclass.

train.py's options are made from these fields (same names, `--batch-size` for batch_size), a
run folder's config.json holds them (tinyseg/run.py) and tinyseg.training.train runs them.
Code may also pass a plain dict (experiments/ do): missing keys take the defaults below, keys
the trainer does not know are kept in `extra` and written back unchanged.

Two kinds of settings. Most decide the numbers a run produces (data, network, optimisation,
seed) and are fixed once the run has started. The RESUMABLE ones only decide how fast it runs,
where it stops and how often it reports (the backend, the op implementation, the loader's
threads, the log and checkpoint intervals), and `--resume` may change them, as it may change
--iters, which extends a run (tinyseg/run.py has the merge rules).
"""
import dataclasses
import math
import os
from dataclasses import dataclass, field

from .config import config

# what --resume may change; every other setting comes from the run's config.json
RESUMABLE = {"resume", "backend", "impl", "cuda_kernels", "workers", "stop_at", "log_every",
             "val_every", "ckpt_every", "val_images", "iters", "max_memory"}


@dataclass
class TrainSettings:
    """The settings of one training run (see train.py --help for what each one means)."""
    # the data
    dataset: str = "synthetic"
    data_root: str | None = None
    mask_values: str | None = None
    split: str = "train"
    val_split: str = "val"
    # the network
    model: str = "tiny_resnet"
    decoder: str = "dupsampling"
    output_stride: int = 8
    fuse: list | None = None                 # None: the backbone's default (models/build.py)
    separable: bool = False
    dim: int = 64
    loss: str = "cross_entropy"
    temperature: str = "learned"
    projection: str | None = None            # None: W fitted by PCA into the run folder
    trainable_projection: bool = False
    pretrained: str | None = None
    stem: str | None = None
    layout: str | None = None
    # the optimisation (Sec. 4: SGD with momentum, poly learning rate, random scale and crop)
    iters: int = 2500
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop: int = 96
    scale_range: tuple = (0.5, 2.0)
    seed: int = 0
    sync_bn: bool = False                    # BN statistics over every process (tinyseg/distributed.py)
    bn_group: int | None = None              # images per BN statistic; recorded at the start
    # the machine: how fast, not what (RESUMABLE)
    backend: str = "numpy"
    impl: str = field(default_factory=lambda: config.impl)
    cuda_kernels: bool = field(default_factory=lambda: config.cuda_kernels)
    workers: int = 2
    max_memory: float | None = None          # GiB a training step may use
    # the run: its folder, where it stops, how often it logs, validates and saves
    out: str | None = None
    preset: str | None = None
    resume: bool = False
    overwrite: bool = False
    stop_at: int | None = None
    log_every: int = 25
    val_every: int = 500                     # 0: no validation
    val_images: int | None = None
    ckpt_every: int = 250
    extra: dict = field(default_factory=dict)  # keys the trainer does not read (experiments/)

    @classmethod
    def from_dict(cls, settings):
        """From a dict such as config.json's: unknown keys go to `extra`, missing ones default."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in settings.items() if k in names}
        return cls(**known, extra={k: v for k, v in settings.items() if k not in names})

    def as_dict(self):
        """The flat dict of config.json: every setting, then the extra keys."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = settings.pop("extra")
        return {**settings, **extra}

    def check(self):
        """Raise a ValueError naming the option (as train.py spells it) of a value out of range."""
        for name in ("iters", "batch_size", "log_every", "ckpt_every", "crop", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.bn_group is not None and (self.bn_group < 1 or self.batch_size % self.bn_group):
            raise ValueError(f"--bn-group must divide --batch-size {self.batch_size}, got "
                             f"{self.bn_group}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        low, high = self.scale_range
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"--scale-min and --scale-max must satisfy 0 < min <= max, got "
                             f"{low} and {high}")
        if self.max_memory is not None and not (math.isfinite(self.max_memory)
                                                and self.max_memory > 0):
            raise ValueError(f"--max-memory must be a positive number of GiB, got "
                             f"{self.max_memory}")
        if self.projection is not None and not os.path.isfile(self.projection):
            raise ValueError(f"--projection {self.projection}: no such file (leave it out to fit "
                             "W by PCA into the run folder)")


def flag(name):
    """A setting's command-line option: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")
