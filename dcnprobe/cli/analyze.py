"""`dcnprobe analyze RUN_DIR` (or `dcnprobe analyze -- CMD`, which runs the command with the
probe attached first): the verdict in plain words, the evidence, what to do, and
RUN_DIR/analysis.json."""

from __future__ import annotations

import time
from pathlib import Path

import click

from dcnprobe.analysis import advice_lines, analyze_run, write_analysis
from dcnprobe.cli.attach_pid import analyze_outside
from dcnprobe.cli.options import check_out_dir, epochs_option, max_batches_option, out_option
from dcnprobe.command import Command
from dcnprobe.contract import AttachConfig
from dcnprobe.distributed.analysis import analyze_ranks, write_ranks_analysis
from dcnprobe.distributed.layout import is_distributed
from dcnprobe.distributed.text import report_lines
from dcnprobe.errors import UsageError
from dcnprobe.harness.run_command import run_attached
from dcnprobe.ratios import DEFAULT_THRESHOLD
from dcnprobe.settings import Settings


@click.command("analyze")
@click.option("--threshold", type=click.FloatRange(min=1.0), default=DEFAULT_THRESHOLD, show_default=True,
              help="a later epoch is slow when the confidence interval of its ratio to epoch 1 is above this")
@out_option(None, "with -- CMD: where the run's record goes [default: runs/analyze-TIME]")
@max_batches_option("with -- CMD: end each pass over the training DataLoader after this many batches "
                    "[default: the whole pass]")
@epochs_option("with -- CMD: end the run cleanly after this many epochs [default: the script's]")
@click.argument("target", nargs=-1, type=click.UNPROCESSED, metavar="RUN_DIR | -- CMD ARGS...")
def command(threshold: float, out: Path | None, max_batches: int | None, epochs: int | None,
            target: tuple[str, ...]) -> None:
    """Say whether a recorded run got slower, where the time went, the most likely cause and what to do.

    RUN_DIR is any directory the probe wrote (ours, your own loop, a run killed half-way),
    or a distributed run's directory (rank0/, rank1/, ...): then every rank is read, the
    rank that holds the others back is named with its score, and its own cause is given.
    With `-- CMD` the command is run first, unchanged, with the probe attached.
    """

    run_dir = _run_first(target, out, max_batches, epochs) if _is_command(target) else _one_dir(target)
    if analyze_outside(run_dir):  # written by `attach PID`: no batches, the verdict from outside
        return
    if is_distributed(run_dir):  # RUN/rank0/run.jsonl, RUN/rank1/...: every rank together
        _analyze_ranks(run_dir, threshold)
        return
    analysis = analyze_run(run_dir, threshold)
    path = write_analysis(analysis)
    click.echo(analysis.verdict)
    click.echo("")
    click.echo("causes, most likely first:")
    for finding in analysis.causes:
        click.echo(f"  {finding.id} (score {finding.score:.2f})")
        for line in finding.evidence:
            click.echo(f"    - {line}")
    advice = advice_lines(analysis)
    if advice:
        click.echo("\nwhat to do:")
        for cause, text in advice:
            click.echo(f"  {cause}: {text}")
        click.echo("  (every cause, its signals and references: docs/causes.md)")
    if analysis.run.truncated or analysis.run.status == "incomplete":
        click.echo(f"\nnote: the run did not finish ({analysis.run.status}); analysed every batch it recorded")
    click.echo(f"\nwritten: {path}")


def _analyze_ranks(run_dir: Path, threshold: float) -> None:
    result = analyze_ranks(run_dir, threshold, every_rank=True)
    path = write_ranks_analysis(result)
    for line in report_lines(result):
        click.echo(line)
    click.echo(f"\nwritten: {path} (and {', '.join(str(p) for p in result.written.values())})")


def _is_command(target: tuple[str, ...]) -> bool:
    """A run directory is one existing path; anything else is a command to run."""
    return len(target) != 1 or not Path(target[0]).is_dir()


def _one_dir(target: tuple[str, ...]) -> Path:
    return Path(target[0])


def _run_first(target: tuple[str, ...], out: Path | None, max_batches: int | None, epochs: int | None) -> Path:
    if not target:
        raise UsageError("analyze needs a run directory, or -- CMD to run first")
    if len(target) == 1 and not Path(target[0]).exists() and not target[0].endswith(".py") \
            and "/" in target[0]:
        raise UsageError(f"no run record at {target[0]} (expected a directory written by the probe)")
    command = Command.parse(target)
    out = out or check_out_dir(Path("runs") / time.strftime("analyze-%Y%m%d-%H%M%S"))
    config = AttachConfig(run_dir=str(out), max_batches=max_batches, epochs=epochs)
    outcome = run_attached(command.render(Settings(), out), config)
    if not outcome.started_training:
        raise UsageError(f"the command recorded no training ({outcome.last_line or f'exit code {outcome.exit_code}'})")
    click.echo("")
    return out
