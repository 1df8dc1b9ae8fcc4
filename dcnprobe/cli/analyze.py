"""`dcnprobe analyze RUN_DIR`: the verdict in plain words, the evidence, what to do, and
RUN_DIR/analysis.json."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.analysis import DEFAULT_THRESHOLD


@click.command("analyze")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(min=1.0), default=DEFAULT_THRESHOLD, show_default=True,
              help="a later epoch is slow when the confidence interval of its ratio to epoch 1 is above this")
def command(run_dir: Path, threshold: float) -> None:
    """Say whether a recorded run got slower, where the time went, the most likely cause and what to do."""
    from dcnprobe.analysis import advice_lines, analyze_run, write_analysis

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
