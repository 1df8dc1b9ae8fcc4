import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dcnprobe.hooks import BATCH_TIMES, ProbeListener
from dcnprobe.probe import Probe
from dcnprobe.runs import read_run
from dcnprobe.stall import StallWatchdog

from conftest import TINY_BATCH


def plain_loop(probe, epochs=2, batches=5, fail_at=None):
    """A user's own loop, not the trainer: a linear model on random tensors."""
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(batches)]
    for _ in range(epochs):
        for i, (x, y) in enumerate(probe.loader(data)):
            with probe.phase("forward"):
                loss = torch.nn.functional.mse_loss(model(x), y)
            with probe.phase("backward"):
                loss.backward()
            with probe.phase("optimizer"):
                opt.step()
                opt.zero_grad()
            if fail_at == i:
                raise RuntimeError("boom")
            probe.end_batch(loss=loss.item())


def test_a_plain_loop_is_recorded_with_epochs_counted(tmp_path):
    with Probe(tmp_path, sample_interval=0.05) as probe:
        plain_loop(probe)
    run = read_run(tmp_path)
    assert run.status == "ok"
    assert len(run.batches) == 10
    assert run.batches["epoch"].tolist() == [1] * 5 + [2] * 5
    assert run.batches["batch"].tolist() == list(range(5)) * 2
    assert set(BATCH_TIMES) <= set(run.batches.columns)
    assert (run.batches["forward"] > 0).all() and (run.batches["total"] >= run.batches["forward"]).all()
    assert run.epochs["epoch"].tolist() == [1, 2]
    assert run.header["sync"] == "batch" and run.header["schema"] == 1
    assert len(run.samples) >= 1 and (run.samples["main_rss"] > 0).all()


def test_a_crash_is_recorded_as_crashed(tmp_path):
    with pytest.raises(RuntimeError), Probe(tmp_path) as probe:
        plain_loop(probe, fail_at=2)
    run = read_run(tmp_path)
    assert run.status == "crashed" and len(run.batches) == 2


def test_sampler_sees_every_dataloader_worker(tmp_path):
    dataset = torch.utils.data.TensorDataset(torch.arange(64.0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True)
    probe = Probe(tmp_path)
    seen = []
    for _ in probe.loader(loader):
        seen.append(probe.sampler.sample(with_uss=True)["workers"])
        probe.end_batch()
    workers = max(seen, key=len)
    assert len(workers) == 2
    assert all(w["rss"] > 0 and w["uss"] > 0 for w in workers)
    assert {w["pid"] for w in workers}.isdisjoint({os.getpid()})


def test_watchdog_fires_once_after_the_limit_and_only_when_armed():
    now = [0.0]
    fired = []
    dog = StallWatchdog(lambda waited, median: fired.append((waited, median)), factor=10, floor_s=2.0,
                        first_batch_s=60.0, clock=lambda: now[0])
    now[0] = 1000.0
    assert not dog.check()  # not armed: between epochs anything may take long
    dog.arm()
    now[0] = 1059.0
    assert not dog.check()  # first batch: 60 s allowance for worker start-up
    for _ in range(5):
        dog.progress(0.5)  # median 0.5 s -> limit max(2, 10 * 0.5) = 5 s
    now[0] += 4.9
    assert not dog.check()
    now[0] += 0.2
    assert dog.check()
    assert not dog.check()  # once only
    assert fired == [(pytest.approx(5.1), 0.5)]


@pytest.mark.slow  # a real run killed: 8 s; test_interrupts kills at random points, and test_records covers torn lines
def test_sigkill_mid_epoch_keeps_every_record_up_to_the_kill(tmp_path, tiny_data):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcnprobe", "train", "--data", tiny_data, "--batch-size", str(TINY_BATCH),
         "--epochs", "50", "--num-workers", "2", "--out", str(out), "--quiet", "--device", "cpu",
         "--sample-interval", "0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    record = out / "run.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if record.exists() and record.read_text().count('"type":"batch"') >= 25:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = record.read_text().splitlines()
    complete = [json.loads(line) for line in lines if line.endswith("}")]
    run = read_run(out)
    assert run.status == "incomplete"
    assert len(run.batches) == sum(r["type"] == "batch" for r in complete) >= 25
    assert run.batches[list(BATCH_TIMES)].notna().all().all()
    assert (run.samples["workers"] == 2).any()


def test_train_records_every_batch_phase_workers_and_epochs(small_data, tmp_path, capsys):
    """The issue's check: 2 epochs x 40 batches with 2 workers."""
    from dcnprobe.cli import main

    main(["train", "--epochs", "2", "--max-batches", "40", "--num-workers", "2", "--data", small_data,
          "--batch-size", str(TINY_BATCH), "--out", str(tmp_path), "--quiet", "--sample-interval", "0.1"])
    run = read_run(tmp_path)
    assert len(run.batches) == 80
    assert run.batches[list(BATCH_TIMES)].notna().all().all()
    # Non-persistent workers are new processes each epoch: two per epoch.
    assert run.workers.groupby("epoch")["pid"].nunique().tolist() == [2, 2]
    assert (run.samples["workers"] == 2).any() and (run.samples["workers_rss"] > 0).any()
    assert run.epochs["epoch"].tolist() == [1, 2] and run.status == "ok"
    assert "val_auc" in run.epochs and "median_batch_s" in run.epochs


class _SteppedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _DearRss:
    """RSS readings 1000, 1001, ..., each costing 50 us of the clock."""

    def __init__(self, clock: _SteppedClock) -> None:
        self.clock, self.readings = clock, iter(range(1000, 2000))

    def __call__(self) -> int:
        self.clock.now += 50e-6
        return next(self.readings)

    def close(self) -> None:
        pass


def test_a_batch_end_reads_rss_and_faults_within_their_share_and_the_batches_between_carry_them(
        tmp_path, monkeypatch):
    """Batches of 20 ms whose end reads (RSS, faults) cost 50 us: at COUNTER_CPU_SHARE 0.02%
    they are read every 250 ms, so every 13th batch; the batches between carry the last RSS
    and no faults, and the faults of the reading batch are all those since the last read."""
    from dcnprobe import probe as probe_module

    assert probe_module.COUNTER_CPU_SHARE == 0.0002
    faults = iter([(0, 0)] + [(10 * i, i) for i in range(1, 100)])
    monkeypatch.setattr(probe_module, "own_faults", lambda: next(faults))
    clock = _SteppedClock()
    records = []
    keep = type("Keep", (ProbeListener,), {"on_batch": lambda self, record: records.append(record)})()
    probe = Probe(tmp_path, clock=clock, listeners=[keep])
    probe._rss = _DearRss(clock)
    with probe:
        probe.begin_pass()
        for _ in range(30):
            probe.timer.begin()
            clock.now += 0.02
            probe.end_batch()
        probe.end_pass()
    read = [0, 13, 26]  # 13 x 20 ms (plus a read's 50 us) >= 250 ms since the last read
    assert [r["rss"] for r in records] == [1000 + sum(i >= k for k in read) - 1 for i in range(30)]
    assert [r["majflt"] for r in records] == [int(i in read) for i in range(30)]
    assert [r["minflt"] for r in records] == [10 * (i in read) for i in range(30)]


def test_listeners_hear_each_sample_on_the_sampler_thread_and_a_failing_one_is_said_once(tmp_path, capsys):
    """on_sample comes from the sampler's thread after each periodic sample is written; a
    listener that raises there is named once on stderr, and the sampling goes on."""
    import threading

    heard, training = [], threading.get_ident()

    class Hears(ProbeListener):
        def on_sample(self, sample):
            heard.append((threading.get_ident(), sample["t"]))

    class Fails(ProbeListener):
        def on_sample(self, sample):
            raise ValueError("no")

    with Probe(tmp_path, sample_interval=0.02, listeners=[Fails(), Hears()]):
        deadline = time.monotonic() + 10
        while len(heard) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(heard) >= 4 and training not in {thread for thread, _ in heard}
    assert [t for _, t in heard] == sorted(t for _, t in heard)
    written = read_run(tmp_path).samples["t"].tolist()
    assert all(t in written for _, t in heard)  # each heard sample is one the record holds
    assert capsys.readouterr().err.count("Fails.on_sample failed: ValueError: no") == 1
