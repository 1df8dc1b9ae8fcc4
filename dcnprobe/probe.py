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
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from dcnprobe import environment, glibc
from dcnprobe.analysis import DEFAULT_THRESHOLD
from dcnprobe.analysis.stats import percentile
from dcnprobe.attach.contract import ON_SLOWDOWN, AttachConfig
from dcnprobe.devices import backend_for
from dcnprobe.gcwatch import GcWatch
from dcnprobe.hooks import PHASES, ProbeListener
from dcnprobe.live.early_warning import EarlyWarning, SlowdownStop
from dcnprobe.processes import ProcessReader, own_faults
from dcnprobe.records import SCHEMA_VERSION, RunWriter
from dcnprobe.sampler import DEFAULT_INTERVAL, DEFAULT_USS_EVERY, MemorySampler
from dcnprobe.stall import (
    DEFAULT_STALL_FACTOR,
    DEFAULT_STALL_FLOOR_S,
    STALL_EXIT_CODE,
    StallWatchdog,
    capture_stacks,
    kill_processes,
)
from dcnprobe.timers import PhaseTimer

T = TypeVar("T")


class Probe:
    def __init__(
        self,
        out_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        sync: str = "batch",
        sample_interval: float = DEFAULT_INTERVAL,
        uss_every: int = DEFAULT_USS_EVERY,
        stall_factor: float = DEFAULT_STALL_FACTOR,
        stall_floor_s: float = DEFAULT_STALL_FLOOR_S,
        on_stall: str = "exit",
        live_tensors: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        sync_fn: Callable[[], None] | None = None,
        listeners: Iterable[ProbeListener] = (),
        on_slowdown: str | None = "warn",
        slowdown_threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if on_stall not in ("exit", "record"):
            raise ValueError("on_stall must be 'exit' or 'record'")
        if on_slowdown not in (*ON_SLOWDOWN, None):
            raise ValueError(f"on_slowdown must be one of {', '.join(ON_SLOWDOWN)} or None")
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        backend = backend_for(self.device)
        self.timer = PhaseTimer(clock=clock, sync=sync_fn or backend.synchronize, mode=sync)
        self.writer: RunWriter | None = None
        self.gc = GcWatch()
        self.reader = ProcessReader()
        self.sampler = MemorySampler(
            self._emit_sample, interval=sample_interval, uss_every=uss_every, device_memory=backend.memory,
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
        # Live early warning (dcnprobe.live.early_warning): None switches it off.
        self.on_slowdown, self.slowdown_threshold = on_slowdown, slowdown_threshold
        self._stopped_slow: str | None = None  # why the early warning ended the run
        # Started by a launcher (dcnprobe run, a trial, profile-epoch): its config wins, so
        # that a script using this API records where the launcher looks, with its options.
        self.config = AttachConfig.from_env()
        if self.config is not None:
            self._configure(self.config)

    def add_listener(self, listener: ProbeListener) -> None:
        self.listeners.append(listener)

    def _configure(self, config: AttachConfig) -> None:
        self.out_dir = Path(config.run_dir)
        if config.stall_after is not None:
            self.watchdog.floor_s = config.stall_after
        self.on_slowdown = config.on_slowdown
        if config.sample_interval is not None:
            self.sampler.interval = config.sample_interval
        # A script using this API is left to it: the attach agent in this process (if
        # any) stops measuring, so that nothing is counted twice.
        from dcnprobe.attach.active import api_probe_created

        api_probe_created(self)
        if config.profile:
            from dcnprobe.profiling.session import EpochProfiler

            self.add_listener(EpochProfiler.from_config(config.profile))

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
        if self.on_slowdown is not None:
            self.add_listener(EarlyWarning(self.on_slowdown, self.out_dir, self._write_event,
                                           threshold=self.slowdown_threshold, clock=self.clock))
        for listener in self.listeners:
            listener.on_start(header)
        self.gc.start()
        self._faults = own_faults()
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
        if self._stopped_slow is not None:  # whatever the loop made of the SlowdownStop it saw
            self._write_footer("slow", reason=self._stopped_slow)
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
        non-persistent workers are started each epoch. A launcher's max_batches ends
        the pass early, as it does for a script with the probe attached.
        """
        limit = self.config.max_batches if self.config is not None else None
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
        self.timer.sync = backend.synchronize
        self.sampler.device_memory = backend.memory

    def event(self, kind: str, **fields: Any) -> None:
        """A record of another kind than the probe's own (the attach's notes), stamped with t."""
        self._write_event(kind, fields)

    def phase(self, name: str) -> _Phase:
        return _Phase(self.timer, name)

    def end_batch(self, **fields: Any) -> None:
        times = self.timer.end()
        # The batch's end, read before the bookkeeping below (a /proc read can take ms): a
        # trace lays the batch out over [t - total, t], on the same clock as a profiler's.
        now = self._now()
        minflt, majflt = own_faults()
        gc_seconds, gc_gen2 = self.gc.total_seconds(), self.gc.count[2]
        record = {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "t": now,
            **times,
            "rss": self.reader.rss(self.reader.pid),
            # At batch end the step's activations are freed: what glibc still hands out is
            # what the loop keeps. A steadier measure of retention than a mid-step sample.
            "in_use": self._in_use(),
            "py_blocks": sys.getallocatedblocks(),
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
        except SlowdownStop as stop:
            self._stopped_slow = stop.reason
            raise

    # -- internals ---------------------------------------------------------------

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

    def _write_event(self, kind: str, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(kind, {"t": self._now(), **record})

    def _write_footer(self, status: str, **fields: Any) -> None:
        """The one place a footer is written (a normal end, a slow stop, a stall)."""
        if self.writer is not None:
            self.writer.write_footer(status, t=self._now(), epochs=self.epoch, steps=self.step, **fields)

    def _emit_sample(self, sample: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write("memory", sample)

    def _stalled(self, waited: float, median: float | None) -> None:
        workers = self.reader.worker_pids()
        stacks = capture_stacks(self.out_dir / "stacks", self.reader.pid, workers)
        if self.writer is not None:
            self.writer.write("stall", {
                "t": self._now(), "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "waited_s": waited, "median_batch_s": median, "workers": workers, "stacks": stacks,
            })
        print(f"dcnprobe: warning: stalled: no batch finished for {waited:.0f} s in epoch {self.epoch} "
              f"(batch {self.batch}); stacks of the main process and {len(workers)} worker(s) in "
              f"{self.out_dir / 'stacks'}" + ("; ending the run" if self.on_stall == "exit" else ""),
              file=sys.stderr, flush=True)
        if self.on_stall == "exit":
            self._write_footer("stalled", reason=f"no batch for {waited:.0f} s")
            kill_processes(workers)
            os._exit(STALL_EXIT_CODE)


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
