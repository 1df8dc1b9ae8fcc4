"""`dcnprobe bisect [-- CMD]`: find the setting change that makes later epochs slow."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.bisect import BISECT_FILE, DEFAULT_BAD, DEFAULT_GOOD, bisect, bisect_json, write_json
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
from dcnprobe.report.multi_trial import write_bisect_report
from dcnprobe.settings import parse_assignments


@click.command("bisect")
@click.option("--bad", "bad", multiple=True, metavar="KEY=VALUE",
              help="change the slow settings (repeatable) [default: device=auto num_workers=4 "
                   "persistent_workers=true cache_clear=never, the report's set-up]")
@click.option("--good", "good", multiple=True, metavar="KEY=VALUE",
              help="change the healthy settings (repeatable) [default: device=cpu num_workers=0 "
                   "persistent_workers=false cache_clear=epoch]")
@click.option("--fresh", is_flag=True, help="run every trial again, ignoring cached results")
@trial_options(default_out="runs/bisect")
def command(bad: tuple[str, ...], good: tuple[str, ...], fresh: bool, epochs: int, max_batches: int, batch_size: int | None,
            threshold: float, trial_budget: float, stall_after: float, out: Path, preset: str | None,
            data: str | None, faults: tuple[str, ...], command_words: tuple[str, ...]) -> None:
    """Find the smallest set of setting changes that makes later epochs slow.

    Runs the built-in trainer, or your own command after `--` (unchanged: the probe is
    attached from outside; settings reach it as DataLoader arguments, threads, cache
    clearing, or {placeholders} in the command). Runs the bad and the good settings
    first; if bad is slow and good is healthy, delta debugging over the settings that
    differ finds the culprit. Every trial is a fresh process, stopped as soon as its
    verdict is clear, and cached: run the same command again to resume. Writes
    OUT/bisect.json, OUT/report.md and OUT/report.html.

    Example: dcnprobe bisect --max-batches 100 -- python train.py --epochs 2

    Exit codes: 0 finished with a verdict (a culprit, no slowdown, or inconclusive);
    4 the bad settings could not be measured at all (crashed, invalid, timed out);
    2 bad input.
    """

    common = {"batch_size": batch_size} if batch_size else {}
    # An absent device, an impossible combination, a bad command: all fail here, before any trial.
    bad_settings = resolve_auto(DEFAULT_BAD.with_changes({**common, **parse_assignments(bad)}))
    good_settings = resolve_auto(DEFAULT_GOOD.with_changes({**common, **parse_assignments(good)}))
    template = trial_template(command_words, preset=preset, data=data, faults=faults, epochs=epochs,
                              max_batches=max_batches)
    line = ProgressLine()
    runner = make_runner(out, template, threshold, trial_budget, stall_after, line, fresh=fresh)
    click.echo(f"bisect: {describe_template(template)}" + (f", faults: {', '.join(faults)}" if faults else "")
               + f" -> {out}")

    outcome = bisect(bad_settings, good_settings, runner)
    line.clear()
    document = bisect_json(outcome, runner)
    document["command_line"] = command_line()
    write_json(document, out / BISECT_FILE)
    md, html = write_bisect_report(out, outcome, runner, command_line())
    click.echo("")
    click.echo(outcome.verdict)
    click.echo(f"\nwritten: {out / BISECT_FILE}, {md}, {html}")
    if outcome.finding == "unmeasured":
        raise SystemExit(Exit.UNMEASURED)
