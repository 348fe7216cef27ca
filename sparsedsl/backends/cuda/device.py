"""Device interop, the one module of the CUDA backend that the rest of sparsedsl imports: whether a
GPU is there, moving arrays to and from it (cupy, torch CUDA tensors, bfloat16 bits), packing operands.
"""

from __future__ import annotations

import sys

import numpy as np

INSTALL_HINT = 'the CUDA backend needs cupy and an NVIDIA GPU: pip install "sparsedsl[cuda]"'


class CudaUnavailable(RuntimeError):
    """The CUDA backend was asked for, but cupy or a GPU is missing."""


_cp = None


def cupy():
    """The cupy module, imported on first use; raises CudaUnavailable with the install hint."""
    global _cp
    if _cp is None:
        try:
            import cupy as cp

            if cp.cuda.runtime.getDeviceCount() < 1:
                raise CudaUnavailable(f"no CUDA device is visible; {INSTALL_HINT}")
        except CudaUnavailable:
            raise
        except Exception as exc:  # ImportError, or a CUDA driver error when there is no GPU
            raise CudaUnavailable(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
        _cp = cp
    return _cp


def available() -> bool:
    try:
        cupy()
        return True
    except CudaUnavailable:
        return False


# ---- operands on the device ------------------------------------------------------------------


def array_type():
    """``cupy.ndarray`` once cupy has been imported (by the user or this backend), else None."""
    cp = sys.modules.get("cupy")
    return getattr(cp, "ndarray", None)


def on_device(value) -> bool:
    """Whether ``value`` lives on a GPU (cupy / cupyx.scipy.sparse, a torch CUDA tensor, a SparseTensor
    or a composite moved with ``.to("cuda")``). Needs no cupy import."""
    mod = type(value).__module__
    if mod.startswith(("cupy", "cupyx")):
        return True
    if mod.startswith("torch"):
        return bool(getattr(value, "is_cuda", False))
    return getattr(value, "device", None) == "cuda" and (hasattr(value, "levels") or hasattr(value, "parts"))


def zeros(shape, dtype):
    return cupy().zeros(shape, dtype=dtype)


def empty(shape, dtype):
    return cupy().empty(shape, dtype=dtype)


class BFloat16Array:
    """bfloat16 values on the GPU. cupy has no bfloat16 dtype, so the bits live in a uint16 cupy array
    (``bits``) and kernels widen them on load (float32 arithmetic). To the compiler's type checks it
    is float32 (every bfloat16 is exactly a float32), so results come back as float32. Built from
    torch bfloat16 CUDA tensors (DLPack, no copy) or with ``SparseTensor.astype("bfloat16")``."""

    sd_storage = "bfloat16"
    dtype = np.dtype(np.float32)

    def __init__(self, bits):
        self.bits = bits

    shape = property(lambda self: self.bits.shape)
    ndim = property(lambda self: self.bits.ndim)
    size = property(lambda self: self.bits.size)
    flags = property(lambda self: self.bits.flags)
    __cuda_array_interface__ = property(lambda self: self.bits.__cuda_array_interface__)

    def __len__(self):
        return len(self.bits)

    def __getitem__(self, key):
        return BFloat16Array(self.bits[key])

    def reshape(self, *shape):
        return BFloat16Array(self.bits.reshape(*shape))

    def astype(self, dtype):
        return astype(self, dtype)

    def widen(self):
        """float32 cupy array of the same values (exact)."""
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def get(self):
        return self.widen().get()

    def __repr__(self):
        return f"BFloat16Array(shape={self.shape})"


def storage(value):
    """"float16" or "bfloat16" when ``value`` (cupy, torch CUDA, a SparseTensor's values) holds 16-bit
    floats on the device, else None."""
    if hasattr(value, "levels"):
        value = value.values
    if getattr(value, "sd_storage", None) == "bfloat16":
        return "bfloat16"
    dt = str(getattr(value, "dtype", ""))
    return {"float16": "float16", "torch.float16": "float16", "torch.bfloat16": "bfloat16"}.get(dt)


def astype(values, dtype):
    """Device values as ``dtype``: a numpy dtype, or "bfloat16" (rounded to nearest even, uint16 bits)."""
    cp = cupy()
    if isinstance(values, BFloat16Array):
        values = values.widen()
    if str(dtype) != "bfloat16":
        return values.astype(dtype)
    u = cp.ascontiguousarray(values.astype(np.float32)).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return BFloat16Array(cp.where(nan, ((u >> 16) | np.uint32(0x40)).astype(np.uint16), rounded))


def to_device(a):
    cp = cupy()
    return cp.ascontiguousarray(cp.asarray(a))


def to_host(value):
    """A host copy of a device operand, as the CPU packing path understands it."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        value = value.detach()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).cpu()
    if hasattr(value, "levels"):
        return value.to("cpu")
    if hasattr(value, "get"):
        return value.get()  # cupy array -> numpy, cupyx sparse -> scipy sparse
    return value


def pack(value, param, host_pack):
    """Put an operand into its declared format on the device: dense cupy arrays and torch CUDA
    tensors are used in place (DLPack, no copy), SparseTensors already on the device in the
    declared format (or with none declared) too; anything else is packed on the host (validated
    there) and copied over."""
    cp = cupy()
    mod = type(value).__module__
    if mod.startswith("torch") and getattr(value, "is_cuda", False) and value.layout == _torch_strided():
        if str(value.dtype) == "torch.bfloat16":  # no bfloat16 in cupy: its bits, as uint16
            import torch

            value = BFloat16Array(cp.from_dlpack(value.detach().contiguous().view(torch.int16)).view(np.uint16))
        else:
            value = cp.from_dlpack(value.detach())
    dense = param.kind != "scalar" and param.format in (None, "dense")
    if isinstance(value, BFloat16Array) and dense:
        return value if value.flags.c_contiguous else BFloat16Array(cp.ascontiguousarray(value.bits))
    if isinstance(value, cp.ndarray) and dense and value.dtype.kind in "biuf" and value.dtype.itemsize <= 8:
        return cp.ascontiguousarray(value)
    if hasattr(value, "levels") and getattr(value, "device", "cpu") == "cuda":
        from ...lang.formats import as_format

        # in place when it is in the declared format, or when none is declared (the operand's own, as
        # on the CPU): a device tensor is never taken back to the host to be packed again
        if param.format is None or value.format == as_format(param.format, value.ndim):
            return value
    half = storage(value) if on_device(value) else None
    packed = host_pack(to_host(value) if on_device(value) else value, param)
    if hasattr(packed, "levels"):  # packed on the host (wider values there); 16-bit again on the device
        return packed.to("cuda") if half is None else packed.to("cuda").astype(half)
    if half is not None and isinstance(packed, np.ndarray):
        return astype(to_device(packed), half)
    if isinstance(packed, np.ndarray):
        return to_device(packed)
    return packed  # a scalar


def finish(outputs: list, inputs: list) -> list:
    """Results on the device, as the kind of object that was passed: torch in, torch out."""
    torch_in = any(type(v).__module__.startswith("torch") for v in inputs)
    done = []
    for o in outputs:
        if hasattr(o, "levels"):
            o = o.to("cuda")
        elif torch_in and type(o).__module__.startswith("cupy"):
            import torch

            o = torch.from_dlpack(o)
        done.append(o)
    return done


def _torch_strided():
    import torch

    return torch.strided




_devattr: dict = {}


def clusters() -> bool:
    """Whether this device runs thread-block clusters (compute capability 9.0 and later)."""
    cp = cupy()
    dev = ("cc", cp.cuda.Device().id)
    if dev not in _devattr:
        _devattr[dev] = int(cp.cuda.Device().compute_capability) >= 90
    return _devattr[dev]


def device_sms() -> int:
    cp = cupy()
    dev = cp.cuda.Device().id
    if dev not in _devattr:
        _devattr[dev] = cp.cuda.Device(dev).attributes["MultiProcessorCount"]
    return _devattr[dev]
