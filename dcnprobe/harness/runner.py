"""Run one trial, a command under one settings object, in a fresh process and watch it.

Isolation: the command in a new process and session with the probe attached
(dcnprobe.harness.launch). The harness reads the trial's run record as it grows and
stops the trial when:
  - its slowdown is statistically clear (EarlyStop);
  - it stops producing batches, even if a hang holds the trial's GIL so that the trial's
    own watchdog cannot run: the harness dumps the stacks from outside;
  - it exceeds its wall-time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dcnprobe.analysis import DEFAULT_THRESHOLD
from dcnprobe.analysis import thresholds as th
from dcnprobe.contract import Exit
from dcnprobe.errors import UsageError
from dcnprobe.harness import launch
from dcnprobe.harness.early_stop import EarlyStop
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.harness.trial_records import TrialRecords, analyze_trial
from dcnprobe.stall import DEFAULT_STALL_FLOOR_S, capture_stacks

DEFAULT_BUDGET_S = 1800.0
DEFAULT_STALL_AFTER_S = DEFAULT_STALL_FLOOR_S  # what `train --stall-after` gets from a trial
RESULT_FILE = "result.json"
LOG_FILE = "train.log"
STOPPED_HEALTHY = "stopped-healthy"  # run_trial's own mark; the result's status is the analysis's
STOPPED_AS_HEALTHY = "stopped as healthy"  # how a result's `stopped` begins then
CONTENDED = "contended"
# Epoch 1 ran clearly slower than the epoch compared, by more than the slowdown threshold
# the other way (the ratio's whole interval below 1/threshold): warm-up, outside load
# that came and went within the epochs, a cold cache. Epoch 1 is then no baseline, and a
# slowdown after it could hide: "not slow" would be a guess, so the trial judges nothing.
UNSTEADY = "unsteady"
UNDECIDED = (CONTENDED, UNSTEADY)  # ran, but the timing says nothing about the settings
FIRST_BATCH_S = 600.0  # validation, checkpoints and worker start-up between passes


@dataclass
class TrialResult:
    key: str
    spec: dict[str, Any]
    status: str
    epoch_s: list[float] = field(default_factory=list)  # training seconds per epoch (the last may be partial)
    ratio: float | None = None
    ratio_ci: list[float] | None = None
    verdict: str = ""
    cause: str | None = None
    causes: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # why the harness stopped it early
    elapsed_s: float = 0.0
    exit_code: int | None = None
    error: str | None = None
    run_dir: str = ""
    ran: dict[str, Any] = field(default_factory=dict)  # the settings in the run's own header: what ran
    outside_load: dict[str, float] = field(default_factory=dict)  # epoch -> share of all cores used by others
    finished_at: str = ""  # when the trial ended (local time), so a cached verdict can say how old it is

    @property
    def settings(self) -> dict[str, Any]:
        """The settings the trial asked for (only those given to a user's command)."""
        return self.spec["settings"]

    @property
    def failing(self) -> bool:
        """Reproduces the problem: slower later epochs, or a hang."""
        return self.status in ("slow", "stalled")

    @property
    def contended(self) -> bool:
        """Other work on the machine changed between the epochs compared, or explains the
        ratio: the timing says nothing about the settings either way."""
        return self.status == CONTENDED

    @property
    def stopped_healthy(self) -> bool:
        """Ended by the harness once clearly healthy, before its last epoch was done."""
        return (self.stopped or "").startswith(STOPPED_AS_HEALTHY)

    @property
    def undecided(self) -> bool:
        """Contended, or epoch 1 was no baseline: run it again, never cache it as a verdict."""
        return self.status in UNDECIDED

    @property
    def busy(self) -> bool:
        """Other programs used a quarter of the machine or more in an epoch of this trial:
        a healthy verdict then says little (th.BUSY_MACHINE)."""
        return max(self.outside_load.values(), default=0.0) >= th.BUSY_MACHINE

    def load_text(self) -> str:
        if not self.outside_load:
            return ""
        return "outside CPU load " + ", ".join(f"epoch {e} {v:.0%}" for e, v in sorted(self.outside_load.items()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def report_json(self) -> dict[str, Any]:
        """The trial as bisect.json and sweep.json show it: what ran (from the run's own
        header), and the request where it differs."""
        ran = self.ran or self.settings
        requested = {k: v for k, v in self.settings.items() if k in ran and ran[k] != v}
        return {
            "settings": ran,
            **({"requested": requested} if requested else {}),
            "command": self.spec.get("command"),
            "status": self.status,
            "epoch_s": self.epoch_s,
            "ratio": self.ratio,
            "ratio_ci": self.ratio_ci,
            "cause": self.cause,
            "verdict": self.verdict,
            "stopped": self.stopped,
            "elapsed_s": self.elapsed_s,
            "replicate": self.spec.get("replicate", 0),
            "outside_load": self.outside_load,
            "finished_at": self.finished_at,
            "key": self.key,
            "run_dir": self.run_dir,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        return cls(**data)


@dataclass
class Progress:
    """What a running trial has done so far, for progress lines."""

    epoch: int = 0
    batch: int = 0
    batches_per_epoch: int | None = None
    elapsed_s: float = 0.0
    ratio: float | None = None


def run_trial(
    spec: TrialSpec,
    out: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float = DEFAULT_BUDGET_S,
    stall_after_s: float = DEFAULT_STALL_AFTER_S,
    on_progress: Callable[[Progress], None] | None = None,
    poll_s: float = 0.25,
) -> TrialResult:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    argv, config = spec.process(out, stall_after_s=stall_after_s)
    log = open(out / LOG_FILE, "w")  # noqa: SIM115 - closed below, after the process ends
    try:
        proc = launch.start(argv, config, output=log)
    except BaseException:
        log.close()
        raise
    # One record, or one per rank of a distributed command, each with its own early stop.
    tail = stopper = TrialRecords(out, lambda: EarlyStop(
        threshold, batches_per_epoch=spec.max_batches, healthy_in=spec.epochs if spec.stop_when_healthy else None))
    progress = Progress(batches_per_epoch=spec.max_batches)
    stopped: str | None = None
    status: str | None = None
    last_record_at = time.monotonic()
    between_passes = True  # before the first batch, or between an epoch's loop and the next
    # Longer than the trial's own watchdog, so that one gets the first word (it can dump
    # stacks from inside); the harness only acts when the trial cannot, e.g. its GIL is held.
    harness_stall_s = max(3 * stall_after_s, 60.0)
    try:
        while proc.poll() is None:
            for record in tail.read():
                last_record_at = time.monotonic()
                kind = record.get("type")
                if kind == "batch":
                    between_passes = False
                    progress.epoch, progress.batch = int(record["epoch"]), int(record["batch"]) + 1
                elif kind in ("loop_end", "epoch"):
                    between_passes = True
                elif record.get("type") == "header":
                    progress.batches_per_epoch = record.get("batches_per_epoch") or progress.batches_per_epoch
                    stopper.batches_per_epoch = progress.batches_per_epoch
            reason = stopper.decide()
            healthy = None if reason else stopper.decide_healthy()
            now = time.monotonic()
            if reason:
                stopped, status = f"stopped as slow: {reason}", "slow"
            elif healthy:
                stopped, status = f"{STOPPED_AS_HEALTHY}: {healthy}", STOPPED_HEALTHY
            elif now - started > budget_s:
                stopped, status = f"stopped at the {budget_s:.0f} s budget", "timeout"
            elif tail.started and now - last_record_at > (FIRST_BATCH_S if between_passes else harness_stall_s):
                _dump_from_outside(proc.pid, out)
                stopped, status = f"no batch for {now - last_record_at:.0f} s; stacks dumped by the harness", "stalled"
            if stopped:
                kill_trial(proc)
                break
            progress.elapsed_s = now - started
            progress.ratio = stopper.last_ratio[0] if stopper.last_ratio else None
            if on_progress:
                on_progress(progress)
            time.sleep(poll_s)
    except BaseException:
        kill_trial(proc)  # an interrupted harness never leaves a trial behind
        raise
    finally:
        proc.wait()
        log.close()
    return _result(spec, out, proc.returncode, status, stopped, time.monotonic() - started, threshold)


kill_trial = launch.kill


def _dump_from_outside(pid: int, out: Path) -> None:
    try:
        workers = [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        workers = []
    capture_stacks(out / "stacks", pid, workers)


def _result(spec: TrialSpec, out: Path, code: int | None, status: str | None, stopped: str | None,
            elapsed: float, threshold: float) -> TrialResult:
    # A trial stopped as healthy was killed: its verdict is the analysis's, not its exit code's.
    stopped_healthy = status == STOPPED_HEALTHY
    status = None if stopped_healthy else status
    result = TrialResult(key=spec.key(), spec=spec.describe(), status=status or "ok", stopped=stopped,
                         elapsed_s=elapsed, exit_code=code, run_dir=str(out),
                         finished_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    try:
        analysis, label = analyze_trial(out, threshold)  # a distributed trial: its slowest rank's
    except UsageError as exc:  # no record at all: the trial died before its first line
        analysis, label = None, ""
        result.error = str(exc)
    if analysis is not None:
        s = analysis.signals
        result.ran = dict(analysis.run.settings)
        result.ratio = s.timing.ratio
        result.ratio_ci = list(s.timing.ratio_ci) if s.timing.ratio_ci else None
        result.verdict = label + analysis.verdict
        result.cause = analysis.top_cause
        result.causes = [c.to_dict() for c in analysis.causes]
        result.epoch_s = _epoch_seconds(analysis)
        result.outside_load = {str(e): round(v, 3) for e, v in s.contention.outside_load.items()}
        if status is None:
            result.status = "slow" if s.slowdown else "ok"
        if analysis.run.status == "stalled":
            result.status = "stalled"
        elif s.contention.contended and result.status in ("ok", "slow") and not s.slowdown:
            # Slow or healthy, the timing tracked someone else's load: not a verdict on the
            # settings (a slowdown beyond what the load explains keeps its verdict).
            result.status = CONTENDED
        elif stopped_healthy and result.busy:
            result.status = CONTENDED
            result.verdict += (f" Stopped early as healthy on a busy machine ({result.load_text()}): other "
                               "programs' load can hide a slowdown that builds up, so this is no verdict; it runs "
                               "again to its end.")
        elif result.status == "ok" and result.ratio_ci and result.ratio_ci[1] * threshold < 1:
            result.status = UNSTEADY
            result.verdict += (f" Epoch 1 ran clearly slower than the epoch compared (beyond 1/{threshold:g}), so it "
                               "is no baseline: a slowdown after it could hide.")
    if status is None and code not in (0, None) and not stopped_healthy:
        if code == Exit.STALLED:
            result.status = "stalled"
        elif code == Exit.SLOW:  # the run's own probe stopped it as slow (on_slowdown=stop)
            result.status = "slow"
        else:  # the trial's own last words say more than a missing record
            result.status = "invalid" if code == 2 else "crashed"
            result.error = _last_line(out / LOG_FILE) or result.error
    return result


def _epoch_seconds(analysis) -> list[float]:
    batches = analysis.run.batches
    if batches.empty:
        return []
    return [float(v) for v in batches.groupby("epoch")["total"].sum().to_list()]


def _last_line(path: Path) -> str | None:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None

