"""Training: the warmup-cosine schedule, the DDP loop and resume checkpoints (inputs: `eva.data.clips`)."""

from eva.train.loop import TrainConfig, TrainJob, TrainResult, run_training

__all__ = ["TrainConfig", "TrainJob", "TrainResult", "run_training"]
