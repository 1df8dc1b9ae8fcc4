"""Live views of a run while it runs: the probe's early warning (a listener inside the
training process) and `dcnprobe watch` (a terminal view that follows any run record)."""
