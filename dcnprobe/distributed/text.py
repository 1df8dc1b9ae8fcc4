"""The plain-text report of a distributed run's analysis, as `dcnprobe analyze RUN` prints
it: the verdict, a table of every rank (epoch 1 against the compared epoch), the
straggler's evidence and its own causes, what to do. Takes the result, reads no file."""

from __future__ import annotations

from dcnprobe.analysis import advice_lines
from dcnprobe.distributed.analysis import RanksAnalysis


def report_lines(result: RanksAnalysis) -> list[str]:
    j = result.judgement
    lines = [result.verdict, ""]
    lines += _table(result)
    for rank in j.stragglers:
        lines += ["", f"rank {rank} holds the others back (score {j.changes[rank].score:.2f}):"]
        lines += [f"  - {line}" for line in result.straggler_evidence(rank)]
    for rank in result.explains:
        lines += ["", f"rank {rank}'s own time (less collective wait), causes most likely first:"]
        for finding in result.own[rank].causes:
            lines.append(f"  {finding.id} (score {finding.score:.2f})")
            lines += [f"    - {line}" for line in finding.evidence]
    advice = {cause: text for rank in result.explains for cause, text in advice_lines(result.own[rank])}
    if advice and j.kind != "not-slow":
        lines += ["", "what to do:"] + [f"  {cause}: {text}" for cause, text in advice.items()]
        lines.append("  (every cause, its signals and references: docs/causes.md)")
    return lines


def _table(result: RanksAnalysis) -> list[str]:
    j = result.judgement
    if j.compared_epoch is None:
        heading = "per rank, median per batch:"
        rows = [(str(r), result.ranks.infos[r].host or "-", result.ranks.end(r).status,
                 *(_ms(getattr(e, f)) for e in result.summaries[r][:1]
                   for f in ("median_batch_s", "median_collective_s", "median_compute_s", "median_data_wait_s")),
                 "-", "-") for r in result.ranks.ranks if result.summaries[r]]
    else:
        heading = f"per rank, epoch {j.baseline_epoch} -> epoch {j.compared_epoch}, median per batch:"
        rows = []
        for r in result.ranks.ranks:
            c = j.changes[r]
            rows.append((str(r), result.ranks.infos[r].host or "-", result.ranks.end(r).status,
                         _pair(c.total), _pair(c.collective), _pair(c.compute), _pair(c.data_wait),
                         f"{_ms(c.held_before_s)} -> {_ms(c.held_after_s)}", f"{c.score:.2f}"))
    head = ("rank", "host", "status", "batch", "collective", "compute", "data wait", "others wait for it",
            "score")
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    return [heading] + ["  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
                        for row in (head, *rows)]


def _pair(shift) -> str:
    return f"{_ms(shift.before)} -> {_ms(shift.after)}" + (" *" if shift.significant else "")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
