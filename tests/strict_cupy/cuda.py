"""The stand-in's cupy.cuda: one device (id 0), a memory pool that holds nothing, and
cupy.cuda.runtime.getDeviceCount() == 1.

The "device" memory is the host's (NumPy allocates it), so Device().mem_info reports the host's
available and total memory, and the pool's byte counts are 0: the stand-in checks no memory
use. Synchronising does nothing: every operation has finished when it returns.
"""
import os


class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError, raised for a device other than 0."""


def _check_device(device_id):
    if device_id != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal "
                               "(strict_cupy emulates one device, 0)")


def _host_memory():
    """(available, total) bytes of the host, from /proc/meminfo (16 GiB each elsewhere)."""
    values = {}
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                name, rest = line.split(":", 1)
                values[name] = int(rest.split()[0]) * 1024
    total = values.get("MemTotal", 16 * 2**30)
    return values.get("MemAvailable", total), total


class Device:
    """cupy.cuda.Device(device=None): device 0, the only one."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("strict_cupy.Device", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __enter__(self):
        _check_device(self.id)
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        _check_device(self.id)

    def synchronize(self):
        _check_device(self.id)

    @property
    def mem_info(self):
        """(free, total) bytes: the host's, where the stand-in's arrays live."""
        _check_device(self.id)
        return _host_memory()


class MemoryPointer:
    """cupy.cuda.MemoryPointer, what an array's .data is: only its address and device."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.device_id = 0

    @property
    def device(self):
        return Device(0)

    def __int__(self):
        return self.ptr

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotImplementedError(f"strict_cupy: cupy.cuda.MemoryPointer.{name} is not emulated")


class MemoryPool:
    """cupy.cuda.MemoryPool: NumPy allocates the stand-in's arrays, so the pool stays empty."""

    def __init__(self, allocator=None):
        self._limit = 0

    def used_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def free_all_free(self):
        pass

    def set_limit(self, size=None, fraction=None):
        if fraction is not None:
            size = int(fraction * Device().mem_info[1])
        self._limit = size or 0

    def get_limit(self):
        return self._limit


MEMORY_POOL = MemoryPool()


def get_default_memory_pool():
    return MEMORY_POOL


def get_device_id():
    return 0


def is_available():
    return True


# cupy.cuda.runtime
def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    _check_device(device)


def deviceSynchronize():
    pass


def memGetInfo():
    return Device().mem_info


RUNTIME = {"CUDARuntimeError": CUDARuntimeError, "getDeviceCount": getDeviceCount,
           "getDevice": getDevice, "setDevice": setDevice,
           "deviceSynchronize": deviceSynchronize, "memGetInfo": memGetInfo}
class Stream:
    """cupy.cuda.Stream: the stand-in runs everything at once, so only the null stream (ptr 0)."""

    def __init__(self, null=False, non_blocking=False, ptds=False):
        if not null:
            raise NotImplementedError("strict_cupy: only the null stream is emulated")
        self.ptr = 0

    def synchronize(self):
        pass


def get_current_stream(device_id=None):
    """The current stream: CuPy's default, the null stream (what tinyseg uses throughout)."""
    return Stream(null=True)


CUDA = {"Device": Device, "MemoryPool": MemoryPool, "MemoryPointer": MemoryPointer,
        "Stream": Stream, "get_current_stream": get_current_stream,
        "get_device_id": get_device_id, "is_available": is_available}
