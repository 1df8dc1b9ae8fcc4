"""The gated DCNv3 click-through-rate model, its data and its trainer."""

from dcnprobe.model.gated_dcnv3 import GatedDCNv3, ModelConfig, ModelOutput
from dcnprobe.model.presets import PRESETS, Hyperparams
from dcnprobe.model.trainer import EpochMetrics, TrainJob, TrainResult, fit

__all__ = [
    "GatedDCNv3", "ModelConfig", "ModelOutput", "PRESETS", "Hyperparams",
    "EpochMetrics", "TrainJob", "TrainResult", "fit",
]
