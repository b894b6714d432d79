"""Stage `index`: official annotation files -> data/index/videos.parquet, classes.json, metrics/index.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from eva.config import load_params
from eva.data.index import DatasetConfig, build_index
from eva.utils.io import atomic_path, write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage
from stages._layout import CLASSES, INDEX

METRICS = Path("metrics/index.json")


def main() -> None:
    setup_logging()
    params = load_params()
    cfg = DatasetConfig.from_params(params)
    result = build_index(**asdict(cfg))
    with atomic_path(INDEX) as tmp:
        pq.write_table(result.table, tmp)
    write_json(CLASSES, result.classes)
    write_json(METRICS, result.metrics())


if __name__ == "__main__":
    run_stage("index", main, uses_torch=False)
