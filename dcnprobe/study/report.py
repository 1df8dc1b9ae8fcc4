"""The study report in the seed report's terms: the comparison table with means over
seeds, paired deltas, the success criteria per preset, plots, every trial with its speed
verdict; and study.json with the same numbers. Builders take data; they read no files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dcnprobe.report.document import Bullets, Document, Heading, Image, Paragraph, Table, write
from dcnprobe.study import plots
from dcnprobe.study.plan import describe
from dcnprobe.study.run import MEASURED, StudyRun, describe_outcome
from dcnprobe.study.stats import Estimate
from dcnprobe.study.summary import Check, StudySummary

STUDY_FILE = "study.json"
HYPERPARAMS = (("dropout", "Dropout"), ("weight_decay", "Weight decay"), ("label_smoothing", "Label smoothing"),
               ("learning_rate", "Learning rate"))
METRIC_NAMES = {"val_auc": "val AUC", "gate_mean": "gate mean"}


def fmt(e: Estimate | None, digits: int = 4) -> str:
    """'0.5814 ± 0.0021 [0.5788, 0.5840]': mean ± std over seeds [95% t-interval]."""
    if e is None:
        return "-"
    text = f"{e.mean:.{digits}f}"
    if e.std is not None:
        text += f" ± {e.std:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"
    return text


def signed(e: Estimate | None) -> str:
    if e is None:
        return "-"
    if e.std is None:
        return f"{e.mean:+.4f}"
    return f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"


def comparison_table(summary: StudySummary) -> Table:
    presets = summary.presets
    rows = [
        ["Best val AUC", *(fmt(p.at_best["val_auc"]) for p in presets)],
        ["Best epoch", *(", ".join(f"E{e}: {n}" for e, n in p.best_epochs.items()) or "-" for p in presets)],
        ["Train AUC @ best", *(fmt(p.at_best["train_auc"]) for p in presets)],
        ["Gap @ best", *(fmt(p.at_best["gap"]) for p in presets)],
        ["Gate mean @ best", *(fmt(p.at_best["gate_mean"]) for p in presets)],
        ["Gate range @ best", *(f"[{p.gate_range[0]:.4f}, {p.gate_range[1]:.4f}]" if p.gate_range else "-"
                                for p in presets)],
        ["Train loss @ best", *(fmt(p.at_best["train_loss"]) for p in presets)],
        ["Val loss @ best", *(fmt(p.at_best["val_loss"]) for p in presets)],
        ["Seeds in the statistics", *(str(len(p.seeds)) for p in presets)],
    ]
    for key, name in HYPERPARAMS:
        rows.append([name, *(f"{p.hyperparams[key]:g}" if key in p.hyperparams else "-" for p in presets)])
    return Table(["Metric", *(p.preset for p in presets)], rows)


def deltas_table(summary: StudySummary) -> Table:
    rows = [[f"{METRIC_NAMES[d.metric]}: {d.other} − {d.base}", str(len(d.differences)), signed(d.estimate),
             ", ".join(f"{seed}: {v:+.4f}" for seed, v in d.differences.items())] for d in summary.deltas]
    return Table(["delta (paired by seed)", "seeds", "mean [95% t-interval]", "per seed"], rows)


def criteria_table(summary: StudySummary) -> Table:
    rows = []
    for preset, checks in summary.checks.items():
        for c in checks:
            rows.append([preset, c.criterion, c.target, c.value, _mark(c)])
    return Table(["preset", "criterion", "target", "value (mean ± std)", "met"], rows)


def verdicts(summary: StudySummary) -> list[str]:
    lines = []
    for preset, checks in summary.checks.items():
        judged = [c for c in checks if c.passed is not None]
        failed = [c.criterion for c in judged if not c.passed]
        lines.append(f"**{preset}**: " + (f"meets all {len(judged)} judged criteria" if not failed
                                          else f"misses {len(failed)} of {len(judged)}: {'; '.join(failed)}"))
    return lines


def trial_table(study: StudyRun) -> Table:
    rows = []
    for t in study.trials:
        r, best = t.result, t.metrics.best
        ratio = f"{r.ratio:.2f} ({r.ratio_ci[0]:.2f}-{r.ratio_ci[1]:.2f})" if r.ratio is not None and r.ratio_ci else "-"
        reuse = ("cached" if t.outcome.cached else f"resumed after epoch {t.outcome.resumed_from}"
                 if t.outcome.resumed_from else "ran")
        rows.append([t.trial.preset, str(t.trial.seed), f"**{r.status}**", ratio, r.cause or "-",
                     f"{len(t.metrics.epochs)}/{study.config.epochs}", str(best["epoch"]) if best else "-",
                     f"{best['val_auc']:.4f}" if best else "-", reuse, r.stopped or r.error or ""])
    return Table(["preset", "seed", "speed verdict", "later/epoch-1 batch time (95% CI)", "top cause", "epochs",
                  "best epoch", "best val AUC", "reuse", "notes"], rows)


def build_document(study: StudyRun, summary: StudySummary, images: Sequence[Image], command_line: str) -> Document:
    doc = Document("dcnprobe study")
    excluded = [f"{p.preset} seed {seed}: {why}" for p in summary.presets for seed, why in p.excluded.items()]
    slow = [t for t in study.trials if t.result.status not in MEASURED]
    doc.add(Bullets(verdicts(summary)))
    if slow:
        doc.add(Paragraph(f"{len(slow)} trial(s) did not run cleanly: "
                          + "; ".join(f"{t.trial.label}: {describe_outcome(t.outcome)}" for t in slow)))
    doc.add(Heading("Comparison"),
            Paragraph("Mean ± sample standard deviation over seeds, with the two-sided 95% Student-t interval "
                      "for the mean in brackets; each seed's metrics are taken at its best epoch (highest val "
                      "AUC). Gap = train AUC − val AUC, as the report defines it."),
            comparison_table(summary))
    if excluded:
        doc.add(Paragraph("Not in the statistics (incomplete metrics): " + "; ".join(excluded) + "."))
    doc.add(Heading("Deltas between presets"),
            Paragraph("Each seed's value under one preset minus the same seed's under the other (same data order "
                      "and initialisation seed); mean with its 95% t-interval over the paired differences."),
            deltas_table(summary))
    doc.add(Heading("Success criteria"),
            Paragraph("The seed report's criteria, judged on the mean over seeds (with how many seeds meet each). "
                      "The report ticks a gap of −0.0549 as healthy against a 0.03-0.12 target, calling a negative "
                      "gap good generalization; a negative gap counts as healthy here too unless "
                      "`--no-negative-gap-ok`. The report names no gate target: give `--gate-range` to judge it."),
            criteria_table(summary))
    doc.add(Heading("Plots"), *images)
    doc.add(Heading("Trials"),
            Paragraph("Every (preset, seed) ran in its own process, watched by the probe and stopped as soon as a "
                      "later epoch was clearly slower than epoch 1; a stopped trial is listed with its verdict and "
                      "left out of the statistics."),
            trial_table(study))
    doc.add(Heading("How this was run"), Bullets([
        f"command: `{command_line}`", *describe(study.config),
        f"executor: {study.executor}; trials run: {study.ran}, reused from the cache: {study.cached}, "
        f"epochs reused (cached trials and checkpoints): {study.epochs_reused}",
        f"wall time: {study.wall_s:.0f} s",
    ]))
    return doc


def plot_images(out: Path, summary: StudySummary) -> list[Image]:
    folder = out / "plots"
    auc = plots.per_epoch(summary.presets, "val_auc", "val AUC", "Val AUC per epoch: mean over seeds, band from "
                          "lowest to highest seed", folder / "val_auc.png", target=summary.criteria.min_val_auc)
    gate = plots.per_epoch(summary.presets, "gate_mean", "gate mean (DCNv3 share)", "Gate mean per epoch on "
                           "validation data: mean over seeds, band from lowest to highest", folder / "gate_mean.png")
    return [Image(auc.relative_to(out), "Val AUC per epoch per preset (dashed: the report's 0.575 target)"),
            Image(gate.relative_to(out), "Gate mean per epoch per preset")]


def study_json(study: StudyRun, summary: StudySummary, command_line: str) -> dict[str, Any]:
    return {
        "command_line": command_line,
        "config": {**asdict(study.config), "settings": study.config.settings.to_dict()},
        "interval": "two-sided 95% Student-t interval for the mean over seeds; std is the sample std (n-1)",
        "presets": [{
            "preset": p.preset, "hyperparams": p.hyperparams, "seeds": p.seeds,
            "excluded": {str(k): v for k, v in p.excluded.items()},
            "at_best": {m: e.to_json() if e else None for m, e in p.at_best.items()},
            "per_seed_at_best": {m: {str(s): v for s, v in values.items()} for m, values in p.per_seed.items()},
            "best_epochs": {str(k): v for k, v in p.best_epochs.items()},
            "best_epoch_median": p.best_epoch_median,
            "gate_range": list(p.gate_range) if p.gate_range else None,
            "last_epoch_gap": p.last_gap.to_json() if p.last_gap else None,
        } for p in summary.presets],
        "deltas": [{"metric": d.metric, "base": d.base, "other": d.other,
                    "differences": {str(k): v for k, v in d.differences.items()},
                    "estimate": d.estimate.to_json() if d.estimate else None} for d in summary.deltas],
        "criteria": {preset: [asdict(c) for c in checks] for preset, checks in summary.checks.items()},
        "trials": [{"preset": t.trial.preset, "seed": t.trial.seed, **t.result.report_json(),
                    "cached": t.outcome.cached, "resumed_from": t.outcome.resumed_from,
                    "epochs_done": len(t.metrics.epochs),
                    "best_epoch": t.metrics.best["epoch"] if t.metrics.best else None,
                    "epochs": t.metrics.epochs} for t in study.trials],
        "trials_run": study.ran,
        "trials_cached": study.cached,
        "epochs_reused": study.epochs_reused,
        "executor": study.executor,
        "wall_s": study.wall_s,
    }


def write_study_report(out: Path, study: StudyRun, summary: StudySummary, command_line: str) -> tuple[Path, Path, Path]:
    document = study_json(study, summary, command_line)
    path = out / STUDY_FILE
    path.write_text(json.dumps(document, indent=2))
    md, html = write(build_document(study, summary, plot_images(out, summary), command_line), out)
    return path, md, html


def _mark(c: Check) -> str:
    return "n/a" if c.passed is None else ("**yes**" if c.passed else "**no**")

