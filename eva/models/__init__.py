"""Video models on frozen backbones (open_clip ViT, VideoMAE): every method of `eva.methods`."""

from eva.methods import METHODS
from eva.models.classifier import ModelConfig, VideoClassifier, build_model

__all__ = ["METHODS", "ModelConfig", "VideoClassifier", "build_model"]
