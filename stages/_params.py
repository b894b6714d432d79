"""What the stages read from the params besides the config classes: `dataset.name` and `stage`.

The stages read params.yaml with its side files through `eva.config.load_params`; the library gets
configs built from them."""

from __future__ import annotations

from typing import Any

from eva.config import check, value_at
from eva.data.attribute_store import STAGE
from eva.data.index import DATASET_NAME


def dataset_name(params: dict[str, Any]) -> str:
    """`dataset.name` alone, for the stages that record it (gallery title, model.pt, eval.json)."""
    name = value_at(params, "dataset.name")
    check("dataset.name", name, DATASET_NAME)
    return name


def stage_number(params: dict[str, Any]) -> int:
    """The top-level `stage` (1: text attributes, 2: + visual); read once, by the train stage."""
    stage = value_at(params, "stage")
    check("stage", stage, STAGE)
    return stage
