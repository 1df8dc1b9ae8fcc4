"""The gated DCNv3 click-through-rate model, its data and its trainer."""

from model.gated_dcnv3 import GatedDCNv3, ModelConfig, ModelOutput
from model.presets import PRESETS, Hyperparams
from model.trainer import EpochMetrics, TrainJob, TrainResult, fit

__all__ = [
    "GatedDCNv3", "ModelConfig", "ModelOutput", "PRESETS", "Hyperparams",
    "EpochMetrics", "TrainJob", "TrainResult", "fit",
]
