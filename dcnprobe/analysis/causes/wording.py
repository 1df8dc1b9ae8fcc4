"""How findings put measurements into words, the same way in every rule."""

from __future__ import annotations

from dcnprobe.analysis.formatting import format_ratio
from dcnprobe.analysis.signals import Signals
from dcnprobe.analysis.thresholds import MB


def mb(n: float) -> str:
    return f"{n / MB:,.0f} MB" if abs(n) >= 10 * MB else f"{n / MB:,.1f} MB"


def ratio_text(s: Signals) -> str:
    t = s.timing
    if t.ratio is None:
        return "only one epoch was measured"
    low, high = t.ratio_ci
    return f"epoch {t.compared_epoch}/epoch 1 {t.ratio_stat} batch time {format_ratio(t.ratio, low, high, t.confidence)}"


def shape_text(s: Signals) -> str:
    """How the batch time moved, in words that match the data: a change point says which
    way, and 'stayed up' only where the end of the run is still up."""
    change, where = s.trend.change, s.trend.change_epoch_batch
    if change is not None and where is not None:
        epoch, batch = where
        if change.kind == "ramp":
            return f"batch time starts rising at epoch {epoch}, batch {batch}"
        levels = f"{change.before * 1000:.0f} -> {change.after * 1000:.0f} ms median"
        if change.direction == "up" and s.trend.change_stayed:
            return f"batch time jumped at epoch {epoch}, batch {batch} and stayed up ({levels})"
        if change.direction == "up":
            return f"batch time jumped at epoch {epoch}, batch {batch} ({levels}), and came back down by the end"
        return f"batch time fell at epoch {epoch}, batch {batch} ({levels})"
    trend = s.trend.time_trend
    if trend is not None and trend.per_step > 0:
        return f"batch time rises steadily with every step: +{trend.per_step * 100 * 1000:.1f} ms per 100 batches"
    return "batch time is higher in the later epoch"
