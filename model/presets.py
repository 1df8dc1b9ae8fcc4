"""Training presets with the values of the report's comparison table."""

from __future__ import annotations

from dataclasses import dataclass

from dcnprobe import UsageError


@dataclass(frozen=True)
class Hyperparams:
    dropout: float
    weight_decay: float  # AdamW's decoupled decay
    label_smoothing: float
    learning_rate: float
    clip_norm: float = 1.0
    epochs: int = 5


PRESETS: dict[str, Hyperparams] = {
    "phase1": Hyperparams(dropout=0.20, weight_decay=1e-5, label_smoothing=0.00, learning_rate=1e-3),
    "phase3": Hyperparams(dropout=0.30, weight_decay=5e-5, label_smoothing=0.10, learning_rate=3e-4),
    "phase3-revised": Hyperparams(dropout=0.25, weight_decay=3e-5, label_smoothing=0.05, learning_rate=3e-4),
}
DEFAULT_PRESET = "phase3-revised"


def get_preset(name: str) -> Hyperparams:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})") from None
