"""memray for one epoch: a Tracker around the epoch's batches (about +6% per batch here),
then its reports. Only non-interactive reporters are used: without a terminal,
`memray tree` spun forever here. The capture keeps every allocation (the default file
format), because an aggregated capture cannot give statistics or temporal views."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from dcnprobe.profiling.tools import check

REPORT_TIMEOUT_S = 600


class MemrayCapture:
    def __init__(self) -> None:
        self._tracker = None

    def start(self, out: Path) -> None:
        check("memray")
        import memray
        out.unlink(missing_ok=True)
        self._tracker = memray.Tracker(out, native_traces=False, file_format=memray.FileFormat.ALL_ALLOCATIONS)
        self._tracker.__enter__()

    def stop(self) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(None, None, None)
            self._tracker = None


def reports(capture: Path) -> dict[str, Path]:
    """flamegraph.html (peak memory), leaks.html (not freed by the end of the epoch) and
    stats.json, beside the capture. A reporter that fails leaves its file out."""
    base = capture.with_suffix("")
    wanted = {
        "flamegraph": (["flamegraph", "-f", "-o", f"{base}.flamegraph.html", str(capture)], Path(f"{base}.flamegraph.html")),
        "leaks": (["flamegraph", "--leaks", "-f", "-o", f"{base}.leaks.html", str(capture)], Path(f"{base}.leaks.html")),
        "stats": (["stats", "--json", "-f", "-o", f"{base}.stats.json", str(capture)], Path(f"{base}.stats.json")),
    }
    made = {}
    for name, (args, path) in wanted.items():
        done = subprocess.run([sys.executable, "-m", "memray", *args], capture_output=True, text=True,
                              timeout=REPORT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if done.returncode == 0 and path.exists():
            made[name] = path
    return made


def allocation_sites(capture: Path, leaked: bool = True) -> dict[str, int]:
    """Bytes per allocation site: memory still held at the end of the epoch (leaked) or at
    its peak. A site is the innermost Python frame outside the standard library."""
    from memray import FileReader

    sites: dict[str, int] = defaultdict(int)
    with FileReader(capture) as reader:
        records = (reader.get_leaked_allocation_records(merge_threads=True) if leaked
                   else reader.get_high_watermark_allocation_records(merge_threads=True))
        for record in records:
            sites[_site(record.stack_trace())] += record.size
    return dict(sites)


def _site(frames) -> str:
    """The innermost frame in the program's own code (not the standard library or an
    installed package): the line that asked for the memory, directly or through a library."""
    for function, filename, line in frames:
        if _is_own_code(filename):
            return f"{function} ({_short(filename)}:{line})"
    if frames:
        function, filename, line = frames[0]
        return f"{function} ({_short(filename)}:{line})"
    return "(no Python frame)"


def _is_own_code(filename: str) -> bool:
    if any(f"site-packages/{package}/" in filename for package in ("dcnprobe", "model")):
        return True
    return not ("site-packages" in filename or "/lib/python3." in filename or filename.startswith("<"))


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/dcnprobe/", "/model/", "/lib/python3."):
        if marker in filename:
            cut = filename.index(marker) + (len(marker) if marker.endswith("/") and marker.startswith("site") else 1)
            return filename[cut:]
    return filename
