"""`dcnprobe sweep [-- CMD]`: every combination of chosen settings, side by side."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.bisect import write_json
from dcnprobe.bisect.search import resolve_auto
from dcnprobe.cli.progress import ProgressLine
from dcnprobe.cli.trials import (
    command_line,
    describe_template,
    make_runner,
    trial_options,
    trial_template,
)
from dcnprobe.contract import Exit
from dcnprobe.harness.executor import TrialResources, make_executor
from dcnprobe.harness.runner import UNDECIDED
from dcnprobe.report.multi_trial import write_sweep_report
from dcnprobe.settings import Settings, parse_assignments
from dcnprobe.sweep import parse_vary, sweep, sweep_json


@click.command("sweep")
@click.option("--vary", "vary", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="a setting and the values to try (repeatable; the matrix is the product)")
@click.option("--set", "fixed", multiple=True, metavar="KEY=VALUE", help="a setting held fixed in every trial")
@click.option("--fresh", is_flag=True, help="run every trial again, ignoring cached results")
@trial_options(default_out="runs/sweep", ray=True)
def command(vary: tuple[str, ...], fixed: tuple[str, ...], fresh: bool, epochs: int, max_batches: int, batch_size: int | None,
            threshold: float, trial_budget: float, stall_after: float, out: Path, preset: str | None,
            data: str | None, faults: tuple[str, ...], ray_address: str | None, command_words: tuple[str, ...]) -> None:
    """Run the full matrix over chosen settings and compare every trial.

    Example: dcnprobe sweep --vary num_workers=0,2 --vary start_method=fork,spawn -- python train.py

    Exit codes: 0 finished; 4 no combination could be measured (every trial crashed,
    was invalid or timed out); 2 bad input.
    """

    matrix = parse_vary(vary)
    assignments = {**({"batch_size": batch_size} if batch_size else {}), **parse_assignments(fixed)}
    base = resolve_auto(Settings().with_changes(assignments))
    template = trial_template(command_words, preset=preset, data=data, faults=faults, epochs=epochs,
                              max_batches=max_batches)
    line = ProgressLine()
    runner = make_runner(out, template, threshold, trial_budget, stall_after, line, fresh=fresh)
    click.echo(f"sweep over {', '.join(matrix)}: {describe_template(template)} -> {out}")
    # Timed trials: each asks Ray for a whole node, so that no two share CPUs.
    gpus = 1.0 if base.device.startswith("cuda") else 0.0
    executor = make_executor(ray_address, TrialResources(gpus=gpus, whole_node=True))
    try:
        outcome = sweep(base, matrix, runner, fixed=list(assignments), executor=executor)
    finally:
        executor.close()
    line.clear()
    document = sweep_json(outcome, runner)
    document["command_line"] = command_line()
    write_json(document, out / "sweep.json")
    md, html = write_sweep_report(out, outcome, runner, command_line())
    click.echo("\n" + outcome.summary())
    click.echo(f"\nwritten: {out / 'sweep.json'}, {md}, {html}")
    if outcome.results and not any(r.status in ("ok", "slow", "stalled", *UNDECIDED) for r in outcome.results):
        raise SystemExit(Exit.UNMEASURED)
