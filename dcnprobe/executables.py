"""Finding the command-line tools the probe drives (py-spy, memray)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_tool(name: str) -> str | None:
    """The tool installed beside this Python (a virtual environment's bin/) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def python_module(module: str) -> list[str]:
    """`python -m MODULE` for one of dcnprobe's own modules, safe in any working folder.

    `-m` puts the working folder first on sys.path, where a user's own `dcnprobe.py` would
    win over the installed package; `-P` (Python 3.11+) leaves it off. dcnprobe's own code
    never needs the working folder's modules. On 3.10 the attach has already imported the
    package before the folder is added, which protects trials the same way."""
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-m", module]
