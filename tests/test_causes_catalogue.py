"""Every cause is one unit: registered once, ranked once, and docs/causes.md is generated
from the registry, so the page users read cannot drift from the code."""

import re
from pathlib import Path

from dcnprobe.analysis.causes import CAUSE_IDS, CAUSES, PRECEDENCE, advice_for
from dcnprobe.analysis.causes.catalogue import render

CATALOGUE = Path(__file__).resolve().parent.parent / "docs" / "causes.md"


def test_the_committed_catalogue_is_the_generated_one():
    assert CATALOGUE.read_text() == render(), (
        "docs/causes.md is out of date: python -m dcnprobe.analysis.causes.catalogue > docs/causes.md")


def test_every_cause_has_a_section_that_says_what_is_seen_the_fix_and_a_reference():
    sections = dict(re.findall(r"^## `([a-z0-9-]+)`\n(.*?)(?=^## |\Z)", render(), flags=re.M | re.S))
    assert set(sections) == set(CAUSE_IDS)
    for cause, body in sections.items():
        for field in ("**Sees:**", "**Fix:**", "**Reference:**"):
            assert field in body, f"{cause} lacks {field}"


def test_every_cause_with_a_rule_has_one_place_in_the_ranking():
    ranked = [cause for cause, _ in PRECEDENCE]
    assert sorted(ranked) == sorted(c.id for c in CAUSES.values() if c.rule is not None)
    assert len(ranked) == len(set(ranked))
    for _, explains in PRECEDENCE:
        assert set(explains) <= set(ranked)


def test_advice_is_each_cause_s_fix():
    assert all(advice_for(cause) == CAUSES[cause].fix and CAUSES[cause].fix for cause in CAUSE_IDS)
    assert advice_for("no-such-cause") == ""
