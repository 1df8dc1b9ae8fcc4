"""torch.profiler for a few batches of one epoch, on a wait / warm-up / active schedule:
a Chrome trace (opens in Perfetto or chrome://tracing) and an operator table. The
probe's phases appear in the trace under their own names (record_function labels)."""

from __future__ import annotations

from pathlib import Path

import torch


class TorchCapture:
    def __init__(self, wait: int = 2, warmup: int = 2, active: int = 5) -> None:
        self.wait, self.warmup, self.active = wait, warmup, active
        self._profiler: torch.profiler.profile | None = None
        self._base: Path | None = None
        self._finished: torch.profiler.profile | None = None
        self.operators: dict[str, float] = {}  # operator -> self CPU microseconds per active step
        self.files: dict[str, Path] = {}

    def start(self, base: Path) -> None:
        self._base = base
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        schedule = torch.profiler.schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1)
        self._profiler = torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=self._ready)
        self._profiler.__enter__()

    def step(self) -> None:
        if self._profiler is not None:
            self._profiler.step()

    def stop(self) -> None:
        """End profiling and write the files: called after the epoch's last batch, so the
        export's own work lands in no batch and no other profiler's record."""
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None
        if self._finished is not None:
            self._export(self._finished)
            self._finished = None

    def _ready(self, profiler: torch.profiler.profile) -> None:
        self._finished = profiler  # the active window is over; export at stop()

    def _export(self, profiler: torch.profiler.profile) -> None:
        trace = Path(f"{self._base}.trace.json")
        table = Path(f"{self._base}.operators.txt")
        profiler.export_chrome_trace(str(trace))
        averages = profiler.key_averages()
        table.write_text(averages.table(sort_by="self_cpu_time_total", row_limit=40))
        self.operators = {event.key: event.self_cpu_time_total / self.active for event in averages}
        self.files = {"trace": trace, "operators": table}
