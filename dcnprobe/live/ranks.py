"""`dcnprobe watch RUN` on a distributed run: every rank's record followed at once (one
RunState each, rank directories picked up as they appear), drawn as one line per rank:
its epoch and batch, time per batch now, ratio to epoch 1, the share of a batch spent
waiting in collectives and on its loader, and its state. The plain view prints each
rank's events prefixed with the rank, and the rank lines now and then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dcnprobe.distributed.layout import rank_dirs, rank_info
from dcnprobe.hooks import COLLECTIVE, DATA_WAIT
from dcnprobe.live.state import RunState, catch_up
from dcnprobe.live.view import PROGRESS_EVERY_S, event_line
from dcnprobe.records import RUN_FILE, RecordFollower

SILENT_AFTER_S = 30.0  # once another rank has ended badly, a rank silent this long is taken as dead


class RanksState:
    """What the watch knows about each rank, fed from one RecordFollower per rank."""

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = Path(run_dir)
        self.clock = clock
        self.states: dict[int, RunState] = {}
        self._followers: dict[int, RecordFollower] = {}
        self._heard: dict[int, float] = {}  # clock time each rank last appended something

    def poll(self) -> list[tuple[int, Mapping[str, Any]]]:
        """Read what every rank appended since the last call; returns (rank, event) pairs
        worth a line of their own."""
        for rank, directory in rank_dirs(self.run_dir).items():
            if rank not in self._followers:
                self._followers[rank] = RecordFollower(directory)
                self.states[rank] = RunState()
        events = []
        for rank, follower in sorted(self._followers.items()):
            before = follower.offset
            events += [(rank, event) for event in catch_up(follower, self.states[rank])]
            if follower.offset != before or rank not in self._heard:
                self._heard[rank] = self.clock()
        return events

    @property
    def world_size(self) -> int | None:
        sizes = [rank_info(s.header).world_size for s in self.states.values() if s.header]
        return max(sizes) if sizes else None

    @property
    def finished(self) -> bool:
        """Every rank the headers promise has written its footer; or one ended badly and
        every rank without a footer has been silent SILENT_AFTER_S (a rank killed outright
        never writes one)."""
        world = self.world_size
        if world is None:
            return False
        ended = {r: s.footer.get("status") for r, s in self.states.items() if s.finished}
        if len(ended) >= world:
            return True
        silent = all(self.clock() - self._heard[r] >= SILENT_AFTER_S for r in self.states if r not in ended)
        return any(status != "ok" for status in ended.values()) and silent


def rank_line(rank: int, state: RunState) -> str:
    """One rank, one line: where it is, how fast now, against epoch 1, where the time goes."""
    header = state.header or {}
    host = f" ({header['host']})" if header.get("host") else ""
    current = state.current
    if current is None:
        return f"rank {rank}{host}: " + ("started, no batch yet" if header else "no record yet")
    expected = state.batches_per_epoch
    text = f"rank {rank}{host}: epoch {current.epoch}, batch {len(current.totals)}" + (f"/{expected}" if expected else "")
    rate = state.recent_rate()
    if rate is not None:
        text += f", {rate * 1000:.0f} ms per batch now"
    ratio = state.ratio(current.epoch)
    if ratio is not None:
        text += f", {ratio[0]:.2f}x epoch 1"
    means = state.phase_means(current.epoch)
    total = sum(means.values())
    if total > 0:
        text += f", collective {means.get(COLLECTIVE, 0.0) / total:.0%}, data wait {means.get(DATA_WAIT, 0.0) / total:.0%}"
    if state.warnings:
        text += f", warned at epoch {state.warnings[-1].get('epoch')}"
    if state.finished:
        text += f", ended {state.footer.get('status')}"
    return text


def render_ranks(ranks: RanksState, source: str = "") -> RenderableType:
    world = ranks.world_size
    title = Text(f"dcnprobe watch {source}  ", style="bold")
    title.append(f"{len(ranks.states)} of {world} ranks" if world else "waiting for the ranks' records")
    table = Table(expand=False, show_edge=False, pad_edge=False)
    for column in ("rank", "host", "epoch", "batch", "per batch now", "vs epoch 1", "collective", "data wait",
                   "state"):
        table.add_column(column, justify="left" if column in ("host", "state") else "right")
    for rank, state in sorted(ranks.states.items()):
        table.add_row(*_cells(rank, state))
    parts: list[RenderableType] = [title, table]
    for rank, state in sorted(ranks.states.items()):
        for warning in state.warnings[-1:]:
            parts.append(Panel(Text(warning.get("message") or event_line({"type": "warning", **warning}, state)),
                               title=f"rank {rank}: warning", border_style="red"))
    return Group(*parts)


def _cells(rank: int, state: RunState) -> tuple[str, ...]:
    header = state.header or {}
    current = state.current
    if current is None:
        return (str(rank), str(header.get("host") or "-"), "-", "-", "-", "-", "-", "-",
                "started" if header else "no record yet")
    expected = state.batches_per_epoch
    rate = state.recent_rate()
    ratio = state.ratio(current.epoch)
    means = state.phase_means(current.epoch)
    total = sum(means.values()) or 1.0
    status = state.footer.get("status") if state.finished else ("warned" if state.warnings else "running")
    return (str(rank), str(header.get("host") or "-"), str(current.epoch),
            f"{len(current.totals)}" + (f"/{expected}" if expected else ""),
            "-" if rate is None else f"{rate * 1000:.0f} ms",
            "-" if ratio is None else f"{ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f})",
            f"{means.get(COLLECTIVE, 0.0) / total:.0%}", f"{means.get(DATA_WAIT, 0.0) / total:.0%}", status)


def wait_for_layout(run_dir: Path, sleep: Callable[[float], None], interval: float) -> None:
    """Until `run_dir` holds a run record or a rank directory (started before the run)."""
    while not ((run_dir / RUN_FILE).exists() or rank_dirs(run_dir)):
        sleep(interval)


def watch_ranks(run_dir: Path, console: Console, *, exit_at_end: bool = False, interval: float = 1.0,
                sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                live: bool | None = None) -> RanksState:
    """Follow every rank of `run_dir` until all have ended (with exit_at_end) or Ctrl-C."""
    ranks = RanksState(run_dir, clock)
    live = console.is_terminal if live is None else live
    source = str(run_dir)
    try:
        if live:
            with Live(render_ranks(ranks, source), console=console, refresh_per_second=4) as screen:
                while True:
                    ranks.poll()
                    screen.update(render_ranks(ranks, source))
                    if exit_at_end and ranks.finished:
                        break
                    sleep(interval)
        else:
            last_progress = clock()
            while True:
                for rank, event in ranks.poll():
                    line = event_line(event, ranks.states[rank])
                    # A warning's own message already names its rank.
                    prefix = "" if line.startswith("dcnprobe: warning: rank ") else f"rank {rank}: "
                    console.print(prefix + line, markup=False, highlight=False, soft_wrap=True)
                if exit_at_end and ranks.finished:
                    break
                if clock() - last_progress >= PROGRESS_EVERY_S:
                    for rank, state in sorted(ranks.states.items()):
                        if not state.finished:
                            console.print(rank_line(rank, state), markup=False, highlight=False, soft_wrap=True)
                    last_progress = clock()
                sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: no traceback, exit code 0
    return ranks
