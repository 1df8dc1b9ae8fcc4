"""`dcnprobe profile-epoch N`: py-spy, memray and torch.profiler scoped to one epoch."""
