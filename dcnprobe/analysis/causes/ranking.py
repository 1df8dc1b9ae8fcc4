"""Ranking findings: which causes explain others, and the order a reader sees them in.

Rules only say what they see. What one finding means for another is decided here, in one
table, PRECEDENCE: every cause once, in the order that breaks ties between equal scores,
each with the causes it explains (when both are found, only the first is reported).

Then the tiers: outside load that explains the timing comes before every cause read from
timing, whatever the scores (the user's code must not be blamed for another process's
CPU); findings that outside load cannot produce (timing_free: retained memory, open
files, device allocators) keep their place ahead of it, since on a busy machine they are
the part of the measurements that still holds.
"""

from __future__ import annotations

from pathlib import Path

from dcnprobe.analysis.causes.registry import CAUSES, Finding, register_unruled
from dcnprobe.analysis.causes.wording import ratio_text
from dcnprobe.analysis.signals import Signals

register_unruled("none", sees="no slowdown, and nothing unusual in memory, GC, threads or outside load.",
                 fix="nothing to fix", reference="-")

PRECEDENCE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stall", ()),
    ("machine-contention", ()),
    ("graph-retention", ()),
    # The retained memory has run out: it now costs time, and pages are read back.
    ("memory-pressure", ("graph-retention",)),
    ("metric-accumulation", ()),
    # The extra time comes in spikes at a period, not from a history re-read every step.
    ("periodic-work", ("metric-accumulation",)),
    ("gc-pressure", ()),
    ("worker-memory-growth", ()),
    ("worker-respawn", ()),
    ("thread-oversubscription", ()),
    ("device-allocator-retention", ()),
    ("allocator-fragmentation", ()),
    ("cache-clearing-cost", ()),
    ("shape-cache", ()),
    ("fd-leak", ()),
    ("thermal-throttling", ()),
)
ORDER = {cause: place for place, (cause, _) in enumerate(PRECEDENCE)}
EXPLAINED_BY = {explained: cause for cause, explains in PRECEDENCE for explained in explains}


def rank(signals: Signals, run_dir: Path | None = None) -> list[Finding]:
    findings = [f for cause in CAUSES.values() if cause.rule
                if (f := cause.rule(signals, run_dir)) is not None and f.score > 0]
    found = {f.id for f in findings}
    findings = [f for f in findings if EXPLAINED_BY.get(f.id) not in found]
    findings.sort(key=lambda f: (-_tier(f, signals), -f.score, ORDER[f.id]))
    return findings or [Finding("none", 1.0, (_no_cause_evidence(signals),))]


def _tier(finding: Finding, signals: Signals) -> int:
    if finding.timing_free:
        return 2
    return 1 if finding.id == "machine-contention" and signals.contention_explains else 0


def _no_cause_evidence(s: Signals) -> str:
    if s.timing.ratio is None:
        return "nothing stands out in the measurements"
    if s.slowdown:
        return f"{ratio_text(s)}; no rule matched the measurements"
    return f"no slowdown: {ratio_text(s)}; memory and GC show nothing unusual"
