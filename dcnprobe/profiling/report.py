"""profile.md: epoch N against epoch 1, tool by tool, with a link to every artefact."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.profiling import memray_capture
from dcnprobe.profiling.compare import function_growth, growth
from dcnprobe.profiling.flamegraph import parse_collapsed, to_svg, write_speedscope
from dcnprobe.profiling.session import Profiles
from dcnprobe.report.document import Bullets, Document, Heading, Paragraph, Table, to_markdown
from dcnprobe.runs import Run

MB = 1 << 20


def _link(path: Path | None, out: Path) -> str:
    return f"[{path.name}]({path.relative_to(out).as_posix()})" if path else "-"


def build(profiles: Profiles, run: Run, out: Path, target: int, baseline: int | None) -> Path:
    """Write OUT/profile.md from what the profiler produced (artefacts under OUT/profiles)."""
    epochs = [e for e in (baseline, target) if e is not None]
    doc = Document(f"Profile of epoch {target}" + (f" against epoch {baseline}" if baseline else ""))
    doc.add(Paragraph(_timing(run, target, baseline)))
    if profiles.unavailable:
        doc.add(Bullets([f"not run: {message}" for message in profiles.unavailable.values()]))
    produced = profiles.artefacts
    _pyspy(doc, produced, epochs, out, target, baseline)
    _memray(doc, produced, epochs, out, target, baseline)
    _torch(doc, produced, epochs, out, target, baseline)
    path = out / "profile.md"
    path.write_text(to_markdown(doc))
    return path


def _timing(run: Run, target: int, baseline: int | None) -> str:
    medians = run.batches.groupby("epoch")["total"].median() if not run.batches.empty else {}
    if target not in medians:
        return "No batches were recorded for the profiled epoch."
    text = f"Median batch time in epoch {target}: {medians[target] * 1000:.0f} ms"
    if baseline in medians:
        text += (f"; epoch {baseline}: {medians[baseline] * 1000:.0f} ms "
                 f"({medians[target] / medians[baseline]:.2f}x). Both epochs ran under the same profilers.")
    return text + " Run record: [run.jsonl](run.jsonl)."


def _pyspy(doc, produced, epochs, out, target, baseline) -> None:
    stacks = {}
    links = []
    for epoch in epochs:
        raw = produced.get(epoch, {}).get("pyspy")
        if raw is None:
            continue
        stacks[epoch] = parse_collapsed(raw.read_text())
        svg = raw.with_name(f"epoch{epoch}-pyspy.svg")
        svg.write_text(to_svg(stacks[epoch], f"py-spy, epoch {epoch}: training process and DataLoader workers"))
        speedscope = raw.with_name(f"epoch{epoch}-pyspy.speedscope.json")
        write_speedscope(stacks[epoch], f"epoch {epoch}", speedscope)
        links.append(f"epoch {epoch}: {_link(svg, out)} (flame graph), {_link(speedscope, out)} (speedscope), "
                     f"{_link(raw, out)} (collapsed stacks)")
    if not stacks:
        return
    doc.add(Heading("py-spy: where the time went"), Bullets(links))
    if target in stacks and baseline in stacks:
        rows = function_growth(stacks[baseline], stacks[target])
        doc.add(Paragraph(f"Functions whose share of samples grew most from epoch {baseline} to epoch {target} "
                          "(inclusive: a function counts when it is anywhere on the stack):"),
                Table(["function", f"epoch {baseline}", f"epoch {target}", "change"],
                      [[f"`{f}`", f"{a:.1%}", f"{b:.1%}", f"+{(b - a) * 100:.1f} pp"] for f, a, b in rows]))


def _memray(doc, produced, epochs, out, target, baseline) -> None:
    captures = {e: produced[e]["memray"] for e in epochs if produced.get(e, {}).get("memray")}
    if not captures:
        return
    links, leaked = [], {}
    for epoch, capture in captures.items():
        made = memray_capture.reports(capture)
        links.append(f"epoch {epoch}: " + ", ".join(f"{_link(path, out)} ({name})" for name, path in made.items())
                     + f", {_link(capture, out)} (capture)")
        leaked[epoch] = memray_capture.allocation_sites(capture, leaked=True)
    doc.add(Heading("memray: which allocations grew"), Bullets(links))
    epoch = target if target in leaked else next(iter(leaked))
    before = leaked.get(baseline, {}) if baseline in leaked else None
    held = sorted(leaked[epoch].items(), key=lambda item: item[1], reverse=True)
    rows = [(site, (before or {}).get(site, 0.0), size) for site, size in held if size >= 1 << 16][:12]
    doc.add(Paragraph("Memory allocated during the epoch and still held at its end, by the line of the "
                      "program that asked for it: memory that accumulates batch after batch shows up here, "
                      "with the same amount in every epoch it lasts:"),
            _bytes_table(rows, baseline if before is not None else None, epoch, change=False))
    if target in captures and baseline in captures:  # a full pass over each capture: only when compared
        peak = {e: memray_capture.allocation_sites(captures[e], leaked=False) for e in (baseline, target)}
        rows = growth(peak[baseline], peak[target], minimum=1 << 16)
        doc.add(Paragraph(f"Allocation sites whose share of each epoch's peak memory grew from epoch {baseline} "
                          f"to epoch {target}:"), _bytes_table(rows, baseline, target))


def _bytes_table(rows, baseline, target, change: bool = True) -> Table | Paragraph:
    if not rows:
        return Paragraph("(no site above 64 KB)")
    if baseline is None:
        return Table(["site", f"epoch {target}"], [[f"`{s}`", f"{b / MB:,.1f} MB"] for s, _, b in rows])
    header = ["site", f"epoch {baseline}", f"epoch {target}"] + (["change"] if change else [])
    return Table(header, [[f"`{s}`", f"{a / MB:,.1f} MB", f"{b / MB:,.1f} MB"]
                          + ([f"{(b - a) / MB:+,.1f} MB"] if change else []) for s, a, b in rows])


def _torch(doc, produced, epochs, out, target, baseline) -> None:
    captures = {e: produced[e]["torch"] for e in epochs if produced.get(e, {}).get("torch")}
    if not captures:
        return
    links = [f"epoch {e}: " + ", ".join(f"{_link(p, out)} ({name})" for name, p in c.files.items())
             for e, c in captures.items()]
    doc.add(Heading("torch.profiler: operators"), Bullets(links + ["traces open in https://ui.perfetto.dev"]))
    if target in captures and baseline in captures:
        rows = growth(captures[baseline].operators, captures[target].operators, minimum=1.0)
        doc.add(Paragraph(f"Operators whose self CPU time per batch grew most from epoch {baseline} to epoch {target}:"),
                Table(["operator", f"epoch {baseline}, us/batch", f"epoch {target}, us/batch", "change"],
                      [[f"`{k}`", f"{a:,.0f}", f"{b:,.0f}", f"+{b - a:,.0f}"] for k, a, b in rows]))
