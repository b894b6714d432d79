"""A tiny end-to-end training fixture: generated videos -> extracted shards -> attribute parquet -> tiny CLIP.

Shared by tests/test_train.py and benchmarks/gpu_check.py (which trains it for two epochs on the
device). The attribute file is written with the store's own writer in the contract format, with
random embeddings standing in for the attribute stage's encoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eva.data.attribute_store import AttributeMeta, VideoAttributes, rows_to_table, write_table
from eva.data.extract import ExtractConfig, extract_shards
from eva.data.shards import list_shards
from eva.demo.data import encode_mp4
from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip
from eva.methods import Recipe
from eva.models import ModelConfig
from eva.train.config import TrainConfig, TrainJob

CLASSES = ["green square moving left", "red square moving right"]
SPEC = TinyClipSpec(
    embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=2,
    text_width=16, text_layers=1, heads=2, context_length=8,
)  # fmt: skip
META = AttributeMeta(encoder="test", text_layers=3, image_layers=2, dim=16, keyframes=2)
MISSING = "train/11"  # a video the attribute file lacks: training must skip it
FRAMES = 4


@dataclass(frozen=True)
class TinyData:
    root: Path
    shards: Path  # one shard per split ("samples" mode for any world size > 1)
    many_shards: Path  # train only, 3 videos per shard ("shards" mode)
    backbone: str


def moving_square(num_frames: int = 16, size: int = 48, seed: int = 0) -> np.ndarray:
    """A bright square moving right over a noisy background: [T, H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, size, size, 3), dtype=np.uint8)
    side = size // 4
    for t in range(num_frames):
        x = int(t * (size - side) / max(num_frames - 1, 1))
        frames[t, size // 3 : size // 3 + side, x : x + side] = (230, 40, 40)
    return frames


def placeholder_row(
    video_id: str,
    keyframe_indices: Sequence[int],
    embeddings: Mapping[str, np.ndarray],
    *,
    label: str = "object",
    caption: str = "a caption",
    score: float = 0.5,
    coverage: float = 0.2,
) -> VideoAttributes:
    """One video's attribute row in the store's contract: `embeddings` where the attribute stage's
    encoders would have written theirs, and the same placeholder text fields at every keyframe
    (what the fixtures and benchmarks write; training reads only the embeddings)."""
    k = len(keyframe_indices)
    return VideoAttributes(
        video_id=video_id,
        keyframe_indices=list(keyframe_indices),
        label_text=[label] * k,
        label_score=[score] * k,
        caption_text=[caption] * k,
        mask_coverage=[coverage] * k,
        embeddings=dict(embeddings),
    )


def random_embeddings(meta: AttributeMeta, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float16 standard-normal embeddings of every attribute in `meta`'s shapes, drawn in its order."""
    return {name: rng.standard_normal(meta.shape(name)).astype(np.float16) for name in meta.attributes}


def attribute_rows(video_ids: list[str], seed: int) -> list[VideoAttributes]:
    """Attribute rows in `META`'s shapes with random embeddings, two keyframes per video."""
    rng = np.random.default_rng(seed)
    return [
        placeholder_row(
            vid, [1, 5], random_embeddings(META, rng), label="square", caption="a red square", coverage=0.1
        )
        for vid in video_ids
    ]


def write_tiny_data(root: Path) -> TinyData:
    """12 train and 4 val videos of two classes, their shards, attribute files (one train video
    without a row: `MISSING`) and a tiny open_clip backbone, all under `root`."""
    rows = []
    for split, count in (("train", 12), ("val", 4)):
        for i in range(count):
            label = i % 2
            frames = moving_square(num_frames=12, size=32, seed=100 * (split == "val") + i)
            if label == 0:  # a green square moving left (colour makes the tiny random model's job easy)
                frames = np.ascontiguousarray(frames[:, :, ::-1][..., [1, 0, 2]])
            path = root / "videos" / f"{split}_{i:02d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            encode_mp4(path, frames, 12)
            rows.append(
                {"video_id": f"{split}/{i:02d}", "path": str(path), "label": label,
                 "label_name": CLASSES[label], "split": split, "start": None, "end": None}
            )  # fmt: skip
    schema = pa.schema(
        [("video_id", pa.string()), ("path", pa.string()), ("label", pa.int32()), ("label_name", pa.string()),
         ("split", pa.string()), ("start", pa.float64()), ("end", pa.float64())]
    )  # fmt: skip
    index = pa.Table.from_pylist(rows, schema=schema)
    cfg = ExtractConfig(frames_per_video=8, short_side=32, samples_per_shard=64, workers=1)
    extract_shards(index, root / "shards", cfg)
    train_index = index.filter(pc.equal(index.column("split"), "train"))
    extract_shards(train_index, root / "many_shards", replace(cfg, samples_per_shard=3))
    (root / "attributes").mkdir()
    for split, seed in (("train", 1), ("val", 2)):
        ids = [r["video_id"] for r in rows if r["split"] == split and r["video_id"] != MISSING]
        write_table(root / "attributes" / f"{split}.parquet", rows_to_table(attribute_rows(ids, seed), META))
    backbone = save_tiny_open_clip(root / "backbone", SPEC)
    return TinyData(root=root, shards=root / "shards", many_shards=root / "many_shards", backbone=backbone)


def model_config(data: TinyData, **overrides: Any) -> ModelConfig:
    """EVA with two attributes on the tiny backbone (`overrides`: any `ModelConfig` field)."""
    fields = dict(
        method="eva", num_classes=len(CLASSES), backbone=data.backbone, frames=FRAMES,
        image_size=SPEC.image_size, time_embedding_init=0.0, attributes=("label", "caption"),
        attribute_layers={"label": META.text_layers, "caption": META.text_layers}, attribute_dim=META.dim,
    )  # fmt: skip
    fields.update(overrides)
    return ModelConfig(**fields)


def make_job(
    data: TinyData, out: Path, model: dict | None = None, *, params: dict | None = None, **train: Any
) -> TrainJob:
    """A 2-epoch training job on `data` writing under `out` (`train`: any `TrainConfig` field, or `lr`)."""
    settings: dict[str, Any] = dict(
        epochs=2,
        batch_size=4,
        warmup_epochs=0.5,
        workers=0,
        label_smoothing=0.1,
        lr_scale_adamw=1.0,
        val_interval=1,
    )
    settings["recipe"] = Recipe(name=(model or {}).get("method", "eva"), lr=train.pop("lr", 3e-3))
    settings.update(train)
    return TrainJob(
        model=model_config(data, **(model or {})),
        train=TrainConfig(**settings),
        stage=1,
        classes=CLASSES,
        train_shards=list_shards(data.shards, "train"),
        val_shards=list_shards(data.shards, "val"),
        train_attributes=data.root / "attributes" / "train.parquet",
        val_attributes=data.root / "attributes" / "val.parquet",
        output=out / "model.pt",
        params=dict(params or {}),
        checkpoint_root=out / "checkpoints",
        live_dir=out / "dvclive",
    )
