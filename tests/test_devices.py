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


# -- MPS allocator retention, end to end through the sampler and the analysis ----------
# A FAKE: no Mac is here. The fake stands in for torch.mps the way the MPS driver behaved
# in ultralytics/ultralytics#24065: each batch's allocations are freed (current memory is
# flat) but the driver keeps the blocks (driver memory grows) until empty_cache().

MB = 1 << 20


class RetainingFakeMps(FakeMps):
    def __init__(self, retained_per_batch: int):
        super().__init__()
        self.current, self.driver = 800 * MB, 1000 * MB
        self.retained_per_batch = retained_per_batch

    def run_batch(self):
        self.driver += self.retained_per_batch  # freed by the program, kept by the driver


def _fake_mps_run(directory, clear_each_epoch: bool, epochs=3, batches=100):
    """A training loop's record, its device memory read through MpsBackend and sampled
    by the real MemorySampler; batch times are flat (retention costs memory first)."""
    import numpy as np

    from dcnprobe.hooks import PHASES
    from dcnprobe.records import SCHEMA_VERSION, RunWriter
    from dcnprobe.sampler import MemorySampler

    fake = RetainingFakeMps(retained_per_batch=2 * MB)
    backend = MpsBackend(fake)
    writer = RunWriter(directory)
    writer.write("header", {"schema": SCHEMA_VERSION, "settings": {"device": "mps"}, "sync": "batch",
                            "environment": {"cpu_count": 2}, "phases": list(PHASES)})
    position = {"epoch": 1, "step": 0}
    clock = {"t": 0.0}  # the loop's own timeline: its batch times are made up, so must the samples' be
    sampler = MemorySampler(lambda record: None, device_memory=backend.memory, context=lambda: dict(position),
                            clock=lambda: clock["t"])
    rng = np.random.default_rng(0)
    t, step = 0.0, 0
    for epoch in range(1, epochs + 1):
        for batch in range(batches):
            fake.run_batch()
            phases = {"data_wait": 0.002, "to_device": 0.0001, "forward": 0.04 * (1 + 0.03 * rng.standard_normal()),
                      "backward": 0.05, "optimizer": 0.007, "cache_clear": 0.0, "other": 0.001}
            t += sum(phases.values())
            writer.write("batch", {"epoch": epoch, "batch": batch, "step": step, "t": t, **phases,
                                   "total": sum(phases.values()), "rss": 500 * MB, "py_blocks": 100_000,
                                   "gc_s": 0.0, "gc_gen2": 0, "minflt": 10, "majflt": 0})
            position.update(epoch=epoch, step=step)
            clock["t"] = t
            if step % 5 == 0:
                sample = sampler.sample(with_uss=False)
                del sample["machine_busy_s"]  # this machine's real CPU load belongs to no made-up timeline
                writer.write("memory", sample)
            step += 1
        if clear_each_epoch:
            backend.empty_cache()  # the remedy: the fake's driver gives back what it kept
        writer.write("epoch", {"epoch": epoch, "batches": batches})
    writer.write("footer", {"status": "ok"})
    writer.close()
    return fake


def test_fake_mps_driver_growth_is_named_allocator_retention(tmp_path):
    from dcnprobe.analysis import analyze_run

    _fake_mps_run(tmp_path, clear_each_epoch=False)
    analysis = analyze_run(tmp_path)
    assert analysis.signals.memory.device_driver.growth > 500 * MB
    assert abs(analysis.signals.memory.device_current.growth) < MB
    assert analysis.top_cause == "device-allocator-retention"


def test_fake_mps_with_empty_cache_each_epoch_is_not_retention(tmp_path):
    from dcnprobe.analysis import analyze_run

    fake = _fake_mps_run(tmp_path, clear_each_epoch=True)
    assert fake.emptied == 3
    analysis = analyze_run(tmp_path)
    assert "device-allocator-retention" not in [c.id for c in analysis.causes]
