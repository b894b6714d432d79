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
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from eva.config import load_params, value_at
from eva.data.attribute_store import read_meta
from eva.data.clips import read_classes
from eva.data.shards import list_shards
from eva.models import ModelConfig, build_model
from eva.train.loop import TrainConfig, TrainJob, run_training
from eva.utils.dist import worker_slot
from eva.utils.log import setup_logging
from stages._entry import USER_ERROR_DIR, USER_ERROR_EXIT, run_stage
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


def launch_workers(nproc: int) -> None:
    """Run `python -m stages.train` in `nproc` DDP workers (torchrun --standalone); exit as they did.

    A worker that stops on a user error writes its message to a report folder and exits
    USER_ERROR_EXIT; this process then prints the lowest failing rank's message as the one line and
    exits with the same status. (Rank 0 cannot be relied on to print it: once one worker fails, the
    agent stops the others with a signal.) Any other failure is summarised in one line; the
    worker's traceback is above it.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The elastic agent reports every failed worker at length; the workers speak for themselves.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"eva-train-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    with tempfile.TemporaryDirectory(prefix="eva-train-errors-") as report_dir:
        os.environ[USER_ERROR_DIR] = report_dir  # the workers inherit it (see stages/_entry.py)
        try:
            elastic_launch(config, entrypoint=sys.executable)("-m", "stages.train")
        except ChildFailedError as err:
            codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
            reports = sorted(Path(report_dir).glob("rank*.txt"), key=lambda f: int(f.stem[4:]))
            # The agent stops the other workers with a signal (negative code) once one has failed.
            if reports and all(code == USER_ERROR_EXIT or code < 0 for code in codes.values()):
                log.error("train stage: %s", reports[0].read_text(encoding="utf-8"))
                sys.exit(USER_ERROR_EXIT)
            log.error("train stage: worker rank(s) %s failed with exit code(s) %s", sorted(codes), codes)
            sys.exit(1)
        finally:
            del os.environ[USER_ERROR_DIR]


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    params = load_params()
    job = build_job(params)
    launched = "RANK" in os.environ or worker_slot().world_size > 1  # torchrun / srun started us
    if job.train.nproc > 1 and not launched:
        build_model(job.model)  # missing or mismatched weights fail here, once
        log.info("starting %d training processes", job.train.nproc)
        launch_workers(job.train.nproc)
        return
    run_training(job)


if __name__ == "__main__":
    run_stage("train", main)
