"""Slowdown scenarios (placeholder registry until the scenarios land)."""

from __future__ import annotations

from collections.abc import Sequence

from dcnprobe.errors import UsageError


def resolve_faults(names: Sequence[str]) -> list:
    if names:
        raise UsageError(f"unknown fault(s): {', '.join(names)}")
    return []
