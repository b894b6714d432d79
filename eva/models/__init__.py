"""Video models on frozen open_clip vision towers: linear probe, VPT, AIM, EVA and full fine-tuning."""

from eva.models.classifier import METHODS, ModelConfig, VideoClassifier, build_model

__all__ = ["METHODS", "ModelConfig", "VideoClassifier", "build_model"]
