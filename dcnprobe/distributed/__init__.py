"""Runs of several processes (torchrun / DistributedDataParallel ranks): where each rank's
record lives (layout), reading them together (reader), and which rank holds the others
back (steps, straggler, analysis). See docs/distributed.md."""
