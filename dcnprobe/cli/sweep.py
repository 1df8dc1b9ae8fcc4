"""`dcnprobe sweep`: every combination of chosen settings, side by side."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.cli.progress import ProgressLine
from dcnprobe.cli.trials import command_line, make_runner, trial_options
from dcnprobe.settings import Settings, parse_assignments


@click.command("sweep")
@click.option("--vary", "vary", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="a setting and the values to try (repeatable; the matrix is the product)")
@click.option("--set", "fixed", multiple=True, metavar="KEY=VALUE", help="a setting held fixed in every trial")
@trial_options(default_out="runs/sweep")
def command(vary: tuple[str, ...], fixed: tuple[str, ...], faults, epochs, max_batches, batch_size, preset, data,
            threshold, trial_budget, stall_after, out: Path) -> None:
    """Run the full matrix over chosen settings and compare every trial.

    Example: dcnprobe sweep --vary num_workers=0,2,4 --vary persistent_workers=true,false
    """
    from dcnprobe.bisect import trial_json, write_json
    from dcnprobe.bisect.search import resolve_auto
    from dcnprobe.report.comparison import write_comparison
    from dcnprobe.report.document import Bullets, Heading, Paragraph
    from dcnprobe.sweep import parse_vary, sweep

    matrix = parse_vary(vary)
    base = resolve_auto(Settings().with_changes({**({"batch_size": batch_size} if batch_size else {}),
                                                 **parse_assignments(fixed)}))
    line = ProgressLine()
    runner = make_runner(out, faults, epochs, max_batches, preset, data, threshold, trial_budget, stall_after, line)
    click.echo(f"sweep over {', '.join(matrix)}: {epochs} epochs x {max_batches} batches per trial -> {out}")
    outcome = sweep(base, matrix, runner)
    line.clear()
    write_json({
        "command": command_line(),
        "base": base.to_dict(),
        "vary": matrix,
        "summary": outcome.summary(),
        "trials": [trial_json(r) for r in outcome.results],
        "invalid": outcome.invalid,
        "trials_run": runner.ran,
        "trials_cached": runner.reused,
    }, out / "sweep.json")
    summary = [Paragraph(outcome.summary())]
    if outcome.invalid:
        summary.append(Bullets([f"cannot run: `{' '.join(f'{k}={v}' for k, v in i['settings'].items())}`: {i['reason']}"
                                for i in outcome.invalid]))
    details = [Heading("How this was run"),
               Bullets([f"command: `{command_line()}`", f"trials run: {runner.ran}, reused from the cache: {runner.reused}"])]
    md, html = write_comparison(out, "dcnprobe sweep", summary, outcome.results, base, details)
    click.echo("\n" + outcome.summary())
    click.echo(f"\nwritten: {out / 'sweep.json'}, {md}, {html}")
