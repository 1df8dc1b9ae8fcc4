"""Python frames as py-spy reports them from outside, named and classified.

py-spy is asked for full file names (`--full-filenames`), so that a frame's origin is
known from its path: the standard library (under lib/pythonX.Y, not site-packages), an
installed package (site-packages, dist-packages), or the program's own code (anything
else). Names are shortened afterwards for people: a package's path from its top-level
folder (`torch/utils/data/dataloader.py`), the program's own files relative to its
working folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
PACKAGE_DIRS = ("site-packages", "dist-packages")
_STDLIB = re.compile(r"/lib/python\d+(\.\d+)?t?/")
DATALOADER_FILE = "torch/utils/data/dataloader.py"
WORKER_FILE = "torch/utils/data/_utils/worker.py"
FETCH_FILE = "torch/utils/data/_utils/fetch.py"
# In the DataLoader's iterator, a frame of these functions means the main process is
# blocked until a worker delivers the next batch (the multi-process iterator's queue read).
WAITING_FOR_WORKERS = ("_try_get_data", "_get_data")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str  # as py-spy gave it: a full path with --full-filenames
    line: int | None = None

    @classmethod
    def parse(cls, text: str) -> Frame:
        """'func (/path/file.py:12)', the form of py-spy's text and raw output."""
        match = FRAME.match(text.strip())
        if not match:
            return cls(text.strip(), "")
        line = match.group("line")
        return cls(match.group("function"), match.group("file"), int(line) if line else None)

    @property
    def origin(self) -> str:
        """'own' (the program's code), 'package' (installed) or 'stdlib'."""
        path = self.file
        if any(f"/{d}/" in path for d in PACKAGE_DIRS):
            return "package"
        if _STDLIB.search(path) or path.startswith("<"):  # <frozen importlib>, spawn's <string>
            return "stdlib"
        return "own"

    def short_file(self, cwd: str | None = None) -> str:
        path = self.file
        for folder in PACKAGE_DIRS:
            marker = f"/{folder}/"
            if marker in path:
                return path.split(marker, 1)[1]
        stdlib = _STDLIB.search(path)
        if stdlib:
            return path[stdlib.end() :]
        if cwd and path.startswith(cwd.rstrip("/") + "/"):
            return os.path.relpath(path, cwd)
        return path

    def full(self) -> str:
        """'func (/full/path.py:12)': what parse() reads back."""
        return (
            f"{self.function} ({self.file}:{self.line})"
            if self.line is not None
            else f"{self.function} ({self.file})"
        )

    def name(self, cwd: str | None = None, with_line: bool = True) -> str:
        where = self.short_file(cwd)
        if with_line and self.line is not None:
            where += f":{self.line}"
        return f"{self.function} ({where})" if where else self.function

    @property
    def in_dataloader_next(self) -> bool:
        return self.function.endswith("__next__") and self.file.endswith(DATALOADER_FILE)

    @property
    def waits_for_workers(self) -> bool:
        return (
            self.file.endswith(DATALOADER_FILE)
            and self.function.rsplit(".", 1)[-1] in WAITING_FOR_WORKERS
        )

    @property
    def is_thread_root(self) -> bool:
        """The outermost frame of a thread started by `threading` (not a process's main thread)."""
        return self.function.endswith("_bootstrap") and self.file.endswith("threading.py")


def worker_part(frames: list[Frame]) -> list[Frame]:
    """A DataLoader worker's frames inside its worker loop (innermost first). A forked
    worker's stack goes on below that with its parent's frames at the moment of the fork
    (the training loop's `for x in loader`), which are not where the worker is."""
    for index, frame in enumerate(frames):
        if frame.function.endswith("_worker_loop") and frame.file.endswith(WORKER_FILE):
            return frames[:index]
    return frames


def innermost_own(frames: list[Frame]) -> Frame | None:
    """The innermost frame in the program's own code (frames are innermost first)."""
    return next((f for f in frames if f.origin == "own"), None)


def dataloader_state(frames: list[Frame]) -> str | None:
    """Where a main thread is with respect to the DataLoader (frames innermost first):
    'waiting' for a worker's batch, 'loading' inside next() doing the work itself (no
    workers, or collating), or None outside next()."""
    if not any(f.in_dataloader_next for f in frames):
        return None
    return "waiting" if any(f.waits_for_workers for f in frames) else "loading"
