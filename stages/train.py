"""Stage `train`: shards + attributes -> models/<dataset>/model.pt, dvclive/train/ (per step and epoch).

Run by dvc as `torchrun --standalone --nproc_per_node ${train.nproc} -m stages.train`; a plain
`python -m stages.train` trains in one process. A killed run resumes from checkpoints/<hash>/last.pt.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from eva.attributes.store import read_meta
from eva.data.shards import list_shards
from eva.params import load_params, param
from eva.train.data import read_classes
from eva.train.loop import TrainConfig, TrainJob, model_config_from_params, run_training
from eva.utils.log import setup_logging


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    params = load_params()
    name = param(params, "dataset.name")
    train_attributes = Path("attributes") / name / "train.parquet"
    val_attributes = Path("attributes") / name / "val.parquet"
    meta = read_meta(train_attributes) if train_attributes.is_file() else None
    classes = read_classes(Path("data/index") / f"{name}.classes.json")
    job = TrainJob(
        model=model_config_from_params(params, num_classes=len(classes), attribute_meta=meta),
        train=TrainConfig.from_params(params),
        stage=param(params, "stage"),
        classes=classes,
        train_shards=list_shards(Path("shards") / name, "train"),
        val_shards=list_shards(Path("shards") / name, "val"),
        train_attributes=train_attributes,
        val_attributes=val_attributes,
        output=Path("models") / name / "model.pt",
        params={
            "stage": param(params, "stage"),
            "dataset": {"name": name},
            "model": param(params, "model"),
            "train": param(params, "train"),
        },
    )
    run_training(job)


if __name__ == "__main__":
    main()
