"""Trials: a command run under one settings object each, in isolated processes, watched,
stopped early when clearly slow, and cached."""

from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.runner import DEFAULT_BUDGET_S, Progress, TrialResult, kill_trial, run_trial
from dcnprobe.harness.spec import TrialSpec, toolkit_version
from dcnprobe.harness.trials import TrialRunner

__all__ = ["DEFAULT_BUDGET_S", "Progress", "TrialCache", "TrialResult", "TrialRunner", "TrialSpec",
           "kill_trial", "run_trial", "toolkit_version"]
