"""`dcnprobe attach PID`: a training run that was started without dcnprobe, diagnosed from
outside while it runs, without restarting or changing it.

(Not to be confused with dcnprobe.attach, which is the probe attached *inside* a command
that dcnprobe starts.)

    tree.py           the run's processes, found from any one of them
    sampler.py        per-process CPU, memory, swap, threads, files, switches, run-queue waits
    stacks.py         py-spy dumps; the one line to show when tracing is not permitted
    profile.py        one py-spy record of the window, summarised per process
    memray_window.py  --memory: memray injected for the window
    record.py         what the record holds beyond the usual (header, record types)
    observe.py        the window itself: samples, dumps, progress, footer
    signals.py        the record reduced to signals; the stall check
    verdict.py        causes visible from outside, what was seen, what cannot be judged
    thresholds.py     every number the verdict uses
"""

from dcnprobe.outside.observe import AttachSettings, Observation, Observer
from dcnprobe.outside.record import is_outside
from dcnprobe.outside.verdict import OutsideVerdict, judge, report_lines, write_verdict

__all__ = [
    "AttachSettings",
    "Observation",
    "Observer",
    "OutsideVerdict",
    "is_outside",
    "judge",
    "report_lines",
    "write_verdict",
]
