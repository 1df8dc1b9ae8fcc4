"""Delta debugging (Zeller and Hildebrandt, "Simplifying and Isolating Failure-Inducing
Input", 2002): the smallest set of changes that still makes the test fail.

Here a change is one setting moved from its healthy value to its slow one, and a test
runs a trial with a subset of changes applied to the healthy settings. Outcomes are
FAIL (slow), PASS (healthy) or UNRESOLVED (an invalid combination, a crash): ddmin
reduces only to subsets that fail, so unresolved tests are never taken for healthy.
Every distinct subset is tested at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")


class Outcome(Enum):
    FAIL = "fail"
    PASS = "pass"
    UNRESOLVED = "unresolved"


@dataclass
class DDResult(Generic[T]):
    minimal: list[T]
    evaluations: int  # distinct subsets tested
    history: dict[frozenset, Outcome] = field(default_factory=dict)


class _Memo(Generic[T]):
    def __init__(self, test: Callable[[frozenset], Outcome], known: dict[frozenset, Outcome]) -> None:
        self.test, self.history = test, dict(known)
        self.evaluations = 0

    def __call__(self, subset: Sequence[T]) -> Outcome:
        key = frozenset(subset)
        if key not in self.history:
            self.evaluations += 1
            self.history[key] = self.test(key)
        return self.history[key]


def ddmin(changes: Sequence[T], test: Callable[[frozenset], Outcome],
          known: dict[frozenset, Outcome] | None = None) -> DDResult[T]:
    """A 1-minimal failing subset of `changes`, which as a whole must fail.

    `known` holds outcomes already measured (typically the empty set: PASS, and the
    full set: FAIL); they are not tested again and not counted.
    """
    memo = _Memo(test, known or {})
    current = list(changes)
    if memo(current) is not Outcome.FAIL:
        raise ValueError("ddmin needs a failing set of changes to start from")
    n = 2
    while len(current) >= 2:
        parts = _split(current, n)
        reduced = False
        for part in parts:  # reduce to a subset
            if memo(part) is Outcome.FAIL:
                current, n, reduced = part, 2, True
                break
        if not reduced and n > 2:  # reduce to a complement (with n == 2 these are the subsets again)
            for part in parts:
                complement = [c for c in current if c not in part]
                if memo(complement) is Outcome.FAIL:
                    current, n, reduced = complement, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return DDResult(current, memo.evaluations, memo.history)


def _split(items: list[T], n: int) -> list[list[T]]:
    """n contiguous parts of near-equal size."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return [p for p in parts if p]
