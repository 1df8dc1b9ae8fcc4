"""Device backends. No Mac or GPU is here: MPS and CUDA are tested against fake modules
that stand in for torch.mps / torch.cuda, which is all these backends touch."""

import pytest
import torch

from dcnprobe.devices import CpuBackend, CudaBackend, MpsBackend, backend_for, resolve_device
from dcnprobe.errors import UsageError


class FakeMps:
    def __init__(self):
        self.synced = 0
        self.emptied = 0
        self.current, self.driver = 100, 300

    def synchronize(self):
        self.synced += 1

    def current_allocated_memory(self):
        return self.current

    def driver_allocated_memory(self):
        return self.driver

    def recommended_max_memory(self):
        return 1 << 30

    def empty_cache(self):
        self.emptied += 1
        self.driver = self.current


def test_mps_backend_against_a_fake_module():
    fake = FakeMps()
    backend = MpsBackend(fake)
    backend.synchronize()
    assert fake.synced == 1
    assert backend.memory() == {"current": 100, "driver": 300, "recommended_max": 1 << 30}
    backend.empty_cache()
    assert fake.emptied == 1 and backend.memory()["driver"] == 100


class FakeCuda:
    def synchronize(self, index):
        self.synced_index = index

    def memory_stats(self, index):
        return {"num_alloc_retries": 4}

    def memory_allocated(self, index):
        return 10

    def memory_reserved(self, index):
        return 30

    def empty_cache(self):
        self.emptied = True


def test_cuda_backend_against_a_fake_module():
    fake = FakeCuda()
    backend = CudaBackend(fake, index=1)
    backend.synchronize()
    assert fake.synced_index == 1
    assert backend.memory() == {"allocated": 10, "reserved": 30, "alloc_retries": 4}
    backend.empty_cache()
    assert fake.emptied


def test_cpu_backend_clears_for_real():
    """Its 'cache' is Python garbage plus glibc's free lists: both are really released."""
    import gc
    import weakref

    from dcnprobe import glibc

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # only the cycle collector frees this
    alive = weakref.ref(cycle)
    del cycle
    gc.disable()
    try:
        backend = CpuBackend()
        backend.synchronize()
        assert backend.memory() == {}
        assert alive() is not None
        backend.empty_cache()
        assert alive() is None  # collected by the clear, not by an automatic collection
    finally:
        gc.enable()
    if glibc.mallinfo() is not None:  # on glibc: memory freed by Python goes back to the OS
        blocks = [bytearray(64 << 10) for _ in range(2000)]  # 128 MB of heap chunks
        del blocks
        held = glibc.mallinfo()["free_held"]
        backend.empty_cache()
        assert glibc.mallinfo()["free_held"] < held


def test_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert isinstance(backend_for("cpu"), CpuBackend)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_cuda_is_a_usage_error():
    with pytest.raises(UsageError, match="not available"):
        resolve_device("cuda:0")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_absent_mps_is_a_usage_error():
    with pytest.raises(UsageError, match="not available"):
        resolve_device("mps")
