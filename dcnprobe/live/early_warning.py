"""The probe's early warning: a listener that says, inside the training process, as soon as
a later epoch is clearly slower than epoch 1 (dcnprobe.slowdown's statistics, the same
the harness stops trials with), and then acts:

    warn     one line on stderr and a `warning` record; again only if the ratio doubles
    stop     the same, then the run ends: footer status `slow`, exit code Exit.SLOW
    profile  the same, then py-spy records the slow epoch for a bounded time, against a short
             capture taken in epoch 1, and DIR/profile.md compares the two

The cause: the line names the phase that grew (from running sums, free) and, once the
analysis has read the record so far, the likely cause and its fix. The analysis runs in a
child process (`python -m dcnprobe.analysis RUN`), started from a helper thread, so that
the training process never loads it (nor pandas). The training thread never waits for it
under `warn` or `profile`; under `stop` it waits at most ANALYSIS_WAIT_S, since the run
ends anyway.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dcnprobe.contract import ENV, ON_SLOWDOWN, Exit
from dcnprobe.distributed.layout import rank_dir
from dcnprobe.executables import python_module
from dcnprobe.hooks import COLLECTIVE, ProbeListener, StopRun
from dcnprobe.processes import run_helper
from dcnprobe.records import WARNING
from dcnprobe.slowdown import Evidence, SlowdownMonitor

REWARN_FACTOR = 2.0  # warn again only once the ratio is clearly above this multiple of the last
ANALYSIS_WAIT_S = 20.0  # under `stop`, the longest the ending run waits for the cause
FINISH_WAIT_S = 10.0  # at the end of a run, the longest it waits for a warning or profile still being written
# Where the check runs. Under a probe, on its sampler thread after each memory sample
# (on_sample): the training thread only hands each batch over, and acts on what a check
# found at its next batch. Taken in the training thread, even in bulk every quarter
# second, the check cost 30-60 us a batch (cold code between a model's steps). A listener
# that no sampler calls (a test feeding records) checks in the training thread instead, at
# most every CHECK_INTERVAL_S of run time (the batches' `t`); a loop of 1 ms batches would
# otherwise pay for 100 checks a second. A warning comes at most a tick (or this) later.
CHECK_INTERVAL_S = 0.25
# Run time without a sample after which the checks come back to the training thread (a
# sampler that died, or a user's very long interval): the waiting batches are not left to
# pile up unjudged. The default interval stretches to 2 s at most.
SAMPLER_SILENT_S = 60.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SlowdownStop(StopRun):
    """Ends the run from the training thread, as a clean exit with Exit.SLOW:
    `finally` blocks run, no traceback is printed, and the probe writes status `slow`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status="slow", code=Exit.SLOW)


class EarlyWarning(ProbeListener):
    def __init__(self, action: str, run_dir: Path, write: Callable[[str, dict[str, Any]], None], *,
                 threshold: float, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] = _stderr, analyze: bool = True,
                 baseline_capture_s: float = 10.0, profile_capture_s: float = 30.0) -> None:
        if action not in ON_SLOWDOWN:
            raise ValueError(f"on_slowdown must be one of {', '.join(ON_SLOWDOWN)}, not {action!r}")
        self.action, self.run_dir, self.write, self.emit = action, Path(run_dir), write, emit
        self.threshold, self.clock, self.analyze = threshold, clock, analyze
        self.monitor = SlowdownMonitor(threshold, clock=clock)
        # Batch records the monitor has not yet taken: appended by the training thread, taken
        # by the sampler's (a deque's append and popleft are atomic: no lock, none lost).
        self._waiting: deque[Mapping[str, Any]] = deque()
        self._check_at = -math.inf  # the run time (a batch's t) of the next check
        # The run time of the latest sample heard: while one came within SAMPLER_SILENT_S,
        # the checks run on the sampler's thread.
        self._sampled_at = -math.inf
        # What a check on the sampler thread found, for the training thread to act on (a
        # warning, a profile, a stop all belong to it); no check runs until it has.
        self._found: tuple[Evidence, int] | None = None
        # The monitor, for one thread at a time: the sampler's first tick may come while the
        # training thread checks, or acts on a slowdown (a stop waits for its cause).
        self._monitoring = threading.Lock()
        self.rank: int | None = None  # a rank of a distributed run: its warnings name it
        self.warnings: list[dict[str, Any]] = []
        self._pending: list[threading.Thread] = []  # warnings waiting for their cause
        self._profiler = None
        if action == "profile":  # py-spy captures: loaded only when asked for
            from dcnprobe.profiling.live import LiveProfiler

            self._profiler = LiveProfiler(self.run_dir, clock, emit, baseline_capture_s, profile_capture_s,
                                          finish_wait_s=FINISH_WAIT_S)

    # -- listener ------------------------------------------------------------------------

    def on_start(self, header: Mapping[str, Any]) -> None:
        self.monitor.batches_per_epoch = header.get("batches_per_epoch")
        self.rank = header.get("rank")

    def on_batch(self, record: Mapping[str, Any]) -> None:
        # The training thread's whole cost at nearly every batch: the record waits for the
        # next check (the sampler's next tick, else CHECK_INTERVAL_S on), which takes the
        # waiting ones in bulk. Here the training thread acts on what a check found.
        self._waiting.append(record)
        if self._profiler:
            self._profiler.on_batch(record["epoch"], record["batch"])
        if self._found is not None:
            found = self._found
            try:
                self._slow(*found)
            finally:
                self._found = None  # after _slow has raised the bar for the next warning
        elif record["t"] - self._sampled_at > SAMPLER_SILENT_S and record["t"] >= self._check_at:
            # No sampler calls on_sample (or its ticks stopped coming): the check is here.
            self._check_at = record["t"] + CHECK_INTERVAL_S
            found = self._check(record["t"])
            if found is not None:
                self._slow(*found)

    def on_sample(self, sample: Mapping[str, Any]) -> None:
        if "t" not in sample:
            return
        self._sampled_at = sample["t"]
        if self._found is None:
            self._found = self._check(sample["t"])

    def _check(self, now: float) -> tuple[Evidence, int] | None:
        """Take the waiting batches (`now`: the run time); the evidence of a slowdown, and
        the batch to name."""
        waiting, monitor = self._waiting, self.monitor
        if not waiting:
            return None
        with self._monitoring:
            taken = [waiting.popleft() for _ in range(len(waiting))]
            latest = taken[-1]
            for record in taken:
                monitor.add(record["epoch"], record["total"], record, ended_ago=now - record["t"])
            if latest["epoch"] < 2:
                return None
            evidence = monitor.check()
        return None if evidence is None else (evidence, int(latest["batch"]) + 1)

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
        with self._monitoring:
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
            top = explain(self.run_dir, timeout=ANALYSIS_WAIT_S * 3)
            if top.get("cause") not in (None, "none"):
                warning["cause"], warning["advice"] = top["cause"], top.get("advice")
        except Exception as exc:  # the warning matters more than its explanation
            warning["advice"] = f"(analysis failed: {type(exc).__name__}: {exc})"
        self._publish(warning, evidence)

    def _publish(self, warning: dict[str, Any], evidence: Evidence) -> None:
        warning["message"] = message(warning, evidence, self.run_dir)
        self.warnings.append(warning)
        self.write(WARNING, warning)
        self.emit(warning["message"])


def explain(run_dir: Path, timeout: float) -> dict[str, Any]:
    """The record's top cause so far, from `python -m dcnprobe.analysis RUN` in a child
    process (not attached: it is not a run to measure)."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    done = run_helper([*python_module("dcnprobe.analysis"), str(run_dir)], timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1])
    return json.loads(done.stdout)


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
