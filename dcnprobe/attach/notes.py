"""What the attach wrote about a run, read back: how boundaries were found, the settings
applied and not applied, the DataLoaders built, validation passes.

The header's `attach` entry says what was known when recording began; `attach` records
add what was learnt later, the last one (`final`) the state at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcnprobe.records import RUN_FILE

# Record types the attach adds to a run record (readers that do not know them skip them).
ATTACH_RECORD = "attach"  # what the attach learnt after the header: device, boundaries, settings
VALIDATION_RECORD = "validation"  # a pass over a DataLoader that was not training


def read_notes(run_dir: str | Path) -> dict[str, Any]:
    """{"header": the header's attach entry, "boundaries", "final": the last attach record
    (or {}), "validation": the validation records}."""
    header: dict[str, Any] = {}
    final: dict[str, Any] = {}
    boundaries: dict[str, Any] = {}
    validation: list[dict[str, Any]] = []

    for line in (Path(run_dir) / RUN_FILE).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = record.get("type")
        if kind == "header":
            header = record.get("attach") or {}
            boundaries = record.get("boundaries") or {}
        elif kind == ATTACH_RECORD:
            boundaries = record.get("boundaries") or boundaries
            if record.get("final"):
                final = record
        elif kind == VALIDATION_RECORD:
            validation.append(record)
    return {"header": header, "boundaries": boundaries, "final": final, "validation": validation}
