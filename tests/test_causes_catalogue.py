"""docs/causes.md, the catalogue users read, stays in step with the code's cause table."""

import re
from pathlib import Path

from dcnprobe.analysis.advice import ADVICE
from dcnprobe.analysis.causes import CAUSE_IDS

CATALOGUE = Path(__file__).resolve().parent.parent / "docs" / "causes.md"


def catalogue_sections() -> dict[str, str]:
    text = CATALOGUE.read_text()
    parts = re.split(r"^## `([a-z0-9-]+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_cause_id_is_in_the_catalogue_and_nothing_else():
    assert set(catalogue_sections()) == set(CAUSE_IDS)


def test_each_entry_says_what_is_seen_the_fix_and_a_reference():
    for cause, body in catalogue_sections().items():
        for field in ("**Sees:**", "**Fix:**", "**Reference:**"):
            assert field in body, f"{cause} lacks {field}"


def test_every_cause_has_advice():
    assert set(ADVICE) == set(CAUSE_IDS)
