"""Stage `train`: shards + attributes -> models/trained/model.pt, dvclive/train/ (per step and epoch).

Run by dvc as `python -m stages.train`. With `train.nproc` > 1 this process checks the params,
files and weights first, then starts the `train.nproc` DDP workers itself (torchrun's elastic
launcher, `--standalone`), so a user error ends with one line naming the param, not a torchrun
`ChildFailedError` report per rank. Under an outer torchrun / SLURM launch (RANK set) it is a
worker. A killed run resumes from checkpoints/<hash>/last.pt.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from eva.config import load_params, value_at
from eva.data.attribute_store import read_meta
from eva.data.clips import read_classes
from eva.data.shards import list_shards
from eva.models import ModelConfig, build_model
from eva.train.config import TrainConfig, TrainJob
from eva.train.loop import run_training
from eva.utils.log import setup_logging
from stages._entry import run_stage
from stages._launch import launch_workers, launched
from stages._layout import CLASSES, MODEL, SHARDS, attributes
from stages._params import dataset_name, stage_number

log = logging.getLogger("eva.stages.train")


def build_job(params: dict[str, Any]) -> TrainJob:
    """Everything the run reads, validated: a bad param or a missing input fails here, before any worker."""
    name = dataset_name(params)
    stage = stage_number(params)  # read once: the attributes it selects, and model.pt's record
    train = TrainConfig.from_params(params)  # params first: a typo is named before any missing file
    train_attributes, val_attributes = attributes("train"), attributes("val")
    meta = read_meta(train_attributes) if train_attributes.is_file() else None
    classes = read_classes(CLASSES)
    model = ModelConfig.from_params(params, num_classes=len(classes), stage=stage, attribute_meta=meta)
    model.validate()  # `model.method` before the recipe it selects
    job = TrainJob(
        model=model,
        train=train,
        stage=stage,
        classes=classes,
        train_shards=list_shards(SHARDS, "train"),
        val_shards=list_shards(SHARDS, "val"),
        train_attributes=train_attributes,
        val_attributes=val_attributes,
        output=MODEL,
        params={  # `stage` is recorded once, as model.pt's own `stage`
            "dataset": {"name": name},
            "model": value_at(params, "model"),
            "train": value_at(params, "train"),
        },
    )
    return job


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    params = load_params()
    job = build_job(params)
    if job.train.nproc > 1 and not launched():
        build_model(job.model)  # missing or mismatched weights fail here, once
        log.info("starting %d training processes", job.train.nproc)
        launch_workers("train", job.train.nproc)
        return
    run_training(job)


if __name__ == "__main__":
    run_stage("train", main)
