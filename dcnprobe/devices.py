"""Device backends: resolve a device name, synchronise it, read its memory, clear its cache.

Each backend takes the torch module it wraps (`torch.cuda`, `torch.mps`) as an argument,
so the MPS backend can be tested against a fake module on machines without a Mac.
"""

from __future__ import annotations

import gc
from typing import Any, Protocol

import torch

from dcnprobe import glibc
from dcnprobe.errors import UsageError


class DeviceBackend(Protocol):
    name: str
    asynchronous: bool  # its work runs after the call returns: a wall clock needs synchronize()

    def synchronize(self) -> None: ...

    def memory(self) -> dict[str, int]: ...

    def empty_cache(self) -> None: ...


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str) -> torch.device:
    """'auto' means mps, else cuda, else cpu. A device that is not there is a UsageError."""
    if name == "auto":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"device '{name}' is not available here (available: {', '.join(available_devices())})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device 'mps' is not available here (available: {', '.join(available_devices())})")
    return device


class CpuBackend:
    """CPU work is synchronous. Its 'cache' is Python garbage plus glibc's free lists."""

    name = "cpu"
    asynchronous = False

    def synchronize(self) -> None:
        pass

    def memory(self) -> dict[str, int]:
        return {}

    def empty_cache(self) -> None:
        gc.collect()
        glibc.malloc_trim()


class CudaBackend:
    name = "cuda"
    asynchronous = True

    def __init__(self, module: Any = None, index: int | None = None) -> None:
        self._cuda = module if module is not None else torch.cuda
        self._index = index

    def synchronize(self) -> None:
        self._cuda.synchronize(self._index)

    def memory(self) -> dict[str, int]:
        stats = self._cuda.memory_stats(self._index)
        return {
            "allocated": int(self._cuda.memory_allocated(self._index)),
            "reserved": int(self._cuda.memory_reserved(self._index)),
            # Retries mean the caching allocator had to free and try again: fragmentation.
            "alloc_retries": int(stats.get("num_alloc_retries", 0)),
        }

    def empty_cache(self) -> None:
        gc.collect()
        self._cuda.empty_cache()


class MpsBackend:
    name = "mps"
    asynchronous = True

    def __init__(self, module: Any = None) -> None:
        self._mps = module if module is not None else torch.mps

    def synchronize(self) -> None:
        self._mps.synchronize()

    def memory(self) -> dict[str, int]:
        # driver_allocated growing while current_allocated stays flat is the signature
        # of allocator retention (DESIGN.md's catalogue).
        return {
            "current": int(self._mps.current_allocated_memory()),
            "driver": int(self._mps.driver_allocated_memory()),
            "recommended_max": int(self._mps.recommended_max_memory()),
        }

    def empty_cache(self) -> None:
        gc.collect()
        self._mps.empty_cache()


def backend_for(device: torch.device | str) -> DeviceBackend:
    device = torch.device(device)
    if device.type == "cuda":
        return CudaBackend(index=device.index)
    if device.type == "mps":
        return MpsBackend()
    return CpuBackend()
