"""`dcnprobe run [options] -- CMD ARGS...`: run a training command with the probe attached
from outside, then say where the record is and what the analysis finds.

Only the settings given are applied (DataLoader arguments, threads, cache clearing; any
other setting through a {placeholder} in the command); everything else is left to the
script. Exit code: the command's own; 2 when it could not start training at all.

A distributed command (torchrun, or a script that spawns its ranks) leaves one record per
rank, RUN/rankN/run.jsonl: each rank is summed up, then the ranks are analysed together.
"""

from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from dcnprobe.analysis import analyze_run, write_analysis
from dcnprobe.attach.notes import read_notes
from dcnprobe.cli import interruption
from dcnprobe.cli.options import (
    SettingType,
    check_out_dir,
    default_interval_text,
    epochs_option,
    max_batches_option,
    out_option,
    sample_interval_option,
    stall_after_option,
)
from dcnprobe.command import Command
from dcnprobe.contract import AttachConfig
from dcnprobe.distributed.analysis import analyze_ranks, write_ranks_analysis
from dcnprobe.distributed.layout import is_distributed, rank_dirs, record_files
from dcnprobe.distributed.text import report_lines
from dcnprobe.errors import UsageError
from dcnprobe.harness.run_command import run_attached
from dcnprobe.records import RUN_FILE
from dcnprobe.runs import Run, read_run
from dcnprobe.settings import (
    APPLIED_FROM_OUTSIDE,
    NEEDS_WORKERS,
    Settings,
    SettingsError,
    cli_flag,
    format_value,
    setting_help,
)


def _given_settings_options(command):
    """One option per setting, default None: only what the user gives is applied."""
    for f in reversed(fields(Settings)):
        flag = cli_flag(f.name)
        if f.type in ("bool", bool):
            decl = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=setting_help(f.name))
        else:
            decl = click.option(flag, f.name, type=SettingType(f.name), default=None, help=setting_help(f.name))
        command = decl(command)
    return command


# Everything after the command's first word is the command's, even without --: `run python t.py --epochs 3`.
@click.command("run", context_settings={"allow_interspersed_args": False})
@_given_settings_options
@out_option(None, "run directory: run.jsonl, analysis.json, output.log [default: runs/run-TIME]")
@max_batches_option()
@epochs_option("end the run cleanly (exit code 0) after this many epochs [default: the script's]")
@click.option("--epoch-every", type=click.IntRange(min=1), default=None,
              help="for loops with no DataLoader: an epoch every N optimizer steps")
@stall_after_option(None, " [default: the probe's, 30]")
@sample_interval_option(None, default_interval_text())
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(out: Path | None, max_batches: int | None, epochs: int | None, epoch_every: int | None,
            stall_after: float | None, sample_interval: float | None, command: tuple[str, ...],
            **settings: Any) -> None:
    """Run a training command with the probe attached: dcnprobe run [OPTIONS] -- python train.py ..."""

    given = {name: value for name, value in settings.items() if value is not None}
    parsed = Command.parse(command)
    out = out or check_out_dir(Path("runs") / time.strftime("run-%Y%m%d-%H%M%S"))
    if record_files(out):
        raise UsageError(f"{out} already holds a run record ({record_files(out)[0]}); "
                         "choose another --out or remove it")
    placeholders = {name.replace("-", "_") for name in parsed.placeholders}
    unreachable = [name for name in given if name not in APPLIED_FROM_OUTSIDE and name not in placeholders]
    if unreachable:
        name = unreachable[0]
        raise UsageError(f"{cli_flag(name)} cannot reach this command: {name} is not applied from outside; "
                         f"put {{{name}}} in the command where the script takes it")
    argv = parsed.render(_settings_for(given, placeholders), out)
    config = AttachConfig(
        run_dir=str(out),
        settings={k: format_value(v) for k, v in given.items() if k in APPLIED_FROM_OUTSIDE and k not in placeholders},
        max_batches=max_batches, epochs=epochs, epoch_every=epoch_every, stall_after=stall_after,
        sample_interval=sample_interval,
    )
    click.echo(f"dcnprobe: running {parsed.text()} with the probe attached -> {out}", err=True)
    interruption.keep(f"the command's output in {out / 'output.log'}, and its run record {out / RUN_FILE} "
                      f"if it began training (every finished batch; dcnprobe analyze {out} reads it)")
    outcome = run_attached(argv, config)
    if outcome.interrupted:
        # The command was stopped cleanly (SIGINT, then SIGKILL for what was left); no analysis is
        # written for a run cut short by the user, but the record holds everything measured.
        raise KeyboardInterrupt
    if not outcome.started_training:
        if outcome.exit_code != 0 and not outcome.interrupted:
            raise UsageError(f"{parsed.text()} exited with code {outcome.exit_code} before training started"
                             f"{': ' + outcome.last_line if outcome.last_line else ''} (its output: {outcome.output})")
        click.echo("dcnprobe: no run record: the command ran no training step (no DataLoader pass, backward "
                   "or optimizer step was seen)", err=True)
        sys.exit(outcome.exit_code)
    _report(out)
    sys.exit(outcome.exit_code)  # the command's own: (click's Exit would be swallowed by main)


def _settings_for(given: dict[str, Any], placeholders: set[str]) -> Settings:
    """Settings to fill the command's placeholders. A combination is checked here only as
    far as the user gave it: persistent workers without --num-workers are the script's to
    allow (and reported after the run if it has none): the settings the DataLoader refuses
    without workers are checked against num_workers only when it is given too."""
    try:
        return Settings(**given)
    except SettingsError:
        if "num_workers" in given or any(name in placeholders for name in NEEDS_WORKERS if name in given):
            raise
        return Settings(**{k: v for k, v in given.items() if k not in NEEDS_WORKERS})


def _report(out: Path) -> None:
    if is_distributed(out):
        _report_ranks(out)
        return
    run = _record_summary(out)
    try:
        analysis = analyze_run(run)
    except UsageError as exc:
        click.echo(f"analysis: {exc}")
        return
    path = write_analysis(analysis)
    click.echo(analysis.verdict)
    click.echo(f"analysis: {path}")


def _report_ranks(out: Path) -> None:
    for rank, directory in rank_dirs(out).items():
        try:
            _record_summary(directory, f"rank {rank} ")
        except UsageError as exc:  # a rank that died before its header: the others are kept
            click.echo(f"rank {rank}: {exc}")
    try:
        result = analyze_ranks(out, every_rank=True)
    except UsageError as exc:
        click.echo(f"analysis: {exc}")
        return
    path = write_ranks_analysis(result)
    for line in report_lines(result):
        click.echo(line)
    click.echo(f"analysis: {path}")


def _record_summary(out: Path, label: str = "") -> Run:
    run = read_run(out)
    notes = read_notes(out)
    epochs = run.batches["epoch"].nunique() if len(run.batches) else 0
    epoch_by = notes["boundaries"].get("epoch", "?")
    # A batch record is the work around an optimizer step: say both counts when they differ.
    passes = notes["passes"]
    counts = {c: sum(p.get(c) or 0 for p in passes) for c in ("loader_batches", "optimizer_steps")}
    units = (f" ({counts['loader_batches']} loader batches, {counts['optimizer_steps']} optimizer steps)"
             if passes and set(counts.values()) != {len(run.batches)} else "")
    click.echo(f"\n{label}record: {run.path} ({run.status}; {len(run.batches)} batches{units} in {epochs} epoch(s), "
               f"epochs by {epoch_by}; {len(notes['validation'])} validation pass(es))")
    final = notes["final"] or notes["header"]
    for name, why in (final.get("not_applied") or {}).items():
        click.echo(f"not applied: {name}: {why}")
    for line in final.get("adjusted") or []:
        click.echo(f"adjusted: {line}")
    if notes["final"].get("problem"):
        click.echo(f"note: {notes['final']['problem']}")
    for guess in notes["final"].get("guesses") or []:  # where the record rests on an inference
        click.echo(f"note: {guess}")
    return run
