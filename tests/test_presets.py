import pytest
from dcnprobe.model.presets import PRESETS, get_preset

from dcnprobe.errors import UsageError

# The report's comparison table (phase3-revised-report.txt), verbatim.
REPORT = {
    "phase1": dict(dropout=0.20, weight_decay=1e-5, label_smoothing=0.00, learning_rate=1e-3),
    "phase3": dict(dropout=0.30, weight_decay=5e-5, label_smoothing=0.10, learning_rate=3e-4),
    "phase3-revised": dict(dropout=0.25, weight_decay=3e-5, label_smoothing=0.05, learning_rate=3e-4),
}


@pytest.mark.parametrize("name", REPORT)
def test_presets_carry_the_reports_values(name):
    preset = PRESETS[name]
    for key, value in REPORT[name].items():
        assert getattr(preset, key) == value, f"{name}.{key} drifted from the report"
    assert preset.clip_norm == 1.0
    assert preset.epochs == 5


def test_no_unexpected_presets():
    assert set(PRESETS) == set(REPORT)


def test_unknown_preset_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown preset"):
        get_preset("phase2")
