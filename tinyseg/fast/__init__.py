"""The fast twins of the reference ops, and the table that picks them (tinyseg/dispatch.py).

Each twin takes the arguments of one reference op of tinyseg/functional/ and gives its
results up to float rounding; only the speed differs. tests/functional/ runs every op test on
both (the `impl` fixture), and tests/test_fast.py compares each twin with its reference.

    CPU (NumPy): threads over cache-sized slabs (parallel.py), a depthwise layout of its own,
                 a class-major DUpsample
    GPU (CuPy):  CUDA kernels (cuda_kernels.py, kernels.cu), with --cuda-kernels
"""
from ..functional.activation import ReLU
from ..functional.conv import Conv2d
from ..functional.dupsample import DUpsample, dupsample_cross_entropy
from ..functional.norm import BatchNorm
from ..functional.pool import MaxPool2d
from .activation import ChunkedReLU
from .conv import SlabConv2d
from .cuda import KernelBatchNorm, KernelConv2d, fused_dupsample_cross_entropy
from .dupsample import ClassMajorDUpsample
from .norm import SlabBatchNorm
from .pool import SlabMaxPool2d

# reference op -> its twin, per device; an op that is not listed runs its reference
CPU_TWINS = {
    Conv2d: SlabConv2d,
    BatchNorm: SlabBatchNorm,
    ReLU: ChunkedReLU,
    MaxPool2d: SlabMaxPool2d,
    DUpsample: ClassMajorDUpsample,
}
CUDA_TWINS = {
    Conv2d: KernelConv2d,
    BatchNorm: KernelBatchNorm,
    dupsample_cross_entropy: fused_dupsample_cross_entropy,
}
