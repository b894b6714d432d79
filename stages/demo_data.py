"""Stage `demo_data`: params `demo.*` -> data/demo/ (videos/*.mp4, annotations/ in SSv2 json, README.md)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from eva.config import load_params
from eva.demo.data import DemoConfig, generate_demo_dataset
from eva.utils.log import setup_logging
from stages._entry import run_stage

log = logging.getLogger("eva.stages.demo_data")

OUT_DIR = Path("data/demo")


def main() -> None:
    setup_logging()
    params = load_params()
    start = time.monotonic()
    summary = generate_demo_dataset(OUT_DIR, **asdict(DemoConfig.from_params(params)))
    log.info(
        "demo_data: %d videos (%d train, %d val) of %d classes, %.1f MB in %s, %.1f s",
        summary.num_videos,
        sum(summary.counts["train"].values()),
        sum(summary.counts["val"].values()),
        len(summary.classes),
        summary.total_bytes / 1e6,
        summary.out_dir,
        time.monotonic() - start,
    )


if __name__ == "__main__":
    run_stage("demo_data", main)
