"""`dcnprobe bisect`: find the setting change that makes later epochs slow."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.cli.progress import ProgressLine
from dcnprobe.cli.trials import command_line, make_runner, trial_options
from dcnprobe.settings import format_value, parse_assignments


@click.command("bisect")
@click.option("--bad", "bad", multiple=True, metavar="KEY=VALUE",
              help="change the slow settings (repeatable) [default: device=auto num_workers=4 "
                   "persistent_workers=true cache_clear=never, the report's set-up]")
@click.option("--good", "good", multiple=True, metavar="KEY=VALUE",
              help="change the healthy settings (repeatable) [default: device=cpu num_workers=0 "
                   "persistent_workers=false cache_clear=epoch]")
@trial_options(default_out="runs/bisect")
def command(bad: tuple[str, ...], good: tuple[str, ...], faults, epochs, max_batches, batch_size, preset, data,
            threshold, trial_budget, stall_after, out: Path) -> None:
    """Find the smallest set of setting changes that makes later epochs slow.

    Runs the bad and the good settings first; if bad is slow and good is healthy, delta
    debugging over the settings that differ finds the culprit. Every trial is a fresh
    process, stopped as soon as its verdict is clear, and cached: run the same command
    again to resume. Writes OUT/bisect.json, OUT/report.md and OUT/report.html.
    """
    from dcnprobe.bisect import (
        BISECT_FILE,
        DEFAULT_BAD,
        DEFAULT_GOOD,
        bisect,
        bisect_json,
        write_json,
    )
    from dcnprobe.bisect.search import resolve_auto
    from dcnprobe.report.comparison import write_comparison
    from dcnprobe.report.document import Bullets, Heading, Paragraph

    common = {"batch_size": batch_size} if batch_size else {}
    # An absent device or an impossible combination fails here, before any trial.
    bad_settings = resolve_auto(DEFAULT_BAD.with_changes({**common, **parse_assignments(bad)}))
    good_settings = resolve_auto(DEFAULT_GOOD.with_changes({**common, **parse_assignments(good)}))
    line = ProgressLine()
    runner = make_runner(out, faults, epochs, max_batches, preset, data, threshold, trial_budget, stall_after, line)
    click.echo(f"bisect: {epochs} epochs x {max_batches} batches per trial"
               + (f", faults: {', '.join(faults)}" if faults else "") + f" -> {out}")

    outcome = bisect(bad_settings, good_settings, runner)
    line.clear()
    data_json = bisect_json(outcome, runner)
    data_json["command"] = command_line()
    write_json(data_json, out / BISECT_FILE)

    summary = [Paragraph(outcome.verdict)]
    facts = []
    if outcome.culprit:
        facts.append(f"culprit: `{' + '.join(outcome.culprit)}`")
    facts += [f"interaction: {text}" for text in outcome.interactions]
    if outcome.cause:
        facts.append(f"likely cause: **{outcome.cause}**")
        facts += [f"evidence: {e}" for e in outcome.evidence]
    if outcome.advice:
        facts.append(f"what to do: {outcome.advice}")
    if facts:
        summary.append(Bullets(facts))
    differences = ", ".join(f"`{k}`: {format_value(v[0])} (bad) / {format_value(v[1])} (good)"
                            for k, v in outcome.differences.items())
    details = [
        Heading("How this was found"),
        Bullets([
            f"command: `{data_json['command']}`",
            f"settings that differ: {differences or 'none'}",
            f"trials run: {runner.ran}, reused from the cache: {runner.reused}; delta debugging asked about "
            f"{outcome.evaluations} subsets (invalid combinations cost no trial); the full factorial is "
            f"{data_json['full_factorial']} combinations",
            f"wall time: {outcome.wall_s:.0f} s",
            f"each trial: {epochs} epochs x {max_batches} batches, its own process, stopped as soon as it is "
            "clearly slow; records, analysis and logs under `trials/`",
        ]),
    ]
    md, html = write_comparison(out, "dcnprobe bisect", summary, runner.results, good_settings, details)
    click.echo("")
    click.echo(outcome.verdict)
    click.echo(f"\nwritten: {out / BISECT_FILE}, {md}, {html}")
