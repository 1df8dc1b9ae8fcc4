"""A study: several presets x several seeds of the built-in trainer, each a watched,
cached, checkpointed trial, summarised in the seed report's terms (means over seeds with
t-intervals, paired deltas, the report's success criteria)."""

from dcnprobe.study.plan import Criteria, StudyConfig, StudyTrial, parse_presets, parse_seeds, plan
from dcnprobe.study.run import StudyRun, run_study
from dcnprobe.study.summary import StudySummary, summarize_study

__all__ = ["Criteria", "StudyConfig", "StudyRun", "StudySummary", "StudyTrial", "parse_presets", "parse_seeds",
           "plan", "run_study", "summarize_study"]
