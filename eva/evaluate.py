"""Multi-view evaluation of a trained classifier: scores averaged over clips x crops per video.

Every video of the validation split is seen exactly once; each contributes `clips * crops` video
views (TSN-style temporal clips, spatial crops along the long side), and for eva each of those is
scored once per attribute keyframe (K, the keyframe policy of `eva.data.clips`): the softmax
scores of all `clips * crops * K` views are averaged. Throughput counts views (clips of T frames)
through the model per second of model time only.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from eva.config import check_fields, integer, section_values, setting
from eva.data.attribute_store import AttributeStore
from eva.data.clips import ClipSpec, VideoAttributeDataset, batch_to_device, make_loader
from eva.metrics import ClassificationReport, classification_report
from eva.models import VideoClassifier
from eva.utils.log import progress


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml: views per video and the batch size."""

    clips: int = setting(default=2, rule=integer(1))  # temporal clips per video
    crops: int = setting(default=1, rule=integer(1))  # spatial crops per clip
    batch_size: int = setting(default=16, rule=integer(1))

    def __post_init__(self) -> None:
        check_fields(self, "evaluate")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EvaluateConfig:
        return cls(**section_values(cls, params, "evaluate"))


@dataclass(frozen=True)
class EvalResult:
    report: ClassificationReport
    scores: torch.Tensor  # float [N, C], view-averaged probabilities
    labels: torch.Tensor  # int64 [N]
    video_ids: list[str]
    views: int  # per video: clips * crops * keyframes
    keyframes: int  # attribute keyframes scored per video view (1 without attributes)
    model_seconds: float
    peak_memory_mb: float

    @property
    def throughput(self) -> float:
        """Views (clips of T frames) through the model per second."""
        return len(self.labels) * self.views / max(self.model_seconds, 1e-9)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on GPU; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def evaluate_views(
    model: VideoClassifier,
    shards: list[str],
    *,
    clips: int,
    crops: int,
    batch_size: int,
    store: AttributeStore | None,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Score every video of `shards` (those with an attribute row when `store` is given)."""
    EvaluateConfig(clips=clips, crops=crops, batch_size=batch_size)  # a bad value names its key
    device = torch.device(device)
    model = model.to(device).eval()
    cfg = model.config
    spec = ClipSpec(
        num_frames=cfg.frames,
        image_size=cfg.image_size,
        sampling=cfg.sampling,
        frame_interval=cfg.frame_interval,
        clips=clips,
        crops=crops,
    )
    data = VideoAttributeDataset(
        shards,
        spec,
        train=False,
        batch_size=batch_size,
        attributes=store,
        attribute_names=tuple(cfg.attributes) if model.method.uses_attributes else (),
        workers=workers,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    all_scores, all_labels, video_ids = [], [], []
    model_seconds = 0.0
    keyframes = 1
    for batch in progress(make_loader(data, pin_memory=device.type == "cuda"), desc="evaluate"):
        video, attributes, _ = batch_to_device(
            batch, device, model.mean, model.std
        )  # video [B, (V,) T, 3, S, S]
        attributes = attributes or {}  # name -> [B, K, L, D]
        if attributes:
            keyframes = next(iter(attributes.values())).shape[1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        probs = model.view_probabilities(video, attributes or None)  # [B, C]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_seconds += time.perf_counter() - start
        all_scores.append(probs.cpu())
        all_labels.append(batch["label"])
        video_ids += batch["video_id"]
    if not video_ids:
        raise RuntimeError("no video to evaluate: the val shards are empty or no video has an attribute row")
    scores, labels = torch.cat(all_scores), torch.cat(all_labels)
    return EvalResult(
        report=classification_report(scores, labels),
        scores=scores,
        labels=labels,
        video_ids=video_ids,
        views=spec.views * keyframes,
        keyframes=keyframes,
        model_seconds=model_seconds,
        peak_memory_mb=peak_memory_mb(device),
    )


# How the run was scored, not what it scored: the evaluate stage's run summary (metrics/evaluate.json),
# beside the compared metrics in metrics/eval.json.
PROTOCOL_KEYS = ("videos", "clips", "crops", "keyframes", "views")


def eval_metrics(
    result: EvalResult, model: VideoClassifier, *, dataset: str, stage: int, seed: int, clips: int, crops: int
) -> dict[str, Any]:
    """Everything one evaluation measured. metrics/eval.json gets what `dvc metrics diff` and
    `dvc exp show` compare, accuracy first (`dvc exp show` keeps the first metric column when it folds
    the others); `PROTOCOL_KEYS` go to the stage's run summary.

    Throughput and peak memory describe the machine, not the model: the stage writes them to its
    timings file."""
    tunable, total = model.parameter_counts()
    picked = result.scores.gather(1, result.labels.view(-1, 1)).squeeze(1)  # [N] view-averaged p(label)
    return {
        **{k: round(v, 6) for k, v in result.report.as_dict().items()},
        "loss": round(float(-picked.double().clamp_min(1e-12).log().mean()), 6),
        "method": model.config.method,
        "stage": stage,
        "seed": seed,
        "tunable_params": tunable,
        "total_params": total,
        "dataset": dataset,
        "videos": len(result.labels),
        "clips": clips,
        "crops": crops,
        "keyframes": result.keyframes,
        "views": result.views,
        "throughput_clips_per_s": round(result.throughput, 2),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
    }
