"""`python -m dcnprobe.analysis RUN_DIR`: the record's top cause so far, as one JSON line.

What the probe's early warning runs in a child process to name a cause, so that the
training process never loads the analysis (nor pandas). Bad input is one line, exit 2.
"""

from __future__ import annotations

import json
import sys

from dcnprobe.analysis import analyze_run
from dcnprobe.contract import Exit
from dcnprobe.errors import UsageError


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dcnprobe.analysis RUN_DIR", file=sys.stderr)
        return Exit.USAGE
    try:
        analysis = analyze_run(argv[0])
    except UsageError as exc:
        print(f"dcnprobe: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    top = analysis.causes[0]
    print(json.dumps({"cause": top.id, "score": round(top.score, 3), "advice": top.advice,
                      "slowdown": analysis.slowdown}))
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
