"""The probe: per-batch phase timers, a memory sampler, a stall watchdog and a crash-safe
run record, behind the five calls of dcnprobe.hooks. Works with any PyTorch loop:

    probe = Probe("runs/mine", device="cpu")
    with probe:
        for epoch in range(2):
            for x, y in probe.loader(loader):        # epochs are counted for you
                with probe.phase("forward"):
                    loss = loss_fn(model(x), y)
                with probe.phase("backward"):
                    loss.backward()
                with probe.phase("optimizer"):
                    opt.step(); opt.zero_grad()
                probe.end_batch()

It records, and calls the listeners it is given; nothing else. It runs inside the user's
process, so it imports only what recording needs (no pandas, matplotlib or analysis). The
live early warning and the epoch profilers are listeners that whoever starts the run adds
(dcnprobe.launched): `dcnprobe train`, the attach under `dcnprobe run` and the harness, or a
script itself (`warn_on_slowdown(probe)`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from dcnprobe import environment, glibc
from dcnprobe.contract import Exit
from dcnprobe.devices import backend_for
from dcnprobe.gcwatch import GcWatch
from dcnprobe.hooks import PHASES, ProbeListener, StopRun, probe_created
from dcnprobe.processes import ProcessReader, RssReader, own_faults
from dcnprobe.ratios import percentile
from dcnprobe.records import SCHEMA_VERSION, RunWriter
from dcnprobe.sampler import DEFAULT_INTERVAL, DEFAULT_USS_EVERY, MemorySampler
from dcnprobe.stall import (
    DEFAULT_STALL_FACTOR,
    DEFAULT_STALL_FLOOR_S,
    StallWatchdog,
    capture_stacks,
    kill_processes,
)
from dcnprobe.timers import PhaseTimer

T = TypeVar("T")

# What a batch end's own reads (RSS, page faults) may cost, as a share of the loop's time:
# paid on the training thread, all of it overhead (0.1% once; a read every 3 batches of a
# 20 ms loop). The analysis judges memory over epochs: a reading every quarter second or
# so serves it as well.
COUNTER_CPU_SHARE = 0.0002


class Probe:
    def __init__(
        self,
        out_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        sync: str = "batch",
        sample_interval: float | None = None,
        uss_every: int = DEFAULT_USS_EVERY,
        stall_factor: float = DEFAULT_STALL_FACTOR,
        stall_floor_s: float = DEFAULT_STALL_FLOOR_S,
        on_stall: str = "exit",
        live_tensors: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        sync_fn: Callable[[], None] | None = None,
        listeners: Iterable[ProbeListener] = (),
        max_batches: int | None = None,
    ) -> None:
        if on_stall not in ("exit", "record"):
            raise ValueError("on_stall must be 'exit' or 'record'")
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        backend = backend_for(self.device)
        self.timer = PhaseTimer(clock=clock, sync=sync_fn or _synchronize(backend), mode=sync)
        self.writer: RunWriter | None = None
        self.gc = GcWatch()
        self.reader = ProcessReader()
        self._rss = RssReader(self.reader)
        # sys.getallocatedblocks() walks every pymalloc arena (50-150 us with torch loaded,
        # more as the heap grows): the sampler thread reads it, and each batch carries the
        # latest reading instead of paying for its own.
        self._py_blocks = sys.getallocatedblocks()
        # The per-batch counters (_read_counters): the latest readings, and when next due.
        self._rss_read: int | None = None
        self._faults_read = (0, 0)
        self._in_use_read: int | None = None
        self._in_use_read_at = -math.inf
        self._counters_due = -math.inf
        self.sampler = MemorySampler(
            # No interval given: the default, lengthened in a long epoch to keep the sampler cheap.
            self._sampled, interval=sample_interval or DEFAULT_INTERVAL, budgeted=sample_interval is None,
            uss_every=uss_every, device_memory=backend.memory,
            context=self._context, gc_watch=self.gc, live_tensors=live_tensors, reader=self.reader, clock=self._now,
        )
        self.watchdog = StallWatchdog(self._stalled, factor=stall_factor, floor_s=stall_floor_s)
        self.on_stall = on_stall
        self.clock = clock
        self.epoch = 0
        self.batch = 0
        self.step = 0
        self._t0 = 0.0
        self._epoch_open = False
        self._in_loop = False
        self._auto_epoch = False
        self._epoch_started = 0.0
        self._epoch_totals: list[float] = []
        self._gc_seconds = 0.0
        self._gc_gen2 = 0
        self._faults = (0, 0)
        self._finished = False
        self.listeners: list[ProbeListener] = list(listeners)
        self.max_batches = max_batches  # per pass over the loader, then the pass ends early
        self._stopped: StopRun | None = None  # a listener ended the run
        self._failed_on_sample: list[ProbeListener] = []
        # A launcher in this process (the attach) may say where to record and add listeners.
        probe_created(self)

    def add_listener(self, listener: ProbeListener) -> None:
        self.listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, info: Mapping[str, Any] | None = None) -> None:
        self.writer = RunWriter(self.out_dir)
        self._t0 = self.clock()
        header = {
            "schema": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # Record time t is unix time t0_unix + t: ranks and exported traces share one clock.
            "t0_unix": time.time(),
            "pid": os.getpid(),
            "argv": sys.argv,
            "device": str(self.device),
            "sync": self.timer.mode,
            "sample_interval": self.sampler.interval,
            "phases": list(PHASES),
            "environment": environment.describe(),
            # How batches and epochs were found: here the loop says (the attach says otherwise).
            "boundaries": {"batch": "api", "epoch": "api"},
            **(info or {}),
        }
        self.writer.write("header", header)
        for listener in self.listeners:
            listener.on_start(header)
        self.gc.start()
        self._faults = self._faults_read = own_faults()
        self._py_blocks = sys.getallocatedblocks()
        self.sampler.start()
        self.watchdog.start()

    def finish(self, status: str = "ok") -> None:
        if self._finished or self.writer is None:
            return
        self._finished = True
        self.watchdog.stop()
        self.sampler.stop()
        self.gc.stop()
        for listener in self.listeners:
            listener.on_finish(status)
        self._emit_sample(self.sampler.sample(with_uss=True))
        self._rss.close()
        if self._stopped is not None:  # whatever the loop made of the StopRun it saw
            self._write_footer(self._stopped.status, reason=self._stopped.reason)
        else:
            self._write_footer(status)

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status = "ok"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "crashed"
        self.finish(status)

    # -- epochs and batches ---------------------------------------------------------------

    def epoch_start(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self._epoch_open = True
        self._epoch_started = self.clock()
        self._epoch_totals = []
        for listener in self.listeners:
            listener.on_epoch_start(epoch)

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> None:
        self.watchdog.disarm()
        self._epoch_open = False
        totals = sorted(self._epoch_totals)
        record: dict[str, Any] = {
            "epoch": epoch,
            "batches": len(totals),
            "t_start": self._epoch_started - self._t0,
            "t_end": self._now(),
            "median_batch_s": totals[len(totals) // 2] if totals else None,
            "p90_batch_s": percentile(totals, 90) if totals else None,  # the one definition: analysis.stats
            **(metrics or {}),
        }
        if self.writer is not None:
            self.writer.write("epoch", record)

    def loader(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from the loader, timing how long each next() blocks (data_wait).

        The first batch's wait includes creating the iterator, which is where
        non-persistent workers are started each epoch. `max_batches` (a launcher's
        bound) ends the pass early, as it does for a script with the probe attached.
        """
        limit = self.max_batches
        self.begin_pass()
        timer = self.timer
        timer.begin()
        yielded = 0
        try:
            iterator = iter(iterable)
            while limit is None or yielded < limit:
                if not timer.in_batch:
                    timer.begin()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                timer.waited()
                yielded += 1
                yield item
            timer.cancel()
        finally:  # also when the loop breaks out early
            self.end_pass()

    def begin_pass(self) -> None:
        """A pass over the training loader starts: an epoch too, unless the loop opened
        one. Probe.loader calls this; so does the attach agent, which has no `for` to wrap."""
        self._auto_epoch = not self._epoch_open
        if self._auto_epoch:
            self.epoch_start(self.epoch + 1)
        self.watchdog.arm()
        self._in_loop = True

    def end_pass(self, counted: bool = True) -> None:
        """The pass is over. `counted=False`: it turned out not to be training (the attach
        saw no optimizer step in it), so the epoch it opened is withdrawn, unrecorded."""
        self.watchdog.disarm()
        self._in_loop = False
        if not counted:
            if self._auto_epoch:
                self.epoch -= 1
                self._epoch_open = False
            return
        if self.writer is not None:  # between epochs now: no batch is due until the next pass
            self.writer.write("loop_end", {"t": self._now(), "epoch": self.epoch, "batches": self.batch})
        # The epoch's training batches are done (validation, if any, comes after):
        # profilers stop here so that they cover training only.
        for listener in self.listeners:
            listener.on_epoch_end(self.epoch)
        if self._auto_epoch:
            self.epoch_end(self.epoch)

    def use_device(self, device: str | torch.device) -> None:
        """Probe another device than the one given at construction: the attach learns the
        script's device only at its first optimizer step (from the parameters)."""
        self.device = torch.device(device)
        backend = backend_for(self.device)
        self.timer.sync = _synchronize(backend)
        self.sampler.device_memory = backend.memory

    def event(self, kind: str, **fields: Any) -> None:
        """A record of another kind than the probe's own (the attach's notes), stamped with t."""
        self.write_event(kind, fields)

    def phase(self, name: str) -> _Phase:
        return _Phase(self.timer, name)

    def end_batch(self, **fields: Any) -> None:
        times = self.timer.end()
        # The batch's end, read before the bookkeeping below (a /proc read can take ms): a
        # trace lays the batch out over [t - total, t], on the same clock as a profiler's.
        now = self.clock() - self._t0
        if now >= self._counters_due:
            self._read_counters(now)
        gc = self.gc
        gc_seconds, gc_gen2 = gc.total, gc.count[2]
        minflt, majflt = self._faults_read
        record = {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "t": now,
            **times,
            "rss": self._rss_read,
            # At batch end the step's activations are freed: what glibc still hands out is
            # what the loop keeps. A steadier measure of retention than a mid-step sample.
            "in_use": self._in_use_read,
            "py_blocks": self._py_blocks,  # as of the latest memory sample
            "gc_s": gc_seconds - self._gc_seconds,
            "gc_gen2": gc_gen2 - self._gc_gen2,
            "minflt": minflt - self._faults[0],
            "majflt": majflt - self._faults[1],
            **fields,
        }
        self._gc_seconds, self._gc_gen2, self._faults = gc_seconds, gc_gen2, (minflt, majflt)
        self.batch += 1
        self.step += 1
        self._epoch_totals.append(times["total"])
        self.watchdog.progress(times["total"])
        if self.writer is not None:
            self.writer.write("batch", record)
        try:
            for listener in self.listeners:
                listener.on_batch(record)
        except StopRun as stop:
            self._stopped = stop
            raise

    # -- internals ---------------------------------------------------------------

    def _read_counters(self, now: float) -> None:
        """RSS, page faults and glibc's bytes in use, read at a batch end. Each read costs a
        system call, and one made right after a step's kernels runs cold (30-60 us where a
        warm one takes 2): so they are read no more often than keeps them within
        COUNTER_CPU_SHARE of the loop's time, and the batches in between carry the latest
        readings (faults: counted at the batch that reads them). mallinfo2 walks every
        arena's free lists, tens of us in a training process with many threads: it is read
        at most once per sample interval."""
        began = self.clock()
        self._rss_read = self._rss()
        self._faults_read = own_faults()
        if now - self._in_use_read_at >= self.sampler.interval:
            self._in_use_read, self._in_use_read_at = self._in_use(), now
        self._counters_due = now + (self.clock() - began) / COUNTER_CPU_SHARE

    @staticmethod
    def _in_use() -> int | None:
        info = glibc.mallinfo()
        return info["in_use"] if info else None

    def _now(self) -> float:
        return self.clock() - self._t0

    def _context(self) -> dict[str, Any]:
        # in_loop: sampled while batches were being iterated (not during validation or
        # checkpointing between epochs, whose memory use is of another kind).
        return {"epoch": self.epoch, "step": self.step, "in_loop": self._in_loop}

    def write_event(self, kind: str, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(kind, {"t": self._now(), **record})

    def _write_footer(self, status: str, **fields: Any) -> None:
        """The one place a footer is written (a normal end, a slow stop, a stall)."""
        if self.writer is not None:
            self.writer.write_footer(status, t=self._now(), epochs=self.epoch, steps=self.step, **fields)

    def _emit_sample(self, sample: dict[str, Any]) -> None:
        self._py_blocks = sample.get("py_blocks", self._py_blocks)
        if self.writer is not None:
            self.writer.write("memory", sample)

    def _sampled(self, sample: dict[str, Any]) -> None:
        """A periodic sample, on the sampler thread: written, then the listeners' turn."""
        self._emit_sample(sample)
        for listener in self.listeners:
            try:
                listener.on_sample(sample)
            except Exception as exc:  # a listener's failure must not end the sampling: said once
                if listener not in self._failed_on_sample:
                    self._failed_on_sample.append(listener)
                    print(f"dcnprobe: warning: {type(listener).__name__}.on_sample failed: {type(exc).__name__}: "
                          f"{exc}", file=sys.stderr, flush=True)

    def _stalled(self, waited: float, median: float | None) -> None:
        workers, job = self.reader.worker_pids(), self.reader.job_pids()
        stacks = capture_stacks(self.out_dir / "stacks", self.reader.pid, workers, job)
        if self.writer is not None:
            self.writer.write("stall", {
                "t": self._now(), "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "waited_s": waited, "median_batch_s": median, "workers": workers, "stacks": stacks,
            })
        print(f"dcnprobe: warning: stalled: no batch finished for {waited:.0f} s in epoch {self.epoch} "
              f"(batch {self.batch}); stacks of the main process, {len(workers)} worker(s)"
              + (f" and {len(job)} process(es) of the job's other ranks" if job else "") + " in "
              f"{self.out_dir / 'stacks'}" + ("; ending the run" if self.on_stall == "exit" else ""),
              file=sys.stderr, flush=True)
        if self.on_stall == "exit":
            self._write_footer("stalled", reason=f"no batch for {waited:.0f} s")
            kill_processes(workers)
            os._exit(Exit.STALLED)


def _synchronize(backend: Any) -> Callable[[], None] | None:
    """What the timer waits on before reading the clock: nothing on a synchronous device."""
    return backend.synchronize if backend.asynchronous else None


class _Phase:
    """Times a phase and labels it for torch.profiler with the same name."""

    __slots__ = ("span", "label")

    def __init__(self, timer: PhaseTimer, name: str) -> None:
        self.span = timer.phase(name)
        self.label = torch.profiler.record_function(name)

    def __enter__(self) -> None:
        self.label.__enter__()
        self.span.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.span.__exit__(*exc)
        self.label.__exit__(*exc)
