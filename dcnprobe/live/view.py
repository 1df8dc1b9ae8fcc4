"""`dcnprobe watch`: a live terminal view of a run record, drawn with rich.

On a terminal the view redraws in place: per-epoch median batch time and ratio to epoch 1
with its interval, the phase breakdown as bars, memory sparklines (main process, workers,
device, swap), the current epoch's progress and time left at the present rate, and any
warning. Without a terminal (piped, CI) it prints plain lines instead: one per epoch,
warning, stall and footer, and a progress line now and then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dcnprobe.live.state import MEMORY_SERIES, RunState, catch_up
from dcnprobe.records import EPOCH, FOOTER, LOOP_END, STALL, WARNING, RecordFollower
from dcnprobe.settings import describe
from dcnprobe.slowdown import PHASE_NAMES

SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 40
SPARK_WIDTH = 40
PROGRESS_EVERY_S = 10.0  # plain view: a progress line at most this often
PHASE_COLOURS = dict(zip(PHASE_NAMES, ("red", "cyan", "blue", "magenta", "green", "yellow", "bright_black",
                                        "white")))
MB = 1 << 20


# -- pieces -------------------------------------------------------------------------------


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The latest `width` values as block characters, scaled from their min to their max."""
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def _bytes(value: float) -> str:
    return f"{value / (1 << 30):.2f} GB" if abs(value) >= 1 << 30 else f"{value / MB:.0f} MB"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _ratio_text(ratio: tuple[float, float, float] | None) -> str:
    if ratio is None:
        return "-"
    value, low, high = ratio
    return f"{value:.2f}x ({low:.2f}-{high:.2f})"


def phase_bar(means: Mapping[str, float], scale: float, width: int = BAR_WIDTH) -> Text:
    """A stacked bar of seconds per batch by phase; `scale` seconds fill the width, so
    epochs drawn with the same scale compare by length."""
    bar = Text()
    if scale <= 0:
        return bar
    drawn, running = 0, 0.0
    for name in PHASE_NAMES:
        # Round the running total, not each phase, so the bar is never longer than `width`.
        running += max(0.0, means.get(name, 0.0))
        cells = min(width, round(running / scale * width)) - drawn
        if cells > 0:
            bar.append("█" * cells, style=PHASE_COLOURS[name])
            drawn += cells
    return bar


# -- the rich view --------------------------------------------------------------------------


def render(state: RunState, source: str = "") -> RenderableType:
    parts: list[RenderableType] = [_title(state, source)]
    if state.epochs:
        parts += [_epochs_table(state), _phases(state)]
    parts.append(_memory(state))
    progress = _progress_line(state)
    if progress:
        parts.append(Text(progress))
    for warning in state.warnings[-3:]:
        parts.append(Panel(Text(warning.get("message") or _warning_line(warning)), title="warning",
                           border_style="red"))
    for stall in state.stalls[-1:]:
        parts.append(Panel(Text(_stall_line(stall)), title="stall", border_style="red"))
    return Group(*parts)


def _title(state: RunState, source: str) -> Text:
    header = state.header or {}
    settings = header.get("settings") or {}
    described = describe(settings)
    status = state.footer["status"] if state.footer else "running"
    text = Text(f"dcnprobe watch {source}  ", style="bold")
    text.append(status, style="green" if status == "ok" else "red" if status != "running" else "yellow")
    if described:
        text.append(f"  ({described})")
    if _from_outside(state):
        text.append(f"  attached from outside to PID {header.get('pid')}: no batch timings, so no epochs")
    return text


def _from_outside(state: RunState) -> bool:
    """Written by `dcnprobe attach PID`: samples of the processes, no batches."""
    return (state.header or {}).get("attached") == "pid"


def _epochs_table(state: RunState) -> Table:
    table = Table(title=None, expand=False, show_edge=False, pad_edge=False)
    for column in ("epoch", "batches", "median batch", "vs epoch 1 (95% CI)", "state"):
        table.add_column(column, justify="right" if column != "state" else "left")
    for number, view in sorted(state.epochs.items()):
        ratio = state.ratio(number)
        style = "red" if ratio and ratio[1] > 1.2 else None
        table.add_row(str(number), str(len(view.totals)), _ms(state.median(number)), _ratio_text(ratio),
                      "done" if view.done else "running", style=style)
    return table


def _phases(state: RunState) -> Group:
    means = {number: state.phase_means(number) for number in state.epochs}
    scale = max((sum(m.values()) for m in means.values()), default=0.0)
    rows = [Text("time per batch by phase (mean):", style="bold")]
    for number, phase_means in sorted(means.items()):
        line = Text(f"epoch {number:>3} ")
        line.append_text(phase_bar(phase_means, scale))
        line.append(f" {_ms(sum(phase_means.values()))}")
        rows.append(line)
    legend = Text("          ")
    for name in PHASE_NAMES:
        legend.append("█", style=PHASE_COLOURS[name])
        legend.append(f" {name}  ")
    rows.append(legend)
    return Group(*rows)


def _memory(state: RunState) -> Group:
    rows = [Text("memory (latest samples):", style="bold")]
    labels = {"main": "main RSS", "workers": "workers RSS", "device": "device", "swap": "swap used"}
    for name in MEMORY_SERIES:
        series = state.memory[name]
        if not series:
            rows.append(Text(f"{labels[name]:>12}  -"))
            continue
        line = Text(f"{labels[name]:>12}  ")
        line.append(sparkline(series), style="cyan")
        line.append(f"  {_bytes(series[-1])} (range {_bytes(min(series))}-{_bytes(max(series))})")
        rows.append(line)
    return Group(*rows)


# -- plain lines ------------------------------------------------------------------------------


def _progress_line(state: RunState) -> str | None:
    current = state.current
    if current is None and _from_outside(state) and not state.finished and state.last_t is not None:
        memory = state.memory
        text = f"seen from outside for {state.last_t:.0f} s (no batch timings)"
        if memory["main"]:
            text += f": main RSS {_bytes(memory['main'][-1])}"
        if memory["workers"] and memory["workers"][-1] > 0:
            text += f", workers RSS {_bytes(memory['workers'][-1])}"
        return text
    if current is None or state.finished:
        return None
    expected = state.batches_per_epoch
    done = len(current.totals)
    text = f"epoch {current.epoch}: batch {done}" + (f"/{expected}" if expected else "")
    rate = state.recent_rate()
    if rate is not None:
        text += f", {_ms(rate)} per batch now"
    ratio = state.ratio(current.epoch)
    if ratio is not None:
        text += f", {ratio[0]:.2f}x epoch 1"
    eta = state.eta_s()
    if eta is not None:
        text += f", about {_duration(eta)} left in this epoch"
    return text


def _warning_line(warning: Mapping[str, Any]) -> str:
    ci = warning.get("ratio_ci")
    interval = f" (CI {ci[0]:.2f}-{ci[1]:.2f})" if ci and None not in ci else ""
    return f"epoch {warning.get('epoch')} runs {warning.get('ratio', 0):.2f}x epoch 1{interval}"


def _stall_line(stall: Mapping[str, Any]) -> str:
    stacks = ", ".join(stall.get("stacks") or []) or "-"
    if stall.get("seen_from") == "outside":  # no batches seen: what stopped is the processes' CPU
        return f"stalled: no process of the run used CPU for {stall.get('waited_s', 0):.0f} s; stacks: {stacks}"
    return (f"stalled in epoch {stall.get('epoch')} at batch {stall.get('batch')}: no batch for "
            f"{stall.get('waited_s', 0):.0f} s; stacks: {stacks}")


def event_line(event: Mapping[str, Any], state: RunState) -> str:
    """A plain line for an epoch ending, a warning, a stall or the footer."""
    kind = event.get("type")
    if kind in (LOOP_END, EPOCH):
        number = int(event["epoch"])
        text = f"epoch {number}: {len(state.epochs[number].totals)} batches, median {_ms(state.median(number))}"
        ratio = state.ratio(number)
        return text + (f", {ratio[0]:.2f}x epoch 1 (95% CI {ratio[1]:.2f}-{ratio[2]:.2f})" if ratio else "")
    if kind == WARNING:
        return event.get("message") or "warning: " + _warning_line(event)
    if kind == STALL:
        return "stall: " + _stall_line(event)
    if kind == FOOTER:
        reason = f" ({event['reason']})" if event.get("reason") else ""
        if _from_outside(state):
            return (f"attach ended after {event.get('observed_s') or 0:.0f} s: {event.get('status')}{reason} "
                    f"(`dcnprobe analyze` on this directory gives the verdict from outside)")
        return f"run ended: {event.get('status')}{reason}"
    return str(dict(event))


# -- the loop ------------------------------------------------------------------------------------


def watch(run_dir: Path, console: Console, *, exit_at_end: bool = False, interval: float = 1.0,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
          live: bool | None = None) -> RunState:
    """Follow `run_dir` until the footer (with exit_at_end) or Ctrl-C; returns what it saw."""
    follower = RecordFollower(run_dir)
    state = RunState()
    live = console.is_terminal if live is None else live
    source = str(run_dir)
    try:
        if live:
            with Live(render(state, source), console=console, refresh_per_second=4, transient=False) as screen:
                while True:
                    catch_up(follower, state, each=lambda: screen.update(render(state, source)))
                    screen.update(render(state, source))
                    if exit_at_end and state.finished:
                        break
                    sleep(interval)
        else:
            last_progress = clock()
            while True:
                for event in catch_up(follower, state):
                    console.print(event_line(event, state), markup=False, highlight=False, soft_wrap=True)
                if exit_at_end and state.finished:
                    break
                progress = _progress_line(state)
                if progress and clock() - last_progress >= PROGRESS_EVERY_S:
                    console.print(progress, markup=False, highlight=False, soft_wrap=True)
                    last_progress = clock()
                sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: no traceback, exit code 0
    return state
