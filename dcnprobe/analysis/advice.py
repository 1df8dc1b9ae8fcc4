"""What to do about each cause: the "usual fix" column of docs/causes.md."""

from __future__ import annotations

ADVICE = {
    "graph-retention": "store scalars, not tensors: `loss.item()`, `out.detach()`; find the list or hook keeping them",
    "metric-accumulation": "keep running sums instead of whole histories, reset metric buffers each epoch, "
                           "compute expensive metrics once per epoch",
    "gc-pressure": "stop keeping a Python object per sample; `gc.freeze()` after set-up moves long-lived objects "
                   "out of the collector's way; if gc was disabled, re-enable it or call gc.collect() each epoch",
    "worker-memory-growth": "keep dataset storage in numpy/Arrow/tensors rather than Python objects; do not "
                            "accumulate state in workers, or let them restart each epoch (persistent_workers=false)",
    "worker-respawn": "persistent_workers=true, and a dataset that is cheap to pickle",
    "thread-oversubscription": "keep torch.set_num_threads (and OMP_NUM_THREADS) at or below the cores; one "
                               "intra-op thread per DataLoader worker; threads x processes no larger than the cores",
    "machine-contention": "rerun on a quiet machine (or pin the run to cores nothing else uses); do not change the "
                          "code on the strength of these timings",
    "periodic-work": "move evaluation, logging and checkpoints out of the batch loop (once per epoch), or run them "
                     "every fixed k batches and compare epochs with the same k",
    "device-allocator-retention": "upgrade torch; `torch.mps.empty_cache()` (or cuda) once per epoch, not per batch",
    "memory-pressure": "free what is leaking; on Apple silicon lower PYTORCH_MPS_HIGH_WATERMARK_RATIO and close "
                       "other programs so that unified memory is not paged",
    "allocator-fragmentation": "RSS that gc.collect + malloc_trim give back is not a leak; with CUDA, "
                               "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True and fixed shapes",
    "cache-clearing-cost": "clear caches once per epoch (cache_clear=epoch), not every batch",
    "shape-cache": "bucket or pad batches to a few fixed shapes",
    "fd-leak": "do not keep tensors that came from the loader beyond the batch; "
               "torch.multiprocessing.set_sharing_strategy('file_system'); close files the dataset opens",
    "thermal-throttling": "cool-down A/B: rerun after the machine idles; if the clock falls again, improve cooling "
                          "or cap the power profile",
    "stall": "read the stacks written beside the record: the frame each process waits in names the lock, queue "
             "or I/O; for fork-with-threads deadlocks use persistent workers or the 'spawn' start method",
    "none": "nothing to fix",
}


def advice_for(cause: str) -> str:
    return ADVICE.get(cause, "")
