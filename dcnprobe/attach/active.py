"""The attach agent of this process, if any, and what a script or the Probe API may tell it.

Kept apart from the agent so that `dcnprobe.mark_epoch` and the Probe import nothing of
the agent's machinery when no launcher attached one.
"""

from __future__ import annotations

from typing import Any

_agent: Any = None


def set_agent(agent: Any) -> None:
    global _agent
    _agent = agent


def current() -> Any:
    return _agent


def mark_epoch() -> None:
    """End the current epoch here: for loops with no DataLoader, whose epochs the attach
    cannot see. One line in the script; a no-op when the probe is not attached."""
    if _agent is not None:
        _agent.mark_epoch()
