"""Options and plumbing shared by the commands that run trials (bisect, sweep): which
command each trial runs, how long, and where the results go."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from dcnprobe.cli import interruption, train
from dcnprobe.cli.executors import ray_option, ray_refused
from dcnprobe.cli.options import (
    out_option,
    stall_after_option,
    trial_budget_option,
    trial_epochs_option,
    trial_max_batches_option,
)
from dcnprobe.cli.progress import ProgressLine
from dcnprobe.command import Command
from dcnprobe.harness.runner import DEFAULT_BUDGET_S, DEFAULT_STALL_AFTER_S
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.harness.trials import TrialRunner
from dcnprobe.ratios import DEFAULT_THRESHOLD


def trial_options(default_out: str, ray: bool = False) -> Callable:
    """`ray`: the command takes --ray (its trials are independent); otherwise --ray is refused."""

    def decorate(command: Callable) -> Callable:
        decls = [
            trial_epochs_option(),
            trial_max_batches_option(200),
            click.option("--batch-size", type=click.IntRange(min=1), default=None,
                         help="rows per batch in every trial [default: the settings' 4096; with -- CMD, needs "
                              "{batch_size} in the command]"),
            click.option("--threshold", type=click.FloatRange(min=1.0), default=DEFAULT_THRESHOLD, show_default=True,
                         help="a trial is slow when its later-epoch/epoch-1 ratio is clearly above this"),
            trial_budget_option(DEFAULT_BUDGET_S),
            stall_after_option(DEFAULT_STALL_AFTER_S),
            out_option(Path(default_out), "report, JSON and cached trials; run again to resume"),
            click.option("--preset", default=None, help="built-in trainer only: hyperparameters [default: phase3-revised]"),
            click.option("--data", default=None, help="built-in trainer only: as for dcnprobe train [default: synthetic]"),
            click.option("--fault", "faults", multiple=True, metavar="NAME",
                         help="built-in trainer only: plant a slowdown scenario in every trial (repeatable)"),
            ray_option(packs=False) if ray else ray_refused(
                "bisect runs one trial at a time, each chosen from the last: a cluster adds start-up, not speed "
                "(sweep and study take --ray)"),
            click.argument("command_words", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]"),
        ]
        for decl in reversed(decls):
            command = decl(command)
        return command

    return decorate


def trial_template(command_words: Sequence[str], *, preset: str | None, data: str | None, faults: Sequence[str],
                   epochs: int, max_batches: int) -> TrialSpec:
    """What every trial runs: the user's command after `--`, else the built-in trainer.
    Everything is checked here, before the first trial."""

    train.check_builtin_only(command_words, preset=preset, data=data, faults=faults)
    if command_words:
        command = Command.parse(command_words)
    else:
        command = train.builtin_command(preset or train.DEFAULT_PRESET, data or train.DEFAULT_DATA, faults)
    return TrialSpec(command=command, epochs=epochs, max_batches=max_batches)


def make_runner(out: Path, template: TrialSpec, threshold: float, trial_budget: float, stall_after: float,
                line: ProgressLine, fresh: bool = False) -> TrialRunner:
    out.mkdir(parents=True, exist_ok=True)
    interruption.keep(f"every finished trial, cached under {out}; the same command again resumes "
                      "(the trial that was running is stopped with its workers, and run again)")

    def report(text: str) -> None:
        line.clear()
        click.echo(text)

    return TrialRunner(out, template, threshold=threshold, budget_s=trial_budget, stall_after_s=stall_after,
                       report=report, on_progress=line.show, fresh=fresh)


def describe_template(template: TrialSpec) -> str:
    what = "the built-in trainer" if template.command.builtin else template.command.text()
    return f"{what}, {template.epochs} epochs x {template.max_batches} batches per trial"


def command_line() -> str:
    return "dcnprobe " + " ".join(shlex.quote(a) for a in sys.argv[1:])
