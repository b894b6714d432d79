"""Stage `attributes`: shards/ -> attributes/<split>.parquet, metrics/attributes.json,
metrics/attributes_gallery.html.

Under torchrun or SLURM (RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS) each process computes a disjoint
set of shards into the shared cache (.eva_cache/attributes/); rank 0 waits for all, merges and reports.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eva.attributes.gallery import render_gallery
from eva.attributes.pipeline import AttributeConfig, decoded_samples, load_masker, run_attributes
from eva.config import load_params
from eva.data.attribute_store import AttributeStore
from eva.data.shards import list_shards
from eva.demo.tiny import demo_pretrained_scores, is_random_weights
from eva.utils.dist import resolve_device, worker_slot
from eva.utils.io import atomic_dir, atomic_path
from eva.utils.log import setup_logging
from stages._entry import run_stage, write_summary
from stages._layout import ATTRIBUTES, SHARDS
from stages._params import dataset_name

log = logging.getLogger("eva.stages.attributes")

METRICS = Path("metrics/attributes.json")
GALLERY = Path("metrics/attributes_gallery.html")


def main() -> None:
    setup_logging()
    params = load_params()
    name = dataset_name(params)
    cfg = AttributeConfig.from_params(params)
    shard_root = SHARDS
    out = ATTRIBUTES
    if worker_slot().rank != 0:
        run_attributes(shard_root, out, cfg)
        log.info("attributes: this rank's shards are done; rank 0 merges")
        return
    with atomic_dir(out) as staging:  # a killed merge leaves no attribute file under `out`
        run = run_attributes(shard_root, staging, cfg)
    outputs = {split: out / path.name for split, path in run.outputs.items()}
    split = "val" if "val" in outputs else next(iter(outputs))
    random_models = is_random_weights(cfg.clip_model) or is_random_weights(cfg.captioner)
    masker = None  # the gallery recomputes a mask model's masks: the run's model, loaded once
    if cfg.mask_method == "model":
        masker = run.models.masker if run.models is not None else load_masker(cfg, resolve_device(cfg.device))
    page = render_gallery(
        decoded_samples(list_shards(shard_root, split)),
        AttributeStore(outputs[split]),
        videos=cfg.gallery_videos,
        mask_method=cfg.mask_method,
        random_models=random_models,
        demo_scores=demo_pretrained_scores(cfg.clip_model) or demo_pretrained_scores(cfg.captioner),
        title=f"EVA attributes: {name} / {split}",
        masker=masker,
    )
    with atomic_path(GALLERY) as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_summary(METRICS, {"dataset": name, **run.metrics}, "attributes")  # last: the run's "done" mark
    for split_name, counts in run.metrics["splits"].items():
        log.info(
            "attributes %s: %d/%d videos written, %d skipped -> %s",
            split_name, counts["written"], counts["videos"], counts["skipped"], outputs[split_name],
        )  # fmt: skip


if __name__ == "__main__":
    run_stage("attributes", main)
