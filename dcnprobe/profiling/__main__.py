"""`python -m dcnprobe.profiling RUN_DIR`: write RUN_DIR/profile.md from the live captures
that `on_slowdown=profile` took (RUN_DIR/profiles/live.json), the slow epoch against
epoch 1. The probed process starts this as a child once its run is over, so that it never
loads the record reader (pandas) itself. Prints one line saying where the profile is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dcnprobe.contract import Exit
from dcnprobe.errors import UsageError
from dcnprobe.profiling.live import LIVE_FILE, PROFILES_DIR
from dcnprobe.profiling.report import build
from dcnprobe.profiling.session import Profiles
from dcnprobe.runs import read_run


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dcnprobe.profiling RUN_DIR", file=sys.stderr)
        return Exit.USAGE
    run_dir = Path(argv[0])
    try:
        live = json.loads((run_dir / PROFILES_DIR / LIVE_FILE).read_text())
        target, files = int(live["target"]), {int(e): Path(p) for e, p in live["files"].items() if p}
        profiles = Profiles({}, {1: {"pyspy": files[1]}, target: {"pyspy": files[target]}})
        path = build(profiles, read_run(run_dir), run_dir, target, 1)
    except (OSError, KeyError, ValueError, UsageError) as exc:
        print(f"dcnprobe: note: no profile written: {exc}", file=sys.stderr)
        return Exit.USAGE
    print(f"dcnprobe: profile of the slow epoch {target} against epoch 1: {path}")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
