"""Stage `evaluate`: models/trained/model.pt + val shards -> metrics/eval.json, per-class CSV,
confusion plot data, and the model card models/trained/README.md.

It runs on the processes training ran on: with `train.nproc` > 1 this process checks the inputs
once, then starts the DDP workers itself as the train stage does (stages/_launch.py); each scores
its share of the val split and rank 0 writes the outputs, the same bytes as one process would.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from eva.config import check, load_params, value_at
from eva.data.clips import open_attribute_store
from eva.data.shards import list_shards
from eva.demo.tiny import is_random_weights
from eva.evaluate import PROTOCOL_KEYS, EvaluateConfig, eval_metrics, evaluate_views
from eva.metrics import confusion_records, write_per_class_csv
from eva.model_card import render_model_card, write_model_card
from eva.models.trained import load_trained_model
from eva.report import format_run_table
from eva.utils.ddp import NPROC, init_distributed
from eva.utils.io import write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage, write_summary
from stages._launch import launch_workers, launched
from stages._layout import MODEL, MODEL_CARD, SHARDS, attributes
from stages._params import dataset_name

log = logging.getLogger("eva.stages.evaluate")


def process_count(params: dict[str, Any]) -> int:
    """`train.nproc`: evaluation runs on the processes training ran on."""
    nproc = value_at(params, "train.nproc")
    check("train.nproc", nproc, NPROC)
    return nproc


def check_inputs() -> None:
    """What every worker would open, opened once before they start: a missing input is one line."""
    model, _ = load_trained_model(MODEL)  # the model file and its backbone's weights
    list_shards(SHARDS, "val")
    if model.method.uses_attributes:
        open_attribute_store(attributes("val"), needed=True, split="val")


def main() -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    params = load_params()
    name = dataset_name(params)
    cfg = EvaluateConfig.from_params(params)
    nproc = process_count(params)
    if nproc > 1 and not launched():
        check_inputs()
        log.info("starting %d evaluation processes", nproc)
        launch_workers("evaluate", nproc)
        return
    env, created = init_distributed()
    try:
        evaluate(name, cfg, rank=env.rank, world_size=env.world_size, device=env.device)
    finally:
        if created:
            dist.destroy_process_group()


def evaluate(name: str, cfg: EvaluateConfig, *, rank: int, world_size: int, device: torch.device) -> None:
    """Score the val split on this rank's share; rank 0 writes every output."""
    clips, crops = cfg.clips, cfg.crops
    model, checkpoint = load_trained_model(MODEL, device)
    classes = checkpoint["classes"]
    result = evaluate_views(
        model,
        list_shards(SHARDS, "val"),
        clips=clips,
        crops=crops,
        batch_size=cfg.batch_size,
        store=open_attribute_store(attributes("val"), needed=model.method.uses_attributes, split="val"),
        workers=cfg.workers,
        decode=cfg.decode,
        device=device,
        amp=bool(checkpoint["params"]["train"]["amp"]),  # bf16 on CUDA where training used it
        rank=rank,
        world_size=world_size,
    )
    if rank != 0:
        return
    stage = checkpoint["stage"]
    seed = int(checkpoint["params"]["train"]["seed"])
    metrics = eval_metrics(result, model, dataset=name, stage=stage, seed=seed, clips=clips, crops=crops)
    compared = {k: v for k, v in metrics.items() if k not in PROTOCOL_KEYS}
    write_summary("metrics/eval.json", compared, "evaluate", sort_keys=False)
    write_json(
        "metrics/evaluate.json", {k: metrics[k] for k in PROTOCOL_KEYS}
    )  # run summary: how it was scored
    write_per_class_csv("metrics/per_class.csv", result.report, classes)
    predicted = result.scores.argmax(dim=1)
    write_json("metrics/plots/confusion.json", confusion_records(result.labels, predicted, classes))
    card = render_model_card(
        config=checkpoint["config"],
        dataset=name,
        stage=stage,
        metrics=metrics,
        classes=classes,
        train_params=checkpoint["params"],
        demo=name == "demo",
        random_backbone=is_random_weights(checkpoint["config"]["backbone"]),
    )
    write_model_card(MODEL_CARD, card)
    log.info("evaluation:\n%s", format_run_table(metrics))


if __name__ == "__main__":
    run_stage("evaluate", main)
