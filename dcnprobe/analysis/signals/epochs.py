"""Per-epoch signals: batch times after warm-up, phases, GC share, loader start, bursts,
and what the background samples say about each epoch (the run's own CPU, threads, kernel
share, switches, descriptors, clock, and other processes' load)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.analysis.signals.steady import SteadyBatches, epoch_groups
from dcnprobe.analysis.stats import Bursts, periodic_bursts
from dcnprobe.hooks import DATA_WAIT, PHASES
from dcnprobe.machine_load import outside_share
from dcnprobe.ratios import Summary, summarize
from dcnprobe.runs import Run

TIMED = (DATA_WAIT, *PHASES, "collective", "other")  # what a batch's time is split into
COMPUTE = ("forward", "backward", "optimizer")


@dataclass(frozen=True)
class SampledEpoch:
    """An epoch as the background samples saw it (None where the records lack a figure)."""

    cpu_seconds: float | None = None  # the run's own CPU time (main + workers)
    utilisation: float | None = None  # the run's own CPU over wall time and all cores
    system_share: float | None = None  # kernel share of the run's CPU time
    involuntary_per_s: float | None = None  # involuntary context switches per second, main + workers
    threads: int | None = None  # threads alive, main + workers (median sample of the epoch)
    open_fds: int | None = None  # open file descriptors, main + workers (median sample of the epoch)
    cpu_freq_mhz: float | None = None  # median CPU clock
    outside_load: float | None = None  # share of all cores busy with other processes' work


@dataclass(frozen=True)
class EpochSignal:
    epoch: int
    batches: int
    times: Summary  # steady-state batch totals
    phases: dict[str, float]  # median seconds per phase
    gc_share: float  # GC seconds over batch seconds
    first_wait_s: float | None  # data_wait of the epoch's first batch
    between_epochs_s: float | None  # previous epoch's last batch end to this epoch's first batch start
    bursts: Bursts | None  # slow batches in this epoch and their period
    worker_pids: tuple[int, ...] = ()
    worker_cpu_per_batch: float | None = None
    sampled: SampledEpoch = field(default_factory=SampledEpoch)

    # The sampled figures read as the epoch's own: rules say `epoch.threads`.
    @property
    def threads(self) -> int | None:
        return self.sampled.threads

    @property
    def system_share(self) -> float | None:
        return self.sampled.system_share

    @property
    def involuntary_per_s(self) -> float | None:
        return self.sampled.involuntary_per_s

    @property
    def utilisation(self) -> float | None:
        return self.sampled.utilisation

    @property
    def outside_load(self) -> float | None:
        return self.sampled.outside_load

    @property
    def open_fds(self) -> int | None:
        return self.sampled.open_fds

    @property
    def cpu_freq_mhz(self) -> float | None:
        return self.sampled.cpu_freq_mhz


def epoch_signals(run: Run, batches: pd.DataFrame, steady: SteadyBatches) -> tuple[EpochSignal, ...]:
    workers = _worker_epochs(run, batches)
    sampled = _sampled_epochs(run)
    result = []
    previous_end = None
    by_epoch = epoch_groups(batches)
    for epoch, group in steady.epochs():
        everything = by_epoch[epoch]
        first = everything.iloc[0]
        between = None
        if previous_end is not None and "t" in everything:
            # Validation, checkpoints, loop_end bookkeeping and the next iterator's set-up
            # before its timer starts: the cost of an epoch's end and the next one's start.
            between = max(0.0, float(first["t"] - first["total"]) - previous_end)
        previous_end = float(everything.iloc[-1]["t"]) if "t" in everything else None
        pids, cpu_per_batch = workers.get(epoch, ((), None))
        result.append(EpochSignal(
            epoch=epoch,
            batches=len(everything),
            times=summarize(group["total"].to_numpy()),
            phases={p: float(group[p].median()) for p in TIMED if p in group},
            gc_share=float(group["gc_s"].sum() / group["total"].sum()) if "gc_s" in group else 0.0,
            first_wait_s=float(first[DATA_WAIT]) if DATA_WAIT in first else None,
            between_epochs_s=between,
            bursts=periodic_bursts(group["total"].to_numpy(float), group["batch"].to_numpy()),
            worker_pids=pids,
            worker_cpu_per_batch=cpu_per_batch,
            sampled=sampled.get(epoch, SampledEpoch()),
        ))
    return tuple(result)


def _worker_epochs(run: Run, batches: pd.DataFrame) -> dict[int, tuple[tuple[int, ...], float | None]]:
    """Per epoch: the DataLoader workers seen, and their CPU seconds per batch."""
    workers = run.workers
    if workers.empty or "epoch" not in workers or batches.empty:
        return {}
    counts = batches.groupby("epoch").size()
    result = {}
    for epoch, rows in workers.groupby("epoch"):
        pids = tuple(sorted(int(p) for p in rows["pid"].unique()))
        n = int(counts.get(epoch, 0))
        per_batch = None
        if n and "cpu_user" in rows:
            cpu = rows.assign(cpu=rows["cpu_user"] + rows["cpu_system"]).groupby("pid")["cpu"]
            per_batch = float((cpu.max() - cpu.min()).sum()) / n
        result[int(epoch)] = (pids, per_batch)
    return result


def _sampled_epochs(run: Run) -> dict[int, SampledEpoch]:
    """Per-epoch CPU, threads, switches, descriptors, clock and outside load from the
    background samples. Each interval between two samples belongs to the epoch of the
    later one, so the epochs' intervals add up to the whole run."""
    samples = run.samples
    if samples.empty or "t" not in samples or "main_cpu_user" not in samples:
        return {}
    cores = run.header.get("environment", {}).get("cpu_count") or 1
    workers_at: dict[float, list[dict[str, Any]]] = {}
    for worker in _rows(run.workers, _WORKER_FIELDS):
        workers_at.setdefault(worker["t"], []).append(worker)
    totals: dict[int, dict[str, Any]] = {}
    previous = None
    previous_workers: dict[int, dict[str, Any]] = {}
    for sample in _rows(samples.sort_values("t"), _SAMPLE_FIELDS):
        workers = {int(w["pid"]): w for w in workers_at.get(sample["t"], [])}
        epoch = sample.get("epoch")
        if previous is not None and present(epoch):
            acc = totals.setdefault(int(epoch), {"wall": 0.0, "user": 0.0, "system": 0.0, "involuntary": 0.0,
                                                 "busy": 0.0, "busy_own": 0.0, "busy_wall": 0.0,
                                                 "threads": [], "fds": [], "freq": []})
            wall = float(sample["t"] - previous["t"])
            user = delta(sample, previous, "main_cpu_user")
            system = delta(sample, previous, "main_cpu_system")
            involuntary = delta(sample, previous, "main_ctx_involuntary")
            for pid, w in workers.items():
                before = previous_workers.get(pid, {})  # a worker born since: all its CPU is new
                user += delta(w, before, "cpu_user")
                system += delta(w, before, "cpu_system")
                involuntary += delta(w, before, "ctx_involuntary")
            # Workers that ended since the last sample: their whole life's CPU arrives in the
            # main process's reaped-children figure, of which the part already counted (up to
            # their last sample) is taken off. Not a clamp per interval: a worker seen gone
            # before it is reaped is made up in the next interval of the same epoch.
            reaped = delta(sample, previous, "main_cpu_children", missing=None)
            if reaped is not None:
                counted = sum(number(w.get("cpu_user")) + number(w.get("cpu_system"))
                              for pid, w in previous_workers.items() if pid not in workers)
                # The probe's own helpers were counted while they ran (helpers_cpu_s, below).
                user += reaped - counted - delta(sample, previous, "helpers_ended_cpu_s")
            user += delta(sample, previous, "helpers_cpu_s")
            acc["wall"] += wall
            acc["user"] += user
            acc["system"] += system
            acc["involuntary"] += involuntary
            busy = delta(sample, previous, "machine_busy_s", missing=None)
            if busy is not None:
                acc["busy"] += busy
                # A rank's siblings (the job's other ranks) are its own job's load, not outside.
                job = delta(sample, previous, "job_cpu_s") if present(previous.get("job_cpu_s")) else 0.0
                acc["busy_own"] += user + system + job
                acc["busy_wall"] += wall
            acc["threads"].append(number(sample.get("main_threads")) + sum(number(w.get("threads")) for w in workers.values()))
            if present(sample.get("main_fds")):
                acc["fds"].append(number(sample.get("main_fds")) + sum(number(w.get("fds")) for w in workers.values()))
            if present(sample.get("cpu_freq_mhz")):
                acc["freq"].append(float(sample["cpu_freq_mhz"]))
        previous, previous_workers = sample, workers
    result = {}
    for epoch, acc in totals.items():
        if acc["wall"] <= 0:
            continue
        cpu = acc["user"] + acc["system"]
        result[epoch] = SampledEpoch(
            cpu_seconds=cpu,
            utilisation=cpu / acc["wall"] / cores,
            system_share=acc["system"] / cpu if cpu > 0 else None,
            involuntary_per_s=acc["involuntary"] / acc["wall"],
            # The epoch's typical sample, not its largest: non-persistent workers overlap their
            # successors for a moment at an epoch's start (twice the threads and descriptors,
            # none of them kept).
            threads=int(np.median(acc["threads"])) if acc["threads"] else None,
            open_fds=int(np.median(acc["fds"])) if acc["fds"] else None,
            cpu_freq_mhz=float(np.median(acc["freq"])) if acc["freq"] else None,
            outside_load=outside_share(acc["busy"], acc["busy_own"], acc["busy_wall"], cores)
            if acc["busy_wall"] > 0 else None,
        )
    return result


# What _sampled_epochs reads of each sample and each worker's row.
_SAMPLE_FIELDS = ("t", "epoch", "main_cpu_user", "main_cpu_system", "main_ctx_involuntary", "main_cpu_children",
                  "helpers_cpu_s", "helpers_ended_cpu_s", "machine_busy_s", "job_cpu_s", "main_threads", "main_fds",
                  "cpu_freq_mhz")
_WORKER_FIELDS = ("t", "pid", "cpu_user", "cpu_system", "ctx_involuntary", "threads", "fds")


def _rows(table: pd.DataFrame, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The table's rows one at a time, as dicts of those of `fields` it has (Python values,
    as to_dict("records") gives them): not the whole table as dicts at once, which for the
    samples of a long run (and their workers) was tens of MB."""
    names = [name for name in fields if name in table]
    yield from (dict(zip(names, values)) for values in zip(*(table[name].tolist() for name in names)))


def present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def number(value: Any) -> float:
    return float(value) if present(value) else 0.0


def delta(now: dict[str, Any], before: dict[str, Any], key: str, missing: float | None = 0.0) -> float | None:
    if not present(now.get(key)):
        return missing
    if not present(before.get(key)):
        return float(now[key]) if missing is not None else None
    return max(0.0, float(now[key]) - float(before[key]))  # counters only rise; a reset is not negative work
