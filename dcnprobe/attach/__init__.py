"""Attach the probe to an unmodified training command from outside."""
