"""Stage `index`: official annotation files -> data/index/<dataset>.parquet, classes.json, metrics/index.json."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from eva.data.index import build_index
from eva.params import load_params, param
from eva.utils.io import atomic_path, write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage

INDEX_DIR = Path("data/index")
METRICS = Path("metrics/index.json")


def main() -> None:
    setup_logging()
    params = load_params()
    name = param(params, "dataset.name")
    result = build_index(
        name,
        root=param(params, "dataset.root"),
        annotations=param(params, "dataset.annotations"),
        split=param(params, "dataset.split"),
        class_list=param(params, "dataset.class_list"),
        val_fraction=param(params, "dataset.val_fraction"),
    )
    with atomic_path(INDEX_DIR / f"{name}.parquet") as tmp:
        pq.write_table(result.table, tmp)
    write_json(INDEX_DIR / f"{name}.classes.json", result.classes)
    write_json(METRICS, result.metrics())


if __name__ == "__main__":
    run_stage("index", main)
