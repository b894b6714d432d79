"""Stage `pretrain`: params `pretrain.*` -> a tiny CLIP and BLIP captioner pretrained on the demo's stills,
and a random VideoMAE stand-in.

Writes `${pretrain.out}/{clip,captioner,videomae,README.md}` (open_clip local-dir and transformers
`save_pretrained` formats; `videomae/` is random-initialised, not trained), `metrics/pretrain.json`
(held-out zero-shot shape accuracy, caption word accuracy, losses, seconds) and `metrics/plots/pretrain_loss.json` (one loss per step).
"""

from __future__ import annotations

import logging
import time

import torch

from eva.config import load_params
from eva.demo.pretrain.run import PretrainConfig, run_pretraining
from eva.utils.io import write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage, write_summary

log = logging.getLogger("eva.stages.pretrain")


def main() -> None:
    setup_logging()
    cfg = PretrainConfig.from_params(load_params())
    torch.manual_seed(cfg.seed)
    start = time.monotonic()
    result = run_pretraining(cfg)
    metrics = result["metrics"] | {"seconds": round(time.monotonic() - start, 1)}
    write_summary("metrics/pretrain.json", metrics, "pretrain")
    curves = result["curves"]
    write_json(
        "metrics/plots/pretrain_loss.json",
        [
            {"step": r["step"], "model": name, "loss": r["loss"]}
            for name in ("clip", "captioner")
            for r in curves[name]
        ],
    )
    log.info(
        "pretrain: zero-shot shape %.1f%% (chance %.1f%%), caption colour+shape words %.1f%% on %d held-out "
        "stills; %.0f s -> %s",
        100 * metrics["zero_shot_shape_top1"], 100 * metrics["zero_shot_shape_chance"],
        100 * metrics["caption_word_accuracy"], metrics["held_out_stills"], metrics["seconds"], cfg.out,
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("pretrain", main)
