"""The comparison report of a bisect or a sweep: the verdict, the table of trials, and
plots of every trial's batch times, memory and phases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dcnprobe.errors import UsageError
from dcnprobe.harness.runner import TrialResult
from dcnprobe.harness.trials import describe_settings
from dcnprobe.report import plots
from dcnprobe.report.document import Block, Document, Heading, Image, Table, write
from dcnprobe.runs import read_run
from dcnprobe.settings import Settings, format_value

MAX_PANELS = 12


def trial_table(results: Sequence[TrialResult], reference: Settings | None, shown: Sequence[str] = ()) -> Table:
    rows = []
    for number, r in enumerate(results, 1):
        settings = Settings.from_dict(r.settings)
        ratio = f"{r.ratio:.2f} ({r.ratio_ci[0]:.2f}-{r.ratio_ci[1]:.2f})" if r.ratio is not None and r.ratio_ci else "-"
        epochs = ", ".join(f"{s:.1f}" for s in r.epoch_s) or "-"
        load = ", ".join(f"{v:.0%}" for _, v in sorted(r.outside_load.items())) or "-"
        notes = [r.stopped or r.error or ""]
        if r.spec.get("replicate"):
            notes.insert(0, "a fresh run of settings already measured (a close call, or confirming the culprit).")
        # The run's own header says what ran; it wins over the request where they differ
        # (a planted fault may change a setting inside the trial).
        differs = {k: v for k, v in r.ran.items() if k in r.settings and v != r.settings[k]}
        if differs:
            notes.append("ran with " + ", ".join(f"{k}={format_value(v)}" for k, v in differs.items()))
        rows.append([str(number), f"`{describe_settings(settings, reference, shown)}`", f"**{r.status}**", epochs, ratio,
                     load, r.cause or "-", " ".join(n for n in notes if n)])
    return Table(["#", "settings", "status", "epoch batch time, s", "ratio to epoch 1 (95% CI)",
                  "outside CPU load per epoch", "top cause", "notes"], rows)


def plot_blocks(out: Path, results: Sequence[TrialResult], reference: Settings | None,
                shown: Sequence[str] = ()) -> list[Block]:
    panels, seen = [], set()
    for number, r in enumerate(results, 1):
        if r.key in seen or not r.run_dir:
            continue
        seen.add(r.key)
        try:
            run = read_run(r.run_dir)
        except UsageError:
            continue
        title = f"#{number} {describe_settings(Settings.from_dict(r.settings), reference, shown)}"
        panels.append(plots.Panel(title, run))
    panels = panels[:MAX_PANELS]
    if not panels:
        return []
    folder = out / "plots"
    return [
        Image(plots.batch_times(panels, folder / "batch_times.png").relative_to(out),
              "Per-batch time of every trial; a slow trial's later epoch sits above its first"),
        Image(plots.memory_timelines(panels, folder / "memory.png").relative_to(out),
              "Memory over time: main process, DataLoader workers, device and swap"),
        Image(plots.phase_breakdown(panels, folder / "phases.png").relative_to(out),
              "Median time per phase and epoch: the phase that grew is where the slowdown lives"),
    ]


def write_comparison(out: Path, title: str, summary: Sequence[Block], results: Sequence[TrialResult],
                     reference: Settings | None, details: Sequence[Block] = (),
                     shown: Sequence[str] = ()) -> tuple[Path, Path]:
    doc = Document(title)
    doc.add(*summary)
    doc.add(Heading("Trials"), trial_table(results, reference, shown))
    doc.add(Heading("Plots"), *plot_blocks(out, results, reference, shown))
    doc.add(*details)
    return write(doc, out)
