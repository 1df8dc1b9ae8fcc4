"""What changed between the baseline epoch and the profiled one, per profiler."""

from __future__ import annotations

from collections.abc import Mapping

from dcnprobe.profiling.flamegraph import Stacks, function_shares

IGNORED_FRAMES = ("process ", "<module>", "_bootstrap", "Thread.run")


def function_growth(baseline: Stacks, later: Stacks, top: int = 12) -> list[tuple[str, float, float]]:
    """(function, share in baseline, share later), largest growth of share first."""
    after = {f: share for f, share in function_shares(later).items() if not f.startswith(IGNORED_FRAMES)}
    return growth(function_shares(baseline), after, top)


def growth(baseline: Mapping[str, float], later: Mapping[str, float], top: int = 12,
           minimum: float = 0.0) -> list[tuple[str, float, float]]:
    """(key, baseline value, later value) for the keys that grew most (sites, operators)."""
    keys = set(baseline) | set(later)
    rows = [(k, baseline.get(k, 0.0), later.get(k, 0.0)) for k in keys]
    rows.sort(key=lambda r: r[2] - r[1], reverse=True)
    return [r for r in rows if r[2] - r[1] > minimum][:top]
