"""Options and plumbing shared by the commands that run trials (bisect, sweep)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import click

from dcnprobe.analysis import DEFAULT_THRESHOLD
from dcnprobe.cli.progress import ProgressLine
from dcnprobe.harness.runner import DEFAULT_BUDGET_S, DEFAULT_STALL_AFTER_S
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.harness.trials import TrialRunner
from model.presets import DEFAULT_PRESET, PRESETS


def trial_options(default_out: str) -> Callable:
    def decorate(command: Callable) -> Callable:
        decls = [
            click.option("--fault", "faults", multiple=True, metavar="NAME",
                         help="plant a slowdown scenario in every trial (repeatable)"),
            click.option("--epochs", type=click.IntRange(min=2), default=2, show_default=True,
                         help="epochs per trial (epoch 1 is the baseline)"),
            click.option("--max-batches", type=click.IntRange(min=10), default=200, show_default=True,
                         help="batches per epoch in each trial"),
            click.option("--batch-size", type=click.IntRange(min=1), default=None,
                         help="rows per batch in every trial [default: the settings' 4096]"),
            click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True),
            click.option("--data", default="synthetic", show_default=True, help="as for dcnprobe train"),
            click.option("--threshold", type=click.FloatRange(min=1.0), default=DEFAULT_THRESHOLD, show_default=True,
                         help="a trial is slow when its later-epoch/epoch-1 ratio is clearly above this"),
            click.option("--trial-budget", type=click.FloatRange(min=10), default=DEFAULT_BUDGET_S, show_default=True,
                         help="wall-time limit of one trial, seconds"),
            click.option("--stall-after", type=click.FloatRange(min=1), default=DEFAULT_STALL_AFTER_S,
                         show_default=True, help="seconds without a batch before a trial is declared stalled"),
            click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path(default_out),
                         show_default=True, help="report, JSON and cached trials; run again to resume"),
        ]
        for decl in reversed(decls):
            command = decl(command)
        return command

    return decorate


def make_runner(out: Path, faults, epochs, max_batches, preset, data, threshold, trial_budget, stall_after,
                line: ProgressLine) -> TrialRunner:
    from model.faults import resolve_faults

    resolve_faults(faults)  # an unknown fault fails here, not in every trial
    out.mkdir(parents=True, exist_ok=True)
    template = TrialSpec(faults=tuple(faults), preset=preset, epochs=epochs, max_batches=max_batches, data=data)

    def report(text: str) -> None:
        line.clear()
        click.echo(text)

    return TrialRunner(out, template, threshold=threshold, budget_s=trial_budget, stall_after_s=stall_after,
                       report=report, on_progress=line.show)


def command_line() -> str:
    return "dcnprobe " + " ".join(shlex.quote(a) for a in sys.argv[1:])
