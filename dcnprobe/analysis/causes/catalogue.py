"""docs/causes.md, the catalogue users read, generated from the registered causes.

    python -m dcnprobe.analysis.causes.catalogue > docs/causes.md

A test checks that the committed page is what this writes, so the page and the code
cannot drift apart. The order is the ranking's.
"""

from __future__ import annotations

import sys

from dcnprobe.analysis.causes import CAUSES, PRECEDENCE

INTRO = """\
# Causes of epoch-over-epoch slowdown

The ids `dcnprobe analyze` names (in `analysis.json` under `causes[].id`), what the probe
sees for each, the usual fix, and a public reference to check it against. `dcnprobe analyze`
prints the fix for its top causes; `analysis.json` carries it as `causes[].advice`.
This page is generated from the causes themselves (`dcnprobe/analysis/causes/`:
`python -m dcnprobe.analysis.causes.catalogue > docs/causes.md`), and a test keeps it so.

Outside CPU load is never blamed on your code: when other processes' CPU use explains
the timing, the analysis names `machine-contention`, sets `"contended": true` and does
not call the run slow.
"""

OUTRO = """\
Seen from outside (`dcnprobe attach PID`, a run that was started without dcnprobe) there
are no batch times, so only the causes whose signals are per-process figures or stacks
are judged: `worker-memory-growth` (a worker's memory rising steadily, on average at least
64 KB/s per worker, or 48 MB in all within the window; 24 KB/s when the main process waits
for its workers in at least half its samples), `memory-pressure` (pages read back from
swap, the run's own pages in swap), `stall` (the run's processes use no CPU and the main
stack does not change for `--stall-after` seconds; the process everyone waits on is
named), `machine-contention` (other programs on at least a quarter of the cores while the
run's threads queue for CPUs), `thread-oversubscription` and `fd-leak`. For the others the
attach prints the `dcnprobe run -- ...` command that measures batch times.

Not named by a rule yet: CPU fallback of unsupported MPS ops (constant high CPU inside
forward/backward, not progressive; pytorch/pytorch#77764).
"""


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", ")")) or text == "-" else text + "."


def render() -> str:
    order = [cause for cause, _ in PRECEDENCE] + [c for c in CAUSES if c not in dict(PRECEDENCE)]
    parts = [INTRO]
    for cause_id in order:
        cause = CAUSES[cause_id]
        parts.append(f"## `{cause.id}`\n- **Sees:** {_sentence(cause.sees)}\n- **Fix:** {_sentence(cause.fix)}\n"
                     f"- **Reference:** {_sentence(cause.reference)}\n")
    parts.append(OUTRO)
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
