"""The stand-in's cupy.RawKernel: the CUDA source compiled as C++ and run on the CPU.

As tests/cuda_emulator.py does, the kernel source is compiled unchanged by the C++ compiler,
with the few CUDA names it uses defined in a prelude. Here the launch is CuPy's call,
`kernel(grid, block, args)`, and the emulation goes further:

- every thread of the grid runs, one after another: blockIdx, threadIdx, blockDim and gridDim
  (unsigned int, as in CUDA; thread_local, so Python threads may launch at once) take each
  value of the launch, so a grid that does not cover the data leaves elements unwritten;
- the arguments are passed as cuLaunchKernel takes them (an array of pointers to the values),
  after the checks a wrong argument would need on a GPU to be caught at all: their number, a
  stand-in array (C-contiguous: CuPy passes only the pointer) for each pointer parameter with
  the element type's kind and size, a scalar of the parameter's kind for the others (a Python
  int is a 64-bit int, a float a double, as in CuPy), and CuPy's own TypeError for a NumPy
  array of more than one element;
- CuPy's launch limits: at most 1024 threads a block, grid.y and grid.z at most 65535.

What it cannot check: races and the order of threads (they run one at a time, so atomics,
__syncthreads and shared memory are absent and fail to compile), NVRTC itself (a kernel C++
accepts may still fail there, e.g. a host-only function), speed.
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy

from .array import ndarray

PRELUDE = r"""
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>
using std::exp;
using std::log;
using std::sqrt;
using std::fabs;
using std::floor;
using std::ceil;
using std::pow;
using std::tanh;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct dim3 { unsigned int x, y, z; };
static thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

namespace strict_cupy {
template <typename T> constexpr char kind() {
    using U = typename std::remove_cv<T>::type;
    return std::is_same<U, bool>::value ? 'b' : std::is_floating_point<U>::value ? 'f'
        : std::is_integral<U>::value ? (std::is_signed<U>::value ? 'i' : 'u') : 'v';
}
template <typename T> constexpr long long size() {
    if constexpr (std::is_void<T>::value) return 0; else return sizeof(T);
}
/* For each parameter: is it a pointer, and the kind and size of its value (or pointee). */
template <typename... A>
int describe(void (*)(A...), char* pointer, char* kinds, long long* sizes) {
    static_assert(sizeof...(A) <= 64, "strict_cupy describes at most 64 parameters");
    int i = 0;
    ((pointer[i] = std::is_pointer<A>::value,
      kinds[i] = kind<typename std::remove_pointer<A>::type>(),
      sizes[i] = size<typename std::remove_pointer<A>::type>(), ++i), ...);
    return i;
}
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}
/* dims: grid x, y, z, block x, y, z; every thread of every block runs in turn. */
template <typename... A>
void launch(void (*kernel)(A...), const unsigned int* dims, void** args) {
    gridDim = {dims[0], dims[1], dims[2]};
    blockDim = {dims[3], dims[4], dims[5]};
    for (unsigned int bz = 0; bz < dims[2]; ++bz)
    for (unsigned int by = 0; by < dims[1]; ++by)
    for (unsigned int bx = 0; bx < dims[0]; ++bx)
    for (unsigned int tz = 0; tz < dims[5]; ++tz)
    for (unsigned int ty = 0; ty < dims[4]; ++ty)
    for (unsigned int tx = 0; tx < dims[3]; ++tx) {
        blockIdx = {bx, by, bz};
        threadIdx = {tx, ty, tz};
        call(kernel, args, std::index_sequence_for<A...>{});
    }
}
}  // namespace strict_cupy
"""
WRAPPERS = r"""
extern "C" int strict_cupy_describe_{name}(char* p, char* k, long long* s) {{
    return strict_cupy::describe({name}, p, k, s);
}}
extern "C" void strict_cupy_launch_{name}(const unsigned int* dims, void** args) {{
    strict_cupy::launch({name}, dims, args);
}}
"""
KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
MAX_PARAMETERS = 64
_LIBRARIES = {}  # (code, options) -> ctypes.CDLL


class CompileException(RuntimeError):
    """The C++ compiler refused the kernel source (its message follows)."""


def _library(code, options):
    """The source compiled once per (code, options), cached on disk across processes."""
    key = (code, options)
    if key not in _LIBRARIES:
        flags = [o for o in options if o.startswith(("-D", "-U", "-I", "--std=", "-std="))]
        source = PRELUDE + code + "".join(WRAPPERS.format(name=name)
                                          for name in KERNEL.findall(code))
        digest = hashlib.sha256(repr((source, flags)).encode()).hexdigest()[:24]
        folder = os.path.join(tempfile.gettempdir(), f"strict_cupy-{os.getuid()}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{digest}.so")
        if not os.path.exists(path):
            _compile(source, ["-std=c++17"] + flags, path)
        _LIBRARIES[key] = ctypes.CDLL(path)
    return _LIBRARIES[key]


def _compile(source, flags, path):
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("strict_cupy: no C++ compiler (c++ or g++) to run RawKernel")
    with tempfile.TemporaryDirectory() as folder:
        cpp, library = os.path.join(folder, "kernel.cpp"), os.path.join(folder, "kernel.so")
        with open(cpp, "w") as f:
            f.write(source)
        done = subprocess.run([compiler, "-O1", "-shared", "-fPIC", *flags, cpp, "-o", library],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise CompileException(done.stderr)
        os.replace(library, path)  # atomic: a parallel process sees all of it or nothing


def _value(value, name, i):
    """A scalar argument as a NumPy array of one element holding its bytes, as CuPy passes it."""
    if isinstance(value, numpy.ndarray):
        if value.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {value.shape} as a "
                            "kernel parameter. Only numpy.ndarrays of size one can be passed by "
                            "value. If you meant to pass a pointer to __global__ memory, you "
                            "need to pass a cupy.ndarray instead.")
        return numpy.array(value.reshape(()))
    if type(value) is int:
        return numpy.array(value, numpy.uint64 if value >= 2**63 else numpy.int64)
    if type(value) in (bool, float, complex) or isinstance(value, numpy.generic):
        return numpy.array(value)
    raise TypeError(f"Unsupported type {type(value)} (argument {i} of kernel {name})")


def _arguments(name, args, pointer, kinds, sizes):
    """(pointers to the values, what keeps them alive), after the checks above."""
    keep, pointers = [], []
    for i, value in enumerate(args):
        kind, size = kinds[i], sizes[i]
        if isinstance(value, numpy.ndarray):
            _value(value, name, i)  # CuPy's TypeError for more than one element
        if pointer[i]:
            if value is None:
                holder = ctypes.c_void_p(0)
            elif not isinstance(value, ndarray):
                raise TypeError(f"strict_cupy: argument {i} of kernel {name} is a pointer, "
                                f"given {type(value)}")
            else:
                array = value._array
                if not array.flags.c_contiguous:
                    raise ValueError(f"strict_cupy: argument {i} of kernel {name} is not "
                                     "C-contiguous, but the kernel gets only its pointer")
                if kind != "v" and (array.dtype.kind != kind or array.itemsize != size):
                    raise TypeError(f"strict_cupy: argument {i} of kernel {name} is a {array.dtype}"
                                    f" array, the kernel reads {kind}{size * 8}")
                holder = ctypes.c_void_p(array.ctypes.data)
            keep.append(holder)
            pointers.append(ctypes.addressof(holder))
            continue
        if isinstance(value, ndarray):
            raise TypeError(f"strict_cupy: argument {i} of kernel {name} is a value, given an "
                            "array")
        data = _value(value, name, i)
        same_kind = data.dtype.kind == kind or {data.dtype.kind, kind} == {"i", "u"}
        fits = data.itemsize == size or (kind in "iu" and data.itemsize > size)
        if not (same_kind and fits):  # an integer may be wider: the kernel reads its low bytes
            raise TypeError(f"strict_cupy: argument {i} of kernel {name} is {data.dtype}, the "
                            f"kernel's parameter is {kind}{size * 8}")
        keep.append(data)
        pointers.append(data.ctypes.data)
    return (ctypes.c_void_p * max(1, len(pointers)))(*pointers), keep


class RawKernel:
    """cupy.RawKernel(code, name, options=()): compiled on the first call."""

    def __init__(self, code, name, options=(), backend="nvrtc", *, translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=None):
        for argument, value, kind in (("code", code, str), ("name", name, str),
                                      ("options", options, tuple), ("backend", backend, str)):
            if not isinstance(value, kind):
                raise TypeError(f"Argument '{argument}' has incorrect type (expected "
                                f"{kind.__name__}, got {type(value).__name__})")
        self.code, self.name, self.options, self.backend = code, name, options, backend
        self.enable_cooperative_groups = enable_cooperative_groups

    def compile(self, log_stream=None):
        self._functions()

    def _functions(self):
        library = _library(self.code, self.options)
        try:
            describe = getattr(library, f"strict_cupy_describe_{self.name}")
        except AttributeError:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found (strict_cupy: no "
                               f'extern "C" __global__ void {self.name}( in the source)') from None
        return describe, getattr(library, f"strict_cupy_launch_{self.name}")

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        if not isinstance(grid, tuple) or not isinstance(block, tuple):
            raise TypeError("grid and block must be tuples")
        if shared_mem:
            raise NotImplementedError("strict_cupy: shared memory is not emulated")
        grid = tuple(max(1, int(g)) for g in (grid + (1, 1))[:3])
        block = tuple(max(1, int(b)) for b in (block + (1, 1))[:3])
        if block[0] * block[1] * block[2] > 1024 or block[2] > 64 or max(grid[1:]) > 65535 \
                or grid[0] > 2**31 - 1:
            raise RuntimeError("CUDA_ERROR_INVALID_VALUE: invalid argument (strict_cupy: grid "
                               f"{grid}, block {block} exceed CUDA's launch limits)")
        describe, launch = self._functions()
        pointer = (ctypes.c_byte * MAX_PARAMETERS)()
        kinds = (ctypes.c_byte * MAX_PARAMETERS)()
        sizes = (ctypes.c_longlong * MAX_PARAMETERS)()
        count = describe(pointer, kinds, sizes)
        args = tuple(args)
        if len(args) != count:
            raise TypeError(f"strict_cupy: kernel {self.name} takes {count} arguments, given "
                            f"{len(args)}")
        values, keep = _arguments(self.name, args, pointer[:count],
                                  [chr(k) for k in kinds[:count]], sizes[:count])
        launch((ctypes.c_uint * 6)(*grid, *block), values)
        del keep
