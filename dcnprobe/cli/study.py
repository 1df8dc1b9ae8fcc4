"""`dcnprobe study`: presets x seeds of the built-in trainer, in the seed report's terms."""

from __future__ import annotations

from pathlib import Path

import click

from dcnprobe.bisect.search import resolve_auto
from dcnprobe.cli import interruption, train
from dcnprobe.cli.executors import ray_option
from dcnprobe.cli.options import (
    epochs_option,
    max_batches_option,
    out_option,
    stall_after_option,
    trial_budget_option,
)
from dcnprobe.cli.progress import ProgressLine
from dcnprobe.cli.trials import command_line
from dcnprobe.errors import UsageError
from dcnprobe.harness.executor import TrialResources, make_executor
from dcnprobe.harness.runner import DEFAULT_STALL_AFTER_S
from dcnprobe.ratios import DEFAULT_THRESHOLD
from dcnprobe.settings import Settings
from dcnprobe.study import StudyConfig, parse_presets, parse_seeds, plan, run_study, summarize_study
from dcnprobe.study.plan import DEFAULT_PRESETS, Criteria
from dcnprobe.study.report import verdicts, write_study_report
from dcnprobe.study.run import DEFAULT_STUDY_BUDGET_S

DEFAULTS = Criteria()


def _pair(text: str, name: str, kind=float) -> tuple:
    parts = text.replace("-", ",", 1).split(",") if kind is int else text.split(",")
    try:
        low, high = (kind(p) for p in parts)
    except ValueError:
        raise UsageError(f"{name} expects LOW,HIGH, got {text!r}") from None
    if low > high:
        raise UsageError(f"{name}: {low} is above {high}")
    return low, high


@click.command("study")
@click.option("--presets", default=",".join(DEFAULT_PRESETS), show_default=True, help="presets to compare, comma-separated")
@click.option("--seeds", default="5", show_default=True,
              help="a count (seeds from 42, the report's) or a comma-separated list of seeds")
@epochs_option("epochs per trial (the report's 5, as in dcnprobe train; a study compares accuracy, "
               "not epoch times, so 1 is enough to run)", default=5, show_default=True)
@max_batches_option("batches per epoch [default: the whole training split]")
@click.option("--data", default="synthetic", show_default=True, help="as for dcnprobe train")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="rows per batch [default: 4096]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, mps, cuda or cuda:N")
@click.option("--trial-cpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="intra-op threads of each trial, and the CPUs it asks of Ray (the same under every executor, "
                   "so where a trial runs does not change its numbers)")
@click.option("--min-val-auc", type=float, default=DEFAULTS.min_val_auc, show_default=True,
              help="criterion: best val AUC at least this")
@click.option("--gap-range", default=f"{DEFAULTS.gap_low:g},{DEFAULTS.gap_high:g}", show_default=True,
              metavar="LOW,HIGH", help="criterion: a healthy train-val gap (train AUC - val AUC) at the best epoch")
@click.option("--negative-gap-ok/--no-negative-gap-ok", default=DEFAULTS.negative_gap_ok, show_default=True,
              help="count a negative gap as healthy, as the report does ('good generalization')")
@click.option("--best-epochs", default=f"{DEFAULTS.best_epoch_low}-{DEFAULTS.best_epoch_high}", show_default=True,
              metavar="LOW-HIGH", help="criterion: where the median best epoch should land")
@click.option("--gate-range", default=None, metavar="LOW,HIGH",
              help="criterion: gate mean at the best epoch [default: not judged; the report names no target]")
@click.option("--threshold", type=click.FloatRange(min=1.0), default=DEFAULT_THRESHOLD, show_default=True,
              help="a trial is stopped as slow when a later epoch is clearly slower than this x epoch 1")
@trial_budget_option(DEFAULT_STUDY_BUDGET_S, " (longer than bisect's: a study trial trains whole epochs, "
                                             "and a slowdown stops it long before)")
@stall_after_option(DEFAULT_STALL_AFTER_S)
@click.option("--retry-failed", is_flag=True,
              help="run again (from their last checkpoint) trials an earlier run recorded as slow, stalled or crashed")
@out_option(Path("runs/study"), "report, study.json and the trials; run again to resume")
@ray_option(packs=True)
def command(presets: str, seeds: str, epochs: int, max_batches: int | None, data: str, batch_size: int | None,
            device: str, trial_cpus: int, min_val_auc: float, gap_range: str, negative_gap_ok: bool, best_epochs: str,
            gate_range: str | None, threshold: float, trial_budget: float, stall_after: float, retry_failed: bool,
            out: Path, ray_address: str | None) -> None:
    """Train every preset with every seed and compare them as the seed report does.

    Each (preset, seed) is a trial in its own process, watched by the probe: a trial that
    slows down is stopped and reported with its verdict (not retried; --retry-failed
    does, on a later run). Trials keep a checkpoint per epoch: run the same command
    again after an interruption and it continues where it stopped. Writes
    OUT/study.json, OUT/report.md, OUT/report.html and OUT/plots/.

    Example: dcnprobe study --presets phase1,phase3-revised --seeds 3 --epochs 3 --max-batches 50
    """

    gap_low, gap_high = _pair(gap_range, "--gap-range")
    best_low, best_high = _pair(best_epochs, "--best-epochs", int)
    gate_low, gate_high = _pair(gate_range, "--gate-range") if gate_range else (None, None)
    criteria = Criteria(min_val_auc, gap_low, gap_high, negative_gap_ok, best_low, best_high, gate_low, gate_high)
    changes = {"device": device, "threads": trial_cpus, **({"batch_size": batch_size} if batch_size else {})}
    settings = resolve_auto(Settings().with_changes(changes))
    config = StudyConfig(parse_presets(presets), parse_seeds(seeds), epochs, max_batches, data, settings, criteria)
    trials = plan(config, lambda preset: train.builtin_command(preset, data))  # checks presets and data first

    line = ProgressLine()

    def report(text: str) -> None:
        line.clear()
        click.echo(text)

    gpus = 1.0 if settings.device.startswith("cuda") else 0.0
    executor = make_executor(ray_address, TrialResources(cpus=trial_cpus, gpus=gpus))
    interruption.keep(f"every finished trial and each running trial's last checkpoint, under {out}; "
                      "the same command again continues from them")
    click.echo(f"study: {len(config.presets)} presets x {len(config.seeds)} seeds = {len(trials)} trials, "
               f"{epochs} epochs x {max_batches or 'all'} batches, on {executor.name} -> {out}")
    try:
        study = run_study(config, trials, out, executor, threshold=threshold, budget_s=trial_budget,
                          stall_after_s=stall_after, retry_failed=retry_failed, report=report, on_progress=line.show)
    finally:
        executor.close()
    line.clear()
    summary = summarize_study(study.runs, config.presets, criteria, epochs)
    path, md, html = write_study_report(out, study, summary, command_line())
    click.echo("")
    for text in verdicts(summary):
        click.echo(text.replace("**", ""))
    click.echo(f"trials run: {study.ran}, cached: {study.cached}, epochs reused: {study.epochs_reused}; "
               f"wall time {study.wall_s:.0f} s")
    click.echo(f"\nwritten: {path}, {md}, {html}")
