"""Every number the verdict from outside judges by, each with the reason for its value.

Where a number means the same as in the analysis of a recorded run, it is that number
(imported from there, in this one place). The rest are rates: an attach sees tens of
seconds of a run, not its epochs, so growth is judged per second and by how steady it is.
"""

from __future__ import annotations

from dcnprobe.analysis import thresholds as recorded

MB = recorded.MB
KB = 1024

# -- memory -------------------------------------------------------------------------------
MIN_POINTS = 5  # samples of a process before its memory has a slope
STEADY_T = 5.0  # t statistic of a memory slope against time: a trend no noise produces
STILL_GROWING = (
    0.5  # ... still rising at half its overall rate over the window's second half, not levelled off
)
WORKER_WARMUP_S = (
    3.0  # a worker's first seconds after it started: a fork copies pages as they are first written
)
# Per worker, on average. Measured here: healthy forked workers of examples/per_sample_loop.py
# grew 9-11 KB/s (copy-on-write of pages touched as they run, steady for minutes), the planted
# 4 KB-per-sample leak 300-700 KB/s, the planted history (12 floats per sample) about 45 KB/s.
WORKER_RATE_MIN = 64 * KB
# The same, when the main process is waiting for its workers: state that grows with every
# sample makes each sample slower, so a smaller rate counts when the loader is already the
# bottleneck (still over twice the healthy rate).
WORKER_RATE_LOADER_BOUND = 24 * KB
WORKER_GROWTH_MIN = (
    recorded.WORKER_GROWTH_MIN
)  # in the window, all workers: large whatever its shape
FLAT_GROWTH = 1 * MB  # a worker's change over the window below which its memory is called flat
MAIN_RATE_SEEN = (
    256 * KB
)  # main-process growth worth a line (which cause holds it needs a look inside)

# -- the loader -----------------------------------------------------------------------------
WAITING_SHARE = 0.5  # the main thread waits for a worker's batch in at least half its samples
WORKERS_BUSY = 0.5  # workers use at least half a core each on average: they work, they do not idle
# The main process's threads wait for a CPU this long per second while its workers are busy
# and no other program competes: the workers take the cores it needs (starved, not waiting).
MAIN_STARVED_WAIT = 0.2

# -- paging ----------------------------------------------------------------------------------
SWAP_IN_RATE = 1 * MB  # bytes per second read back from swap, machine-wide
MAJOR_FAULTS_RATE = 20.0  # major page faults per second in the run's processes
SWAP_GROWTH_MIN = recorded.SWAP_IN_MIN  # the run's own pages in swap grew this much

# -- the machine -------------------------------------------------------------------------------
OUTSIDE_BUSY = 0.25  # other programs' share of all cores: the benchmarks' judged_only_when limit
# ... and the run's threads wait for CPUs (seconds per second, all threads): a run that
# waits for none (stalled, idle, or on cores nobody else wants) is not held back by that load.
RUNQUEUE_WAIT_MIN = 0.1

# -- threads ------------------------------------------------------------------------------------
THREADS_PER_CORE = recorded.THREADS_PER_CORE
SYSTEM_SHARE_HIGH = recorded.SYSTEM_SHARE_HIGH

# -- files ----------------------------------------------------------------------------------------
FDS_ROSE = recorded.FDS_ROSE

# -- stalls ---------------------------------------------------------------------------------------
IDLE_CORES = 0.05  # the whole run uses under 5% of one core: nothing is being computed
DEFAULT_STALL_AFTER_S = (
    10.0  # idle this long, the main stack unchanged: stalled (training never rests 10 s)
)

# -- scores ---------------------------------------------------------------------------------------
SCORE_STALL = recorded.SCORE_STALL
SCORE_SWAPPING = recorded.SCORE_SWAPPING
SCORE_WORKERS_MEMORY = recorded.SCORE_WORKERS_MEMORY
SCORE_WORKERS_BOTH = recorded.SCORE_WORKERS_BOTH  # growing and the loader is the bottleneck
SCORE_WORKERS_LOADER_BOUND = 0.5  # a smaller growth, read together with the waiting
SCORE_CONTENTION = (
    0.6  # below findings read from memory and files, which other programs cannot cause
)
SCORE_THREADS = recorded.SCORE_THREADS_STATIC
SCORE_FD_LEAK = recorded.SCORE_FD_LEAK
