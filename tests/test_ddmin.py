"""ddmin on table-driven evaluators: both the answer and the number of evaluations."""

import pytest

from dcnprobe.bisect.ddmin import Outcome, ddmin

F, P, U = Outcome.FAIL, Outcome.PASS, Outcome.UNRESOLVED


def evaluator(fails_when, unresolved_when=lambda s: False):
    calls = []

    def test(subset):
        calls.append(subset)
        if unresolved_when(subset):
            return U
        return F if fails_when(subset) else P

    return test, calls


def known_ends(changes):
    return {frozenset(): P, frozenset(changes): F}


def test_single_culprit_among_eight():
    changes = list("abcdefgh")
    test, calls = evaluator(lambda s: "f" in s)
    result = ddmin(changes, test, known_ends(changes))
    assert result.minimal == ["f"]
    # Halving: efgh, then ef, then f; the first half of each split passes first.
    assert [sorted(c) for c in calls] == [list("abcd"), list("efgh"), list("ef"), ["e"], ["f"]]
    assert result.evaluations == len(calls) == 5


def test_interaction_of_two_settings():
    changes = ["num_workers", "persistent_workers", "cache_clear"]
    test, _ = evaluator(lambda s: {"num_workers", "persistent_workers"} <= s)
    result = ddmin(changes, test, known_ends(changes))
    assert sorted(result.minimal) == ["num_workers", "persistent_workers"]
    # Split in two, the first half larger: {num_workers, persistent_workers} fails at once,
    # then {num_workers} and {persistent_workers} pass: 1-minimal after 3 tests.
    assert result.evaluations == 3


def test_invalid_combinations_are_unresolved_not_healthy():
    """persistent_workers without num_workers cannot run: ddmin must not reduce to it,
    and must still find the pair."""
    changes = ["num_workers", "persistent_workers", "cache_clear"]
    test, calls = evaluator(
        lambda s: {"num_workers", "persistent_workers"} <= s,
        unresolved_when=lambda s: "persistent_workers" in s and "num_workers" not in s,
    )
    result = ddmin(changes, test, known_ends(changes))
    assert sorted(result.minimal) == ["num_workers", "persistent_workers"]
    assert result.history[frozenset({"persistent_workers"})] is U
    assert result.evaluations == 3


def test_culprit_in_the_second_half_needs_complements():
    changes = ["cache_clear", "num_workers", "pin_memory", "persistent_workers"]
    test, calls = evaluator(lambda s: {"num_workers", "persistent_workers"} <= s)
    result = ddmin(changes, test, known_ends(changes))
    assert sorted(result.minimal) == ["num_workers", "persistent_workers"]
    # halves {cc, nw}, {pm, pw} pass; quarters {cc}, {nw}, {pm}, {pw} pass; complements:
    # {nw, pm, pw} fails; within it the parts are known, the complement {pm, pw} is the
    # second half (known), and {nw, pw} fails; its halves are known too.
    assert [sorted(c) for c in calls] == [
        ["cache_clear", "num_workers"], ["persistent_workers", "pin_memory"],
        ["cache_clear"], ["num_workers"], ["pin_memory"], ["persistent_workers"],
        ["num_workers", "persistent_workers", "pin_memory"], ["num_workers", "persistent_workers"],
    ]
    assert result.evaluations == 8


def test_every_subset_is_tested_once():
    changes = list("abcdef")
    test, calls = evaluator(lambda s: {"b", "e"} <= s)
    result = ddmin(changes, test, known_ends(changes))
    assert sorted(result.minimal) == ["b", "e"]
    assert len(calls) == len(set(calls)) == result.evaluations


@pytest.mark.parametrize("size", [1, 2, 5, 16])
def test_all_changes_needed(size):
    changes = list(range(size))
    test, _ = evaluator(lambda s: len(s) == size)
    assert sorted(ddmin(changes, test, known_ends(changes)).minimal) == changes


def test_result_is_one_minimal():
    changes = list(range(10))
    culprits = {2, 7, 9}
    test, _ = evaluator(lambda s: culprits <= s)
    minimal = ddmin(changes, test, known_ends(changes)).minimal
    assert set(minimal) == culprits


def test_needs_a_failing_start():
    test, _ = evaluator(lambda s: False)
    with pytest.raises(ValueError):
        ddmin(["a", "b"], test)
