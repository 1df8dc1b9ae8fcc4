"""Regression thresholds written as strings, and the check that applies them.

Two forms, as in pytest-benchmark's --benchmark-compare-fail:
    "<= 1.10"      an absolute bound on the measure (also <, >=, >)
    "median:10%"   at most 10 % above the same measure in a reference results file
A failure message names the measure, its value and the threshold.

A measure that comes with a confidence interval is judged on the interval, not on its
point value (`Threshold.judge`): it passes only when the whole interval passes, fails
only when the whole interval fails, and is "unsure" when the interval straddles the
limit. A point ratio near the limit flips with noise; an interval says when it cannot
tell, and the runner then measures again instead of guessing.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

_BOUND = re.compile(r"^\s*(<=|<|>=|>)\s*([-+]?\d+(\.\d*)?([eE][-+]?\d+)?)\s*$")
_RELATIVE = re.compile(r"^\s*(median|value):\s*(\d+(\.\d*)?)%\s*$")
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class Threshold:
    text: str
    op: str | None = None  # absolute bound
    limit: float | None = None
    percent: float | None = None  # relative to a reference

    def check(self, name: str, value: float, reference: float | None = None,
              higher_is_better: bool = False) -> str | None:
        """None when the value passes, else a one-line failure message."""
        if self.op is not None:
            if _OPS[self.op](value, self.limit):
                return None
            return f"{name} = {value:.4g} fails '{self.text}'"
        if reference is None:
            return None  # nothing to compare with: relative thresholds need --compare
        if higher_is_better:
            if value >= reference * (1 - self.percent / 100):
                return None
            return (f"{name} = {value:.4g} is more than {self.percent:g}% below the reference {reference:.4g} "
                    f"('{self.text}')")
        if value <= reference * (1 + self.percent / 100):
            return None
        return f"{name} = {value:.4g} is more than {self.percent:g}% above the reference {reference:.4g} ('{self.text}')"


PASS, FAIL, UNSURE = "pass", "fail", "unsure"


def judge(threshold: Threshold, low: float, high: float) -> str:
    """PASS when both ends of the interval pass an absolute bound, FAIL when both fail,
    UNSURE when it straddles the limit. Relative thresholds have no interval form."""
    if threshold.op is None:
        raise ValueError(f"'{threshold.text}' is relative: only absolute bounds judge an interval")
    passes = [_OPS[threshold.op](end, threshold.limit) for end in (low, high)]
    return PASS if all(passes) else FAIL if not any(passes) else UNSURE


def parse_threshold(text: str) -> Threshold:
    bound = _BOUND.match(text)
    if bound:
        return Threshold(text=text.strip(), op=bound.group(1), limit=float(bound.group(2)))
    relative = _RELATIVE.match(text)
    if relative:
        return Threshold(text=text.strip(), percent=float(relative.group(2)))
    raise ValueError(f"cannot parse threshold {text!r} (use '<= 1.10' or 'median:10%')")


def _outside_loads(entry: dict) -> list[float]:
    """The outside CPU load of each part a measure compares (its epochs), or, for a
    measure that compares within one stretch of time (interleaved segments), the load
    over the whole of its run."""
    by_epoch = (entry.get("detail") or {}).get("outside_load_by_epoch")
    if by_epoch:
        return list(by_epoch.values())
    return [] if entry.get("other_load") is None else [entry["other_load"]]


def assess(name: str, threshold: Threshold, entry: dict, reference: float | None = None,
           higher_is_better: bool = False, quiet: Threshold | None = None) -> tuple[str, str | None]:
    """_assess, where a pass after a failed first run is unsure (benchmarks.runner measures
    a failure again): never a pass."""
    verdict, message = _assess(name, threshold, entry, reference, higher_is_better, quiet)
    first = entry.get("detail", {})
    if verdict == PASS and first.get("first_try_failed"):
        return UNSURE, (f"{name} = {entry['value']:.4g} passes '{threshold.text}', but the first run failed it "
                        f"({first.get('first_try')}): the machine, or a regression that comes and goes")
    return verdict, message


def _assess(name: str, threshold: Threshold, entry: dict, reference: float | None = None,
            higher_is_better: bool = False, quiet: Threshold | None = None) -> tuple[str, str | None]:
    """(verdict, message) for one measured entry. An entry with an "interval" is judged on
    it, and only on a quiet machine: UNSURE whatever its value when it is marked
    "contended" (outside load changed between the things it compares) or when the outside
    load of any part it compares (or of its whole run) fails `quiet` (e.g. '<= 0.25'). Such timings say nothing
    about the code either way: on 2 cores, other processes' load has made a clean run
    1.3-3x slower in epoch 2 and hidden the planted fault entirely. The message is None on
    PASS, else one line naming the measure, its value and the threshold."""
    value = entry["value"]
    if value != value:  # NaN: nothing was measured (e.g. no samples); that is neither a pass nor a regression
        return UNSURE, f"{name} could not be measured (nan); '{threshold.text}' not judged"
    interval = entry.get("interval")
    if interval is None or threshold.op is None:
        message = threshold.check(name, value, reference, higher_is_better)
        return (FAIL, message) if message else (PASS, None)
    low, high = interval
    shown = f"{name} = {value:.4g} [{low:.4g}, {high:.4g}]"
    outside = _outside_loads(entry)
    shares = " / ".join(f"{load:.0%}" for load in outside)
    if entry.get("contended"):
        return UNSURE, f"{shown} not judged against '{threshold.text}': outside CPU load changed during it ({shares})"
    if quiet is not None and any(quiet.check("outside_load", load) for load in outside):
        return UNSURE, (f"{shown} not judged against '{threshold.text}': the machine was busy, other work used "
                        f"{shares} of the CPUs (judged only at outside load '{quiet.text}')")
    verdict = judge(threshold, low, high)
    if verdict == FAIL:
        return FAIL, f"{shown} fails '{threshold.text}'"
    if verdict == UNSURE:
        return UNSURE, f"{shown} straddles '{threshold.text}': cannot tell"
    return PASS, None
