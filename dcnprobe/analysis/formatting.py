"""How a ratio and its confidence interval are written, everywhere the toolkit writes one."""

from __future__ import annotations


def format_interval(low: float, high: float, confidence: float) -> str:
    """'95% CI 1.14-1.49'. `confidence` is a fraction (0.95) or a percentage (95)."""
    percent = confidence * 100 if confidence <= 1 else confidence
    return f"{percent:g}% CI {low:.2f}-{high:.2f}"


def format_ratio(ratio: float, low: float | None, high: float | None, confidence: float) -> str:
    """'1.31x (95% CI 1.14-1.49)', or '1.31x' when there is no interval."""
    if low is None or high is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x ({format_interval(low, high, confidence)})"
