"""Every number the analysis judges by, in one table, each with the reason for its value.

Memory amounts are growth over the steady part of a run (after each epoch's warm-up).
Scores are in (0, 1]: they only order causes against each other, they are not
probabilities. Change a value here and tests/test_analysis.py says what it breaks.
"""

from __future__ import annotations

from dcnprobe.ratios import CONFIDENCE, DEFAULT_THRESHOLD  # noqa: F401 - defined with the ratio they judge

MB = 1 << 20

# -- calling a run slow ------------------------------------------------------------------
MIN_BATCHES_TO_COMPARE = 5  # fewer batches in an epoch: no ratio at all
MIN_BATCHES_TO_CALL_SLOW = 20  # a bootstrap interval from fewer batches is too optimistic to act on
MEAN_MOVES_BY = 0.1  # the mean is reported when its ratio is this far above the median's (bursts)...
MEAN_MOVES_LOW = 1.0  # ... and its interval is wholly above 1 (the mean really moved)

# The warm-up rule (batches dropped at each epoch's start) is dcnprobe.ratios.warmup_batches.

# -- time growing -------------------------------------------------------------------------
STRONG_TREND_T = 8.0  # t statistic of batch time against step: a trend no noise produces
TREND_MIN_GROWTH = 0.1  # ... and worth at least 10% of a batch over the run
WITHIN_EPOCH_RISE = 1.1  # last quarter of an epoch over its first quarter: the epoch itself gets slower
OWN_CODE_ROSE = 2.0  # the loop's own code ('other') per batch at least doubled (and grew by TREND_MIN_GROWTH of a batch)
STAYED_UP = 1.1  # a level shift "stayed up" only if the run's last quarter is still this far above the level before

# -- memory -------------------------------------------------------------------------------
RETAINED_MIN = 64 * MB  # growth that counts as memory that does not come back
RETAINED_PER_BATCH = 256 * 1024  # ... and per batch, so slow drifts over long runs don't count
TENSOR_BYTES_PER_BLOCK = 4096  # retained bytes per new Python object: above = big buffers (tensors)
PYTHON_BLOCKS_PER_BATCH = 2000  # new Python objects per batch that make a heap grow
WORKER_GROWTH_MIN = 48 * MB  # all workers together
PRESSURE_MEMORY_MIN = 256 * MB  # retained growth that can push a machine into paging
PRESSURE_PER_BATCH = 1 * MB
SWAP_IN_MIN = 64 * MB  # paged back in during the run: the machine is short of memory
MAJOR_FAULTS_MIN = 1000  # major page faults during the steady batches, same meaning
FRAGMENTATION_RSS_MIN = 2 * RETAINED_MIN  # RSS growth worth explaining as allocator-held memory
FRAGMENTATION_IN_USE_SHARE = 0.25  # in-use growth under this share of RSS growth: the allocator holds the rest
DEVICE_USED_SHARE = 0.25  # device memory in use grew under this share of what the allocator holds

# -- garbage collector --------------------------------------------------------------------
GC_TREND_T = 3.0  # GC seconds per batch rising this clearly: pauses grow with the heap
GC_ALIGNED_MIN = 3  # slow batches that ran a generation-2 collection, at least
GC_ALIGNED_SHARE = 0.5  # ... and this share of the slow batches (or twice the base rate)
GC_EXPLAINS_GROWTH = 0.5  # GC growth over this share of the loop's own growth: GC, not metrics
GC_NEVER_HEAP_GROWTH = 0.5  # heap grew by half its size: generation 2 is due, yet none ran

# -- workers ------------------------------------------------------------------------------
WORKER_CPU_ROSE = 1.3  # worker CPU per batch, last epoch over first: workers do more work per batch
# When the run itself keeps every core busy, work the workers add takes cores from the
# main process: its phases slow down whichever they are, without the loader looking slow.
SATURATED = 0.9  # the run's own CPU over all cores, in the compared epoch
WORKERS_DISPLACE_SHARE = 0.5  # the workers' added CPU per batch over the cores covers this share of the added batch time
RESPAWN_SHARE = 0.05  # of an epoch's time spent waiting for new workers at its start
RESPAWN_BATCHES = 5  # ... and at least this many batches' worth

# -- threads and CPU ----------------------------------------------------------------------
THREADS_PER_CORE = 4  # threads (main + workers) per core beyond which compute threads queue for cores
THREADS_ROSE_BY_CORES = 1  # threads rose between epochs by more than this many per core
SYSTEM_SHARE_HIGH = 0.3  # kernel share of CPU time that means scheduling and spinning, in any epoch
SYSTEM_SHARE_ROSE = 0.05  # kernel share rising this much between epochs
SWITCHES_ROSE = 2.0  # involuntary context switches per second, compared epoch over epoch 1
COMPUTE_SHARE_OF_GROWTH = 0.5  # forward + backward + optimizer took this share of the extra time

# -- other processes on the machine -------------------------------------------------------
OUTSIDE_LOAD_SHIFT = 0.1  # outside load (share of all cores) differing this much between the epochs compared: on 2 cores a 0.45 shift made a clean loop 30-65x slower, so no ratio bounds its effect
OUTSIDE_LOAD_MIN_SHIFT = 0.05  # below this difference outside load explains nothing
CONTENTION_SLACK = 1.3  # a smaller shift in outside load 'explains' ratios up to 1.3x its fair-share slowdown
# Other programs using this share of all cores (in any epoch) make a healthy verdict no
# verdict: a busy machine slows the loop's own work and can hide a slowdown that builds up.
# Measured with a one-core busy loop on 2 cores: the planted persistent-loader slowdown's
# bad side stopped "healthy" at 0.78x (99% CI 0.44-1.01) after 30 of 60 batches, and run
# to its end it was healthy too (0.99x); bisect said there was no slowdown. A trial stopped
# early as healthy then runs again to its end, and a bisect whose bad side is healthy on
# such a machine is inconclusive. The same quarter of the machine beyond which the
# benchmark gate judges nothing (benchmarks/baseline.json).
BUSY_MACHINE = 0.25

# -- periodic bursts ----------------------------------------------------------------------
BURST_MIN = 3  # spikes (runs of adjacent slow batches) in an epoch before a period means anything
BURST_REGULAR = 0.6  # share of gaps between bursts within one batch of the typical gap
BURST_TIME_SHARE = 0.05  # bursts take at least 5% of an epoch's time

# -- cache clearing -----------------------------------------------------------------------
CACHE_CLEAR_SHARE = 0.05  # clearing (plus the slower batch after it) takes 5% of batch time

# -- thermal ------------------------------------------------------------------------------
FREQUENCY_FELL = 0.1  # clock 10% lower in the compared epoch than in epoch 1

# -- files --------------------------------------------------------------------------------
FDS_ROSE = 64  # open descriptors (main + workers) rising by this many over the run

# -- shapes -------------------------------------------------------------------------------
DISTINCT_SHAPES = 4  # batch shapes beyond which each new one re-plans or recompiles
NEW_SHAPE_SLOWER = 2.0  # a new shape's batch spends twice the compute of a seen shape's (same epoch): it paid a compile
NEW_SHAPE_TIME_SHARE = 0.05  # ... and those extra seconds are 5% of the run's batch time

# -- scores -------------------------------------------------------------------------------
SCORE_STALL = 1.0  # a stall is observed, not inferred
SCORE_CONTENTION = 0.97  # outside load measured directly outranks anything inferred from our timings
SCORE_SWAPPING = 0.95
SCORE_MEMORY_PRESSURE = 0.85
SCORE_GRAPH_RETENTION = 0.6  # plus up to 0.4 with the amount retained
SCORE_METRICS_IN_LOOP = 0.8  # the time went to the loop's own code
SCORE_METRICS_ELSEWHERE = 0.5
SCORE_METRICS_NOT_YET_SLOW = 0.6  # the loop's own code grows, the batch is not slow yet
SCORE_GC_EXPLAINS_METRICS = 0.3  # subtracted when GC explains much of the loop's growth
SCORE_GC_BASE, SCORE_GC_EACH_SIGN = 0.5, 0.2
SCORE_GC_NEVER_RUNS = 0.85
SCORE_WORKERS_MEMORY, SCORE_WORKERS_WORK, SCORE_WORKERS_BOTH = 0.7, 0.5, 0.9
SCORE_RESPAWN_BASE, SCORE_RESPAWN_MAX = 0.4, 0.9
SCORE_THREADS_RISING = 0.9  # more threads, more switching, compute inflating: all three seen
SCORE_THREADS_STATIC = 0.5  # oversubscribed throughout: costs time but does not grow
SCORE_DEVICE_RETENTION = 0.85
SCORE_CUDA_RETRIES = 0.8
SCORE_FRAGMENTATION = 0.4
SCORE_CACHE_CLEAR_BASE = 0.5  # plus twice the share of time it costs
SCORE_SHAPES = 0.5  # many shapes, no cost seen at them
SCORE_SHAPES_SPIKES = 0.9  # the slow batches are those of new shapes: observed, not inferred
SCORE_PERIODIC = 0.85
SCORE_THERMAL = 0.75
SCORE_FD_LEAK = 0.6
