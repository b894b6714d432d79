"""Multi-view evaluation of a trained classifier: scores averaged over clips x crops per video.

Every video of the validation split is seen exactly once; each contributes `clips * crops` video
views (TSN-style temporal clips, spatial crops along the long side), and for eva each of those is
scored once per attribute keyframe (K, the keyframe policy of `eva.data.clips`): the softmax
scores of all `clips * crops * K` views are averaged. Throughput counts views (clips of T frames)
through the model per second of model time only.

Under DDP (the evaluate stage runs on `train.nproc` processes) each rank scores its share of the
batches, which are the batches of one process (`VideoAttributeDataset`), and the ranks' scores are
gathered and put back in one process's order: the result is that of one process, bit for bit. On
CUDA the model runs under bf16 autocast where its training did (`train.amp`) and its float32
products in TF32; on the CPU nothing changes.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from eva.config import check_fields, integer, section_values, setting
from eva.data.attribute_store import AttributeStore
from eva.data.clips import (
    DECODE,
    ClipSpec,
    VideoAttributeDataset,
    batch_to_device,
    make_loader,
    warn_host_decode,
)
from eva.metrics import ClassificationReport, classification_report
from eva.models import VideoClassifier
from eva.utils.ddp import all_gather_objects, autocast_dtype
from eva.utils.log import progress


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml: views per video, the batch size and loader workers."""

    clips: int = setting(default=2, rule=integer(1))  # temporal clips per video
    crops: int = setting(default=1, rule=integer(1))  # spatial crops per clip
    batch_size: int = setting(default=16, rule=integer(1))  # per process
    workers: int = setting(default=1, rule=integer(0, what="(DataLoader worker processes per rank)"))
    decode: str = setting(default="cpu", rule=DECODE)  # as train.decode

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


@contextlib.contextmanager
def device_numerics(device: torch.device, amp: bool) -> Iterator[None]:
    """How the model computes on `device`: on CUDA, bf16 autocast when `amp` (float16 where the GPU has
    no bf16, as training does) and TF32 for float32 products; on the CPU exactly as it is."""
    if device.type != "cuda":
        yield
        return
    dtype = autocast_dtype()
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cuda", dtype=dtype, enabled=amp):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@dataclass
class _Scored:
    """One rank's share of an evaluation: what it gathers to the others."""

    scores: list[torch.Tensor]  # float32 [b, C] per batch, on the CPU
    labels: list[torch.Tensor]  # int64 [b] per batch
    video_ids: list[str]
    order: list[tuple[int, int]]  # per video: (shard index, position in the shard)
    keyframes: int
    model_seconds: float
    peak_memory_mb: float


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
    decode: str = "cpu",
    device: str | torch.device = "cpu",
    amp: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Score every video of `shards` (those with an attribute row when `store` is given).

    With `world_size` > 1 call it from every rank of an initialised process group: each scores its
    share and every rank returns the whole result, in one process's order. `amp`: bf16 autocast on
    CUDA (the checkpoint's `train.amp`); ignored on the CPU. `decode`: `evaluate.decode`.
    """
    # a bad value names its key
    EvaluateConfig(clips=clips, crops=crops, batch_size=batch_size, workers=workers, decode=decode)
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
        rank=rank,
        world_size=world_size,
        workers=workers,
        decode=decode,
    )
    if rank == 0:
        warn_host_decode(decode, device, "evaluate.decode")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mine = _Scored([], [], [], [], keyframes=1, model_seconds=0.0, peak_memory_mb=0.0)
    batches: Iterable[dict[str, Any]] = make_loader(data, pin_memory=device.type == "cuda")
    if rank == 0:
        batches = progress(batches, desc="evaluate")
    for batch in batches:
        video, attributes, _ = batch_to_device(
            batch, device, model.mean, model.std
        )  # video [B, (V,) T, 3, S, S]
        attributes = attributes or {}  # name -> [B, K, L, D]
        if attributes:
            mine.keyframes = next(iter(attributes.values())).shape[1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with device_numerics(device, amp):
            probs = model.view_probabilities(video, attributes or None)  # [B, C]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        mine.model_seconds += time.perf_counter() - start
        mine.scores.append(probs.float().cpu())
        mine.labels.append(batch["label"])
        mine.video_ids += batch["video_id"]
        mine.order += [tuple(key) for key in batch["order"]]  # a loader worker hands tuples over as lists
    mine.peak_memory_mb = peak_memory_mb(device)
    ranks: list[_Scored] = all_gather_objects(mine, world_size)
    order = [key for part in ranks for key in part.order]
    video_ids = [vid for part in ranks for vid in part.video_ids]
    if not video_ids:
        raise RuntimeError("no video to evaluate: the val shards are empty or no video has an attribute row")
    if len(set(order)) != len(order):
        raise RuntimeError("a video was scored twice: the ranks did not split the val shards disjointly")
    ranked = sorted(range(len(order)), key=order.__getitem__)  # one process's order
    scores = torch.cat([s for part in ranks for s in part.scores])[ranked]
    labels = torch.cat([y for part in ranks for y in part.labels])[ranked]
    keyframes = max(part.keyframes for part in ranks)  # a rank without a batch keeps 1
    return EvalResult(
        report=classification_report(scores, labels),
        scores=scores,
        labels=labels,
        video_ids=[video_ids[i] for i in ranked],
        views=spec.views * keyframes,
        keyframes=keyframes,
        model_seconds=max(part.model_seconds for part in ranks),  # the ranks run side by side
        peak_memory_mb=max(part.peak_memory_mb for part in ranks),
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
