"""The probe's early warning: a listener that says, inside the training process, as soon as
a later epoch is clearly slower than epoch 1 (dcnprobe.slowdown's statistics, the same
the harness stops trials with), and then acts:

    warn     one line on stderr and a `warning` record; again only if the ratio doubles
    stop     the same, then the run ends: footer status `slow`, exit code SLOWDOWN_EXIT_CODE
    profile  the same, then py-spy records the slow epoch for a bounded time, against a short
             capture taken in epoch 1, and DIR/profile.md compares the two

The cause: the line names the phase that grew (from running sums, free) and, once
dcnprobe.analysis has read the record so far in a helper thread, the likely cause and its
fix. The training thread never waits for the analysis under `warn` or `profile`; under
`stop` it waits at most ANALYSIS_WAIT_S, since the run ends anyway.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dcnprobe.attach.contract import ON_SLOWDOWN
from dcnprobe.distributed.layout import rank_dir
from dcnprobe.hooks import COLLECTIVE, ProbeListener
from dcnprobe.records import WARNING
from dcnprobe.slowdown import Evidence, SlowdownMonitor

SLOWDOWN_EXIT_CODE = 5  # the probe ended the run as slow; 2 is bad input, 3 a stall, 4 a bisect that could not measure
REWARN_FACTOR = 2.0  # warn again only once the ratio is clearly above this multiple of the last
ANALYSIS_WAIT_S = 20.0  # under `stop`, the longest the ending run waits for the cause
FINISH_WAIT_S = 10.0  # at the end of a run, the longest it waits for a warning or profile still being written
BASELINE_CAPTURE_S = 10.0  # py-spy in epoch 1: enough samples to compare shares, little of the epoch
PROFILE_CAPTURE_S = 30.0  # py-spy once slow: the slow epoch, bounded
PROFILES_DIR = "profiles"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SlowdownStop(SystemExit):
    """Ends the run from the training thread, as a clean exit with SLOWDOWN_EXIT_CODE:
    `finally` blocks run, no traceback is printed, and the probe writes status `slow`."""

    def __init__(self, reason: str) -> None:
        super().__init__(SLOWDOWN_EXIT_CODE)
        self.reason = reason


class EarlyWarning(ProbeListener):
    def __init__(self, action: str, run_dir: Path, write: Callable[[str, dict[str, Any]], None], *,
                 threshold: float, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] = _stderr, analyze: bool = True,
                 baseline_capture_s: float = BASELINE_CAPTURE_S, profile_capture_s: float = PROFILE_CAPTURE_S) -> None:
        if action not in ON_SLOWDOWN:
            raise ValueError(f"on_slowdown must be one of {', '.join(ON_SLOWDOWN)}, not {action!r}")
        self.action, self.run_dir, self.write, self.emit = action, Path(run_dir), write, emit
        self.threshold, self.clock, self.analyze = threshold, clock, analyze
        self.monitor = SlowdownMonitor(threshold, clock=clock)
        self.rank: int | None = None  # a rank of a distributed run: its warnings name it
        self.warnings: list[dict[str, Any]] = []
        self._pending: list[threading.Thread] = []  # warnings waiting for their cause
        self._profiler = LiveProfiler(self.run_dir, clock, emit, baseline_capture_s, profile_capture_s) \
            if action == "profile" else None

    # -- listener ------------------------------------------------------------------------

    def on_start(self, header: Mapping[str, Any]) -> None:
        self.monitor.batches_per_epoch = header.get("batches_per_epoch")
        self.rank = header.get("rank")

    def on_batch(self, record: Mapping[str, Any]) -> None:
        epoch = record["epoch"]
        self.monitor.add(epoch, record["total"], record)
        if self._profiler:
            self._profiler.on_batch(epoch, record["batch"])
        if epoch < 2:
            return
        evidence = self.monitor.check()
        if evidence is not None:
            self._slow(evidence, int(record["batch"]) + 1)

    def on_epoch_end(self, epoch: int) -> None:
        if self._profiler:
            self._profiler.on_epoch_end(epoch)

    def on_finish(self, status: str) -> None:
        deadline = self.clock() + FINISH_WAIT_S
        for thread in self._pending:
            thread.join(max(0.0, deadline - self.clock()))
        if self._profiler:
            self._profiler.finish(self.run_dir)

    # -- acting ---------------------------------------------------------------------------

    def _slow(self, evidence: Evidence, batch: int) -> None:
        # The next warning needs a ratio clearly above twice this one, judged the same way.
        self.monitor.threshold = REWARN_FACTOR * max(evidence.ratio, self.threshold)
        self.monitor.time_factor *= REWARN_FACTOR
        growth = self.monitor.phase_growth(evidence.epoch)
        grew, grew_s = next(iter(growth.items()), (None, 0.0))
        warning = {
            "epoch": evidence.epoch, "batch": batch, "kind": "slowdown", "statistic": evidence.statistic,
            "ratio": evidence.ratio, "ratio_ci": [evidence.low, evidence.high] if evidence.low is not None else None,
            "threshold": self.threshold, "grew": grew if grew_s > 0 else None, "grew_s": grew_s,
            "cause": None, "advice": None, "action": self.action,
        }
        if self.rank is not None:
            warning["rank"] = self.rank
        if self._profiler:
            self._profiler.slow(evidence.epoch)
        # Time waiting in collectives is another rank's doing (or the communication's):
        # this rank's own record has no cause of it to find.
        if not self.analyze or warning["grew"] == COLLECTIVE:
            self._publish(warning, evidence)
        else:
            thread = threading.Thread(target=self._explain_and_publish, args=(warning, evidence),
                                      name="dcnprobe-early-warning", daemon=True)
            thread.start()
            self._pending.append(thread)
            if self.action == "stop":
                thread.join(ANALYSIS_WAIT_S)
        if self.action == "stop":
            raise SlowdownStop(evidence.describe())

    def _explain_and_publish(self, warning: dict[str, Any], evidence: Evidence) -> None:
        try:
            from dcnprobe.analysis import analyze_run

            analysis = analyze_run(self.run_dir)
            top = analysis.causes[0]
            if top.id != "none":
                warning["cause"], warning["advice"] = top.id, top.advice
        except Exception as exc:  # the warning matters more than its explanation
            warning["advice"] = f"(analysis failed: {type(exc).__name__}: {exc})"
        self._publish(warning, evidence)

    def _publish(self, warning: dict[str, Any], evidence: Evidence) -> None:
        warning["message"] = message(warning, evidence, self.run_dir)
        self.warnings.append(warning)
        self.write(WARNING, warning)
        self.emit(warning["message"])


def message(warning: Mapping[str, Any], evidence: Evidence, run_dir: Path) -> str:
    """The one line a person reads: how much slower, where the time went, why, what to do."""
    rank = warning.get("rank")
    parts = [f"dcnprobe: warning: {'' if rank is None else f'rank {rank}: '}{evidence.describe()}"]
    if warning.get("grew") == COLLECTIVE:
        parts.append(f"the extra time is waiting in collectives (+{warning['grew_s'] * 1000:.0f} ms per batch): "
                     "another rank is slower, or the communication itself")
    elif warning.get("grew"):
        parts.append(f"the extra time is in {warning['grew']} (+{warning['grew_s'] * 1000:.0f} ms per batch)")
    if warning.get("cause"):
        parts.append(f"likely cause: {warning['cause']}: {warning['advice']}")
    # A rank's record lives in RUN/rankN: the analysis reads every rank from RUN.
    in_ranks = rank is not None and rank_dir(run_dir.parent, rank) == run_dir
    parts.append(f"details: dcnprobe analyze {run_dir.parent if in_ranks else run_dir}")
    action = warning.get("action")
    if action == "stop":
        parts.append("stopping the run (on_slowdown=stop)")
    elif action == "profile":
        parts.append(f"profiling this epoch into {run_dir / 'profile.md'}")
    return "; ".join(parts)


class LiveProfiler:
    """py-spy for `on_slowdown=profile`: a short baseline in epoch 1 (after its warm-up, so
    that worker start-up is not what gets compared), then the slow epoch once found."""

    def __init__(self, run_dir: Path, clock: Callable[[], float], emit: Callable[[str], None],
                 baseline_s: float, target_s: float) -> None:
        self.out = Path(run_dir) / PROFILES_DIR
        self.clock, self.emit, self.baseline_s, self.target_s = clock, emit, baseline_s, target_s
        self.captures: dict[int, Any] = {}  # epoch -> BackgroundCapture
        self.windows: dict[int, dict[str, Any]] = {}  # epoch -> first/last batch and seconds captured
        self._running: tuple[int, float, float] | None = None  # (epoch, started, limit)
        self._target: int | None = None

    def on_batch(self, epoch: int, batch: int) -> None:
        if epoch == 1 and 1 not in self.captures and batch >= 10:
            self._start(1, self.baseline_s, batch + 1)
        if self._running is not None:
            running_epoch, started, limit = self._running
            self.windows[running_epoch]["last_batch"] = batch
            if self.clock() - started > limit:
                self._stop()

    def slow(self, epoch: int) -> None:
        if self._target is None and 1 in self.captures:
            self._target = epoch
            if self._running is not None:
                self._stop()
            self._start(epoch, self.target_s, None)

    def on_epoch_end(self, epoch: int) -> None:
        if self._running is not None and self._running[0] == epoch:
            self._stop()

    def _start(self, epoch: int, limit: float, first_batch: int | None) -> None:
        from dcnprobe.live.capture import BackgroundCapture

        self.out.mkdir(parents=True, exist_ok=True)
        self.captures[epoch] = BackgroundCapture(self.out / f"epoch{epoch}-pyspy.collapsed.txt")
        self.windows[epoch] = {"first_batch": first_batch, "last_batch": None, "started": self.clock()}
        self._running = (epoch, self.clock(), limit)

    def _stop(self) -> None:
        if self._running is None:
            return
        epoch, started, _ = self._running
        self.windows[epoch]["seconds"] = self.clock() - started
        self.captures[epoch].stop()
        self._running = None

    def finish(self, run_dir: Path) -> None:
        """Write DIR/profile.md, epoch target against epoch 1, once both captures are in."""
        self._stop()
        if self._target is None:
            return
        files = {epoch: capture.wait(FINISH_WAIT_S + 50) for epoch, capture in self.captures.items()}
        (self.out / "live.json").write_text(json.dumps({"windows": self.windows,
                                                        "files": {e: str(p) for e, p in files.items()}}, indent=2))
        errors = [c.error for c in self.captures.values() if c.error]
        if errors or not files.get(1) or not files.get(self._target):
            self.emit(f"dcnprobe: note: no profile written: {errors[0] if errors else 'py-spy wrote no samples'}")
            return
        from dcnprobe.profiling.report import build
        from dcnprobe.profiling.session import Profiles
        from dcnprobe.records import read_run

        profiles = Profiles({}, {1: {"pyspy": files[1]}, self._target: {"pyspy": files[self._target]}})
        path = build(profiles, read_run(run_dir), Path(run_dir), self._target, 1)
        self.emit(f"dcnprobe: profile of the slow epoch {self._target} against epoch 1: {path}")
