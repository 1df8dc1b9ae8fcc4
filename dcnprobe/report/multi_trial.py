"""The documents of the commands that run many trials (bisect, sweep): what they found,
how, and every trial. Builders take result objects; they read nothing and format no files
of their own (dcnprobe.report.comparison renders and plots)."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.bisect.search import BisectOutcome
from dcnprobe.harness.trials import TrialRunner
from dcnprobe.report.comparison import write_comparison
from dcnprobe.report.document import Block, Bullets, Heading, Paragraph
from dcnprobe.settings import format_value
from dcnprobe.sweep import SweepOutcome


def _how(runner: TrialRunner, command_line: str) -> list[str]:
    template = runner.template
    runs = "the built-in trainer" if template.command.builtin else f"`{template.command.text()}`"
    return [
        f"command: `{command_line}`",
        f"each trial runs {runs}: {template.epochs} epochs x {template.max_batches} batches, in its own process, "
        "stopped as soon as it is clearly slow; records, analysis and logs under `trials/`",
        f"trials run: {runner.ran}, reused from the cache: {runner.reused}",
    ]


def bisect_summary(outcome: BisectOutcome) -> list[Block]:
    blocks: list[Block] = [Paragraph(outcome.verdict)]
    facts = []
    if outcome.culprit:
        facts.append(f"culprit: `{' + '.join(outcome.culprit)}`")
    facts += [f"interaction: {text}" for text in outcome.interactions]
    if outcome.cause:
        facts.append(f"likely cause: **{outcome.cause}**")
        facts += [f"evidence: {e}" for e in outcome.evidence]
    if outcome.advice:
        facts.append(f"what to do: {outcome.advice}")
    facts += [f"not applied: `{name}` differs ({format_value(b)} / {format_value(g)}) but the command cannot be given "
              f"it (add `{{{name}}}` to the command)" for name, (b, g) in outcome.not_applied.items()]
    if facts:
        blocks.append(Bullets(facts))
    return blocks


def write_bisect_report(out: Path, outcome: BisectOutcome, runner: TrialRunner, command_line: str) -> tuple[Path, Path]:
    differences = ", ".join(f"`{k}`: {format_value(v[0])} (bad) / {format_value(v[1])} (good)"
                            for k, v in outcome.differences.items())
    how = _how(runner, command_line)
    how.insert(1, f"settings that differ: {differences or 'none'}")
    how.append(f"delta debugging asked about {outcome.evaluations} subsets (invalid combinations cost no trial); "
               f"the full factorial is {2 ** len(outcome.differences)} combinations")
    how.append(f"wall time: {outcome.wall_s:.0f} s")
    return write_comparison(out, "dcnprobe bisect", bisect_summary(outcome), runner.results, outcome.good,
                            [Heading("How this was found"), Bullets(how)])


def write_sweep_report(out: Path, outcome: SweepOutcome, runner: TrialRunner, command_line: str) -> tuple[Path, Path]:
    summary: list[Block] = [Paragraph(outcome.summary())]
    if outcome.invalid:
        summary.append(Bullets([f"cannot run: `{' '.join(f'{k}={v}' for k, v in i['settings'].items())}`: {i['reason']}"
                                for i in outcome.invalid]))
    return write_comparison(out, "dcnprobe sweep", summary, outcome.trials, outcome.base,
                            [Heading("How this was run"), Bullets(_how(runner, command_line))], shown=tuple(outcome.vary))
