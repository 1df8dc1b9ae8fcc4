"""Trials: training runs under one settings object each, in isolated processes, watched,
stopped early when clearly slow, and cached."""

from dcnprobe.harness.cache import TrialCache
from dcnprobe.harness.runner import (
           DEFAULT_BUDGET_S,
           STATUSES,
           Progress,
           TrialResult,
           kill_trial,
           run_trial,
)
from dcnprobe.harness.spec import TrialSpec, code_version
from dcnprobe.harness.trials import TrialRunner

__all__ = ["DEFAULT_BUDGET_S", "STATUSES", "Progress", "TrialCache", "TrialResult", "TrialRunner", "TrialSpec",
           "code_version", "kill_trial", "run_trial"]
