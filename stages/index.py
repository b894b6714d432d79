"""Stage `index`: official annotation files -> data/index/<dataset>.parquet, classes.json, metrics/index.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from eva.data.index import DatasetConfig, build_index
from eva.utils.io import atomic_path, write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage
from stages._params import load_params

INDEX_DIR = Path("data/index")
METRICS = Path("metrics/index.json")


def main() -> None:
    setup_logging()
    params = load_params()
    cfg = DatasetConfig.from_params(params)
    result = build_index(**asdict(cfg))
    name = cfg.name
    with atomic_path(INDEX_DIR / f"{name}.parquet") as tmp:
        pq.write_table(result.table, tmp)
    write_json(INDEX_DIR / f"{name}.classes.json", result.classes)
    write_json(METRICS, result.metrics())


if __name__ == "__main__":
    run_stage("index", main, uses_torch=False)
