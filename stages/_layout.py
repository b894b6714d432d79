"""Where the stages read and write: one path per artifact, the same for every dataset.

dvc.yaml names the same paths (tests/test_layout.py checks that they agree). None depends on
`dataset.name`: before an experiment runs, DVC checks out every stage's outputs as dvc.lock records
them, and an output path the lock has no entry for (`shards/<another dataset>`) printed "No file hash
info found ... It won't be created." once per path. Which dataset an artifact holds is recorded
inside it (metrics/index.json, model.pt's params, metrics/eval.json, the model card).
"""

from __future__ import annotations

from pathlib import Path

INDEX = Path("data/index/videos.parquet")  # one row per video: id, path, label, split, segment
CLASSES = Path("data/index/classes.json")  # class names, index == label id
SHARDS = Path("shards")  # {train,val}-%06d.tar
ATTRIBUTES = Path("attributes")  # {train,val}.parquet
MODEL = Path("models/trained/model.pt")
MODEL_CARD = MODEL.with_name("README.md")


def attributes(split: str) -> Path:
    """The attributes stage's file for `split` (train / val)."""
    return ATTRIBUTES / f"{split}.parquet"
