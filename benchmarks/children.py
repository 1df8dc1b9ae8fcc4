"""A measurement run in a fresh process: the child prints one result line, the parent
reads it back. Fresh processes are how a benchmark sees what differs from one process to
the next (memory layout, allocator history) and runs a loop attached from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

RESULT_PREFIX = "dcnprobe-benchmark-result "


def report(result: Any) -> None:
    """In the child: the result, as the one line the parent looks for."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(module: str, args: list[str], what: str, env: Mapping[str, str] | None = None) -> Any:
    """`python -m module args...` in a fresh process (with `env`, if given): the result it
    reported. A child that failed or reported nothing raises, naming `what`."""
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{what} child failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(line[len(RESULT_PREFIX):])
