"""Real CUDA: these run only where a CUDA device is present (never on CI or the 2-core
development machine; they were run on a lent GPU machine, see docs/gpu.md). Each checks
something that holds only if the device path really works; tests/test_devices.py checks
the same backends against fake modules everywhere else.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcnprobe.attach.notes import ATTACH_RECORD
from dcnprobe.devices import CudaBackend, backend_for
from dcnprobe.probe import Probe
from dcnprobe.runs import read_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def test_cuda_backend_reads_and_frees_real_device_memory():
    backend = CudaBackend(index=0)
    before = backend.memory()
    block = torch.empty(256 * MB, dtype=torch.uint8, device="cuda")
    during = backend.memory()
    assert during["allocated"] - before["allocated"] >= 256 * MB
    assert during["reserved"] >= during["allocated"]
    del block
    backend.empty_cache()  # what cache_clear does at an epoch's end on CUDA
    after = backend.memory()
    assert during["reserved"] - after["reserved"] >= 256 * MB
    assert isinstance(backend_for("cuda:0"), CudaBackend)


def gpu_loop(probe: Probe, batches: int = 8, matmuls: int = 20) -> list[tuple]:
    """Each batch queues `matmuls` large products and returns at once (CUDA is
    asynchronous); CUDA events time the work on the device's own clock."""
    a = torch.randn(4096, 4096, device="cuda")
    events = []
    for _ in probe.loader(range(batches)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with probe.phase("forward"):
            start.record()
            for _ in range(matmuls):
                a.matmul(a)
            end.record()
        probe.end_batch()
        events.append((start, end))
    torch.cuda.synchronize()
    return events


def test_batch_end_sync_puts_each_batchs_gpu_work_in_its_own_total(tmp_path):
    # The probe's wall-clock interval of a batch spans the kernels' launch to the sync
    # after them, so it can only be longer than their device time. Without the sync the
    # host races ahead and a batch reads as launch time alone (the contrast below).
    with Probe(tmp_path / "sync", device="cuda", sync="batch", sample_interval=0.05) as probe:
        events = gpu_loop(probe)
    device_s = [start.elapsed_time(end) / 1000 for start, end in events]
    run = read_run(tmp_path / "sync")
    assert run.header["device"].startswith("cuda") and run.header["sync"] == "batch"
    for total, gpu in zip(run.batches["total"], device_s):
        assert total >= 0.95 * gpu > 0  # 5% for the two clocks' resolution
    # Sampled while the loop held its 4096x4096 float32 operand (64 MB); the last sample,
    # taken as the probe closes, may come after the loop let go of it.
    assert run.samples["device_allocated"].max() >= 64 * MB

    with Probe(tmp_path / "nosync", device="cuda", sync="none", sample_interval=0.05) as probe:
        events = gpu_loop(probe)
    device_s = [start.elapsed_time(end) / 1000 for start, end in events]
    unsynced = read_run(tmp_path / "nosync").batches["total"]
    assert unsynced.sum() < 0.5 * sum(device_s)


def dcnprobe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcnprobe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_attach_finds_a_scripts_cuda_model_and_samples_its_memory(tmp_path):
    # The script chooses its device by itself; the attach learns it from the optimizer's
    # parameters at the first step, then syncs and samples that device.
    out = tmp_path / "attached"
    done = dcnprobe("run", "--out", str(out), "--device", "cuda", "--", sys.executable,
                    "examples/per_sample_loop.py", "--epochs", "2", "--rows", "6400", "--device", "{device}")
    assert done.returncode == 0, done.stderr
    assert "epoch 2: 100 batches" in done.stdout
    run = read_run(out)
    assert run.status == "ok"
    learnt = [record for record in map(json.loads, (out / "run.jsonl").read_text().splitlines())
              if record.get("type") == ATTACH_RECORD and "device" in record]
    assert learnt and learnt[0]["device"].startswith("cuda")
    assert run.batches.groupby("epoch").size().tolist() == [100, 100]
    assert (run.samples["device_allocated"].dropna() > 0).any()


def test_the_built_in_trainer_trains_on_cuda_with_the_probe(tmp_path):
    out = tmp_path / "train"
    done = dcnprobe("train", "--device", "cuda", "--epochs", "2", "--max-batches", "40", "--cache-clear",
                    "epoch", "--out", str(out))
    assert done.returncode == 0, done.stderr
    run = read_run(out)
    assert run.status == "ok" and run.header["device"].startswith("cuda")
    assert run.batches.groupby("epoch").size().tolist() == [40, 40]
    assert (run.batches["to_device"] > 0).all()
    assert (run.samples["device_allocated"] > 0).all() and (run.samples["device_reserved"] > 0).all()
    analysed = dcnprobe("analyze", str(out))
    assert analysed.returncode == 0, analysed.stderr
