"""Regression thresholds written as strings, and the check that applies them.

Two forms, as in pytest-benchmark's --benchmark-compare-fail:
    "<= 1.10"      an absolute bound on the measure (also <, >=, >)
    "median:10%"   at most 10 % above the same measure in a reference results file
A failure message names the measure, its value and the threshold.
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


def parse_threshold(text: str) -> Threshold:
    bound = _BOUND.match(text)
    if bound:
        return Threshold(text=text.strip(), op=bound.group(1), limit=float(bound.group(2)))
    relative = _RELATIVE.match(text)
    if relative:
        return Threshold(text=text.strip(), percent=float(relative.group(2)))
    raise ValueError(f"cannot parse threshold {text!r} (use '<= 1.10' or 'median:10%')")
