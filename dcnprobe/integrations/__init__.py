"""Framework callbacks that drive the same Probe as the attach, from the framework's own
events (docs/frameworks.md):

    from dcnprobe.integrations.lightning import DcnprobeCallback      # a Lightning Callback
    from dcnprobe.integrations.transformers import DcnprobeCallback   # a TrainerCallback

Each module imports its framework; this package imports none.
"""
