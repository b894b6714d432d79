"""Training: the warmup-cosine schedule, the DDP loop and resume checkpoints (inputs: `eva.data.clips`)."""

from eva.data.clips import (
    ClipSpec,
    VideoAttributeDataset,
    make_loader,
    normalize,
    sample_frame_indices,
    spatial_crops,
)
from eva.models.trained import load_trained_model, save_trained_model
from eva.train.loop import TrainConfig, TrainJob, TrainResult, model_config_from_params, run_training

__all__ = [
    "ClipSpec",
    "TrainConfig",
    "TrainJob",
    "TrainResult",
    "VideoAttributeDataset",
    "load_trained_model",
    "make_loader",
    "model_config_from_params",
    "normalize",
    "run_training",
    "sample_frame_indices",
    "save_trained_model",
    "spatial_crops",
]
