"""`dcnprobe attach PID [--for 60s] [--out DIR]`: diagnose a training run that was started
without dcnprobe, from outside, while it runs (dcnprobe.outside)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import click

from dcnprobe.cli import interruption
from dcnprobe.cli.options import (
    MIN_STALL_AFTER_S,
    check_out_dir,
    out_option,
    sample_interval_option,
)
from dcnprobe.outside import AttachSettings, Observer, judge, report_lines, write_verdict
from dcnprobe.outside.record import is_outside_dir
from dcnprobe.outside.tree import find_target

DEFAULT_WINDOW = "60s"
MIN_WINDOW_S = 1.0
_DURATION = re.compile(r"^\s*(?P<value>\d+(\.\d*)?|\.\d+)\s*(?P<unit>s|sec|m|min|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
DEFAULT_STALL_AFTER_S = (
    10.0  # dcnprobe.outside.thresholds.DEFAULT_STALL_AFTER_S, without importing it at start-up
)


class Duration(click.ParamType):
    """'30s', '2m', '1.5h' or plain seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if not match:
                self.fail(f"{value!r} is not a duration (examples: 30s, 2m, 90)", param, ctx)
            seconds = float(match.group("value")) * _UNITS[match.group("unit")]
        if seconds < MIN_WINDOW_S:
            self.fail(f"{value!r} is shorter than {MIN_WINDOW_S:g} s", param, ctx)
        return seconds


@click.command("attach")
@click.argument("pid", type=click.IntRange(min=1))
@click.option(
    "--for",
    "window",
    type=Duration(),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="how long to watch the run (30s, 2m, ...)",
)
@out_option(None, "where the record goes [default: runs/attach-PID-TIME]")
@click.option(
    "--memory",
    is_flag=True,
    help="also inject memray into the main process and its workers for the window (needs gdb or lldb, "
    "ptrace permission and memray importable in the run's Python)",
)
@click.option(
    "--stall-after",
    type=click.FloatRange(min=MIN_STALL_AFTER_S),
    default=DEFAULT_STALL_AFTER_S,
    show_default=True,
    help="call the run stalled when none of its processes used CPU and the main stack did not change for "
    "this many seconds, up to the end of the window",
)
@sample_interval_option(1.0)
@click.option("--no-stacks", is_flag=True, help="read /proc only: no py-spy dumps or profile")
def command(
    pid: int,
    window: float,
    out: Path | None,
    memory: bool,
    stall_after: float,
    sample_interval: float,
    no_stacks: bool,
) -> None:
    """Diagnose a running training process from outside, without restarting it.

    PID is the training script's process or any of its DataLoader workers. For the window
    it samples every process of the run (CPU, memory, swap, threads, files, page faults,
    context switches), the machine's other load, and the stacks (py-spy), then says which
    causes are visible from outside and what to do. DIR/run.jsonl is a run record that
    `dcnprobe analyze DIR` and `dcnprobe watch DIR` read.
    """

    started = time.monotonic()
    target = find_target(
        pid
    )  # a PID that is gone or not Python: one line, before anything is written
    out = out or check_out_dir(Path("runs") / time.strftime(f"attach-{pid}-%Y%m%d-%H%M%S"))
    settings = AttachSettings(
        pid=pid,
        out=out,
        window_s=window,
        interval_s=sample_interval,
        stall_after_s=stall_after,
        memory=memory,
        stacks=not no_stacks,
    )
    observer = Observer(settings, target=target)
    interruption.keep(f"the record so far in {out} (dcnprobe analyze {out} reads it)")
    main = f" (a worker of {target.main_pid})" if target.main_pid != pid else ""
    click.echo(
        f"dcnprobe: attaching to PID {pid}{main}, `{target.command}`, for {window:g} s -> {out}",
        err=True,
    )
    observation = observer.run()
    verdict = judge(out)
    path = write_verdict(verdict)
    show(verdict)
    kept = [name for name in ("stacks/", "pyspy/", "memray/") if (out / name).is_dir()]
    click.echo(
        f"\nwritten: {out / 'run.jsonl'}, {', '.join([path.name, *kept])} (the attach took "
        f"{time.monotonic() - started:.1f} s, {observation.elapsed_s:.1f} s of it watching)"
    )


def show(verdict: Any) -> None:
    for line in report_lines(verdict):
        click.echo(line)


def analyze_outside(run_dir: Path) -> bool:
    """For `dcnprobe analyze`: a record written by `attach PID` gets the verdict from outside
    (it has no batches to compare epochs by). False for any other record."""

    if not is_outside_dir(run_dir):
        return False
    verdict = judge(run_dir)
    path = write_verdict(verdict)
    show(verdict)
    click.echo(f"\nwritten: {path}")
    return True
