"""Run records out, in formats other tools read (chrome: Chrome Trace Event JSON)."""
