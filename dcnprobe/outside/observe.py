"""`dcnprobe attach PID`: watch a training run that was started without dcnprobe, from
outside, for a window of time, and write what was seen as a run record.

During the window: a sample of every process of the run every `interval_s` (sampler.py),
a round of py-spy dumps of every Python process every few seconds (stacks.py), one py-spy
record of the whole window (profile.py) and, with `memory`, memray captures
(memray_window.py). A progress line every few seconds. Afterwards: the profile's summary,
a stall check, and the footer. The run itself is never paused, restarted or changed.

Nothing already measured is lost: every sample is flushed as it is taken, and Ctrl-C (or
SIGTERM) stops the helpers and writes an `interrupted` footer before leaving.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.errors import UsageError
from dcnprobe.outside import record as rec
from dcnprobe.outside import thresholds as th
from dcnprobe.outside.memray_window import MemrayWindow
from dcnprobe.outside.profile import RATE, WindowRecorder, shortened, summarise
from dcnprobe.outside.sampler import OutsideSampler
from dcnprobe.outside.signals import find_stall, interval_cpu
from dcnprobe.outside.stacks import StacksUnavailable, dump, py_spy, write_dump
from dcnprobe.outside.tree import HELPER, MAIN, WORKER, Target, Tree, find_target
from dcnprobe.profiling.flamegraph import parse_collapsed, to_svg
from dcnprobe.records import MEMORY, RUN_FILE, STALL, RunWriter

PROGRESS_EVERY_S = 5.0
DEFAULT_INTERVAL_S = (
    1.0  # the probe samples every 0.5 s from inside; from outside every read is a system call
)
MIN_DUMP_EVERY_S, MAX_DUMP_EVERY_S = 2.0, 10.0
MAX_USS_EVERY_S = 2.0


@dataclass(frozen=True)
class AttachSettings:
    pid: int
    out: Path
    window_s: float = 60.0
    interval_s: float = DEFAULT_INTERVAL_S
    stall_after_s: float = th.DEFAULT_STALL_AFTER_S
    memory: bool = False
    stacks: bool = True  # py-spy dumps and record; off, only /proc is read
    pyspy_rate: int = RATE
    dump_every_s: float | None = None  # default: a quarter of the window, 2-10 s

    @property
    def uss_interval(self) -> float:
        """Every 2 s at most (it costs the kernel a walk of the page tables), but at least
        MIN_POINTS readings of a short window."""
        return min(MAX_USS_EVERY_S, max(self.interval_s, self.window_s / (2 * th.MIN_POINTS)))

    @property
    def dump_interval(self) -> float:
        if self.dump_every_s is not None:
            return self.dump_every_s
        return min(MAX_DUMP_EVERY_S, max(MIN_DUMP_EVERY_S, self.window_s / 4))


@dataclass
class Observation:
    directory: Path
    target: Target
    elapsed_s: float
    ended_by: str  # "window", "exited" (the run ended first)
    stalled: bool
    notes: list[str] = field(default_factory=list)


class Observer:
    def __init__(
        self,
        settings: AttachSettings,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        target: Target | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.notes: list[str] = []
        self.samples: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- the whole attach ------------------------------------------------------------------

    def run(self) -> Observation:
        s = self.settings
        target = self._open()
        stacks = s.stacks and self._stacks_readable()
        memray = self._start_memray() if s.memory else None
        recorder = WindowRecorder(s.pyspy_rate)
        if stacks:
            try:
                recorder.start(target.main_pid, s.out / "pyspy" / "record.txt")
            except StacksUnavailable as exc:
                self._note(str(exc))
        started = self.clock()
        try:
            ended_by = self._window(started, stacks)
            elapsed = self.clock() - started
            stall = self._after_window(recorder, memray, elapsed)
        except BaseException:  # Ctrl-C, SIGTERM: keep what was measured, then leave
            self._stop.set()
            with contextlib.suppress(Exception):
                recorder.stop()
            observed = self.clock() - started
            self.writer.write_footer("interrupted", t=observed, observed_s=observed)
            raise
        self.writer.write_footer(
            "stalled" if stall else "ok",
            t=elapsed,
            observed_s=elapsed,
            ended_by=ended_by,
            epochs=None,
            steps=None,
        )
        return Observation(s.out, target, elapsed, ended_by, stall, self.notes)

    def _open(self) -> Target:
        """The run found, the record started (its header written)."""
        s = self.settings
        target = self.target = self.target or find_target(s.pid)
        if (s.out / RUN_FILE).exists():
            raise UsageError(
                f"{s.out} already holds a run record ({s.out / RUN_FILE}); "
                "choose another --out or remove it"
            )
        self.tree = Tree(target.main_pid)
        self.sampler = OutsideSampler(self.tree, clock=self.clock, uss_every_s=s.uss_interval)
        self.writer = RunWriter(s.out)
        header = rec.header(target, s.window_s, s.interval_s, self.sampler.uss_readable)
        header["outside"]["stall_after_s"] = s.stall_after_s
        self.writer.write("header", header)
        if not self.sampler.uss_readable:
            self._note(
                f"USS of process {target.main_pid} cannot be read (another user's process): "
                "memory is RSS, which counts pages shared with the parent"
            )
        return target

    def _window(self, started: float, stacks: bool) -> str:
        """Samples (and, with stacks, rounds of dumps in a thread) until the window ends or
        the run does; returns which."""
        dumper = None
        if stacks:
            dumper = threading.Thread(target=self._dump_rounds, name="dcnprobe-dumps", daemon=True)
            dumper.start()
        try:
            ended_by = self._sample_window(started)
        finally:
            self._stop.set()
            if dumper is not None:
                dumper.join()
        if dumper is not None and ended_by == "window":
            self._dump_round()  # the stacks at the window's end: what a stall is judged on
        return ended_by

    def _after_window(
        self, recorder: WindowRecorder, memray: MemrayWindow | None, elapsed: float
    ) -> bool:
        """The profile's summary, memray's captures, the notes and the stall check; whether
        the run was found stalled."""
        self._finish_profile(recorder)
        if memray is not None:
            self._finish_memray(memray)
        if self.notes:
            self.writer.write(rec.NOTES, {"t": elapsed, "lines": self.notes})
        stall = find_stall(self.samples, self.rounds, self.settings.stall_after_s)
        if stall is not None:
            self.writer.write(
                STALL,
                {
                    "t": elapsed,
                    "epoch": None,
                    "batch": None,
                    "step": None,
                    "seen_from": "outside",
                    "waited_s": stall.idle_s,
                    "median_batch_s": None,
                    "workers": [pid for pid, role in self.roles.items() if role == WORKER],
                    "waits_on": [{"pid": pid, "role": role} for pid, role, _ in stall.waited_on],
                    "stacks": stall.files,
                },
            )
        return stall is not None

    def _note(self, line: str) -> None:
        self.notes.append(line)
        self.say(f"dcnprobe: {line}")

    # -- samples ------------------------------------------------------------------------------

    def _sample_window(self, started: float) -> str:
        s = self.settings
        next_at, progress_at = started, started + PROGRESS_EVERY_S
        while True:
            now = self.clock()
            sample = self.sampler.sample()
            if sample is None:
                self.say(
                    f"dcnprobe: the run (PID {self.target.main_pid}) ended after {now - started:.1f} s of the window"
                )
                return "exited"
            with self._lock:
                self.samples.append(sample)
                self.roles.update({m.pid: m.role for m in self.sampler.members})
            self.writer.write(MEMORY, sample)
            if now >= progress_at:
                self.say(
                    progress_line(
                        self.samples, now - started, s.window_s, self.sampler.uss_readable
                    )
                )
                progress_at += PROGRESS_EVERY_S
            if now - started >= s.window_s:
                return "window"
            next_at += s.interval_s
            time.sleep(max(0.0, min(next_at, started + s.window_s) - self.clock()))

    # -- stacks --------------------------------------------------------------------------------

    def _stacks_readable(self) -> bool:
        try:
            py_spy()
            if dump(self.target.main_pid) is None and dump(self.target.main_pid) is None:
                self._note(
                    f"py-spy could not read the stacks of process {self.target.main_pid}: going on without stacks"
                )
                return False
        except StacksUnavailable as exc:
            self._note(str(exc))
            return False
        return True

    def _dump_rounds(self) -> None:
        while not self._stop.is_set():
            self._dump_round()
            self._stop.wait(self.settings.dump_interval)

    def _dump_round(self) -> None:
        number = len(self.rounds) + 1
        t = self.clock() - self.sampler.t0
        entries = []
        for member in self.tree.members():
            if not member.python or member.role == HELPER:
                continue
            try:
                result = dump(member.pid)
            except StacksUnavailable:
                continue  # this one process (another user's child, say): the others still count
            if result is None:
                continue
            name = f"{number:02d}-{member.role}-{member.pid}.txt"
            text = result.text(
                f"# py-spy dump of {member.role} process {member.pid}, {t:.1f} s into the attach",
                self.target.cwd,
            )
            write_dump(self.settings.out / "stacks", name, text)
            main = result.main_thread
            entries.append(
                {
                    "pid": member.pid,
                    "role": member.role,
                    "file": name,
                    "active": bool(main and main.active),
                    "main_thread": [f.full() for f in main.frames] if main else [],
                }
            )
        round_ = {"t": t, "round": number, "processes": entries}
        with self._lock:
            self.rounds.append(round_)
        self.writer.write(rec.STACKS, round_)

    # -- after the window -------------------------------------------------------------------------

    def _finish_profile(self, recorder: WindowRecorder) -> None:
        raw = recorder.stop()
        if raw is None:
            return
        cwd = self.target.cwd
        processes = summarise(raw, self.roles, cwd)
        self.writer.write(
            rec.PROFILE,
            {
                "t": self.clock() - self.sampler.t0,
                "file": "pyspy/record.txt",
                "rate": self.settings.pyspy_rate,
                "processes": processes,
            },
        )
        stacks = parse_collapsed(raw.read_text(errors="replace"))
        if stacks:
            (raw.parent / "flamegraph.svg").write_text(
                to_svg(
                    shortened(stacks, cwd),
                    f"dcnprobe attach {self.target.main_pid}: every process, "
                    f"{self.settings.window_s:.0f} s (py-spy, idle threads included)",
                )
            )

    def _start_memray(self) -> MemrayWindow:
        members = [
            (m.pid, m.role) for m in self.tree.members() if m.python and m.role in (MAIN, WORKER)
        ]
        self.say(
            f"dcnprobe: --memory: injecting memray into {len(members)} process(es) with a debugger "
            "(several seconds; the window starts after)"
        )
        window = MemrayWindow(self.settings.out / "memray", self.settings.window_s)
        for problem in window.inject(members):
            self._note(problem)
        return window

    def _finish_memray(self, window: MemrayWindow) -> None:
        summaries, problems = window.collect()
        for problem in problems:
            self._note(problem)
        if summaries:
            self.writer.write(
                rec.MEMRAY, {"t": self.clock() - self.sampler.t0, "processes": summaries}
            )


def progress_line(samples: list[dict[str, Any]], elapsed: float, window: float, uss: bool) -> str:
    """'attach 10/30 s: main 95% CPU; 2 workers 45% 44% CPU, 24 MB USS (+0.4 MB/s); ...'"""
    now = samples[-1]
    if uss:  # USS is read every other sample: the latest sample that has it, for a steady figure
        now = next(
            (
                s
                for s in reversed(samples)
                if all(w.get("uss") is not None for w in s.get("workers") or [])
            ),
            now,
        )
    before = next(
        (
            s
            for s in reversed(samples)
            if now["t"] - s["t"] >= PROGRESS_EVERY_S - 0.5
            and (not uss or all(w.get("uss") is not None for w in s.get("workers") or []))
        ),
        samples[0],
    )
    dt = max(now["t"] - before["t"], 1e-9)

    def cpu(a: dict[str, Any] | None, b: dict[str, Any]) -> float | None:
        if a is None:
            return None
        return (
            max(
                0.0,
                (b.get("cpu_user", 0) + b.get("cpu_system", 0))
                - (a.get("cpu_user", 0) + a.get("cpu_system", 0)),
            )
            / dt
        )

    main_now = {k[5:]: v for k, v in now.items() if k.startswith("main_")}
    main_before = {k[5:]: v for k, v in before.items() if k.startswith("main_")}
    text = f"attach {elapsed:.0f}/{window:.0f} s: main {cpu(main_before, main_now) or 0:.0%} CPU"
    workers_before = {w["pid"]: w for w in before.get("workers") or []}
    workers = now.get("workers") or []
    if workers:
        kind = "uss" if uss and all(w.get("uss") is not None for w in workers) else "rss"
        shares = [cpu(workers_before.get(w["pid"]), w) for w in workers]
        text += (
            f"; {len(workers)} new worker(s)"
            if all(c is None for c in shares)
            else f"; {len(workers)} worker(s) "
            + " ".join("new" if c is None else f"{c:.0%}" for c in shares)
            + " CPU"
        )
        size = sum(w.get(kind) or 0 for w in workers)
        # The growth of the workers seen both times: a new worker is not growth.
        kept = [
            w
            for w in workers
            if w["pid"] in workers_before
            and workers_before[w["pid"]].get(kind) is not None
            and w.get(kind) is not None
        ]
        if kept:
            grown = sum(w[kind] - workers_before[w["pid"]][kind] for w in kept) / dt
            text += f", {size / th.MB:,.0f} MB {kind.upper()} ({'+' if grown >= 0 else ''}{grown / th.MB:,.2f} MB/s)"
    busy = [(s.get("machine_busy_s"), s) for s in (before, now)]
    if all(isinstance(b, (int, float)) for b, _ in busy) and before is not now:
        own = interval_cpu(before, now) + max(
            0.0, (now.get("attach_cpu_s") or 0) - (before.get("attach_cpu_s") or 0)
        )
        other = max(0.0, busy[1][0] - busy[0][0] - own) / dt
        text += f"; other programs {other:.1f} cores"
    return text
