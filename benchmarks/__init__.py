"""Slowdown-regression benchmarks: ratios measured within one run, checked against
thresholds in baseline.json. Entry point: python -m dcnprobe.benchmarks (or dcnprobe bench)."""
