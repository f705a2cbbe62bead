"""Run tinyseg's CUDA kernels (tinyseg/fast/cuda_kernels.py) on the CPU, to test their index math
on any machine.

The kernels compute every output element independently in a grid-stride loop, so a launch
with ONE block of ONE thread runs the loop over every index in turn and gives exactly what
the GPU's thousands of threads give. This file compiles the kernels' CUDA source unchanged as
C++, with the few CUDA names it uses defined for that single thread, and calls it through
ctypes on NumPy arrays. (What it cannot catch: races between threads, which these kernels
avoid by construction, and CuPy's argument passing, which the GPU run of the same tests checks.)
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np

from tinyseg.fast import cuda_kernels

PRELUDE = """
#include <cmath>
using std::exp;
using std::log;
#define __global__
struct tinyseg_dim3 { long long x, y, z; };
static const tinyseg_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const tinyseg_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
"""


class Emulator:
    """launch(name, total, arrays, sizes): the same call as cuda_kernels.cupy_launch."""

    def __init__(self, directory):
        compiler = shutil.which("c++") or shutil.which("g++")
        if compiler is None:
            raise RuntimeError("no C++ compiler (c++ or g++) to build the kernel emulator")
        source = os.path.join(directory, "kernels.cpp")
        with open(source, "w") as f:
            f.write(PRELUDE + cuda_kernels.SOURCE)
        self.libraries = {}
        for dtype, c_type in cuda_kernels.C_TYPES.items():
            library = os.path.join(directory, f"kernels_{c_type}.so")
            subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-Dreal={c_type}", source,
                            "-o", library], check=True, capture_output=True, text=True)
            self.libraries[dtype] = ctypes.CDLL(library)

    def launch(self, name, total, arrays, sizes):
        for a in arrays:
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous
        kernel = getattr(self.libraries[arrays[0].dtype], name)
        kernel(*[ctypes.c_void_p(a.ctypes.data) for a in arrays],
               *[ctypes.c_longlong(int(s)) for s in sizes])
