"""Stage `check`: all of params.yaml and the input paths it names -> data/params.checked.

The pipeline's first stages (demo_data, pretrain, index) depend on `data/params.checked`, so DVC
runs this stage before any other and stops at its error before it removes any stage's outputs: a
mistyped `-S` costs nothing. The file's bytes never change, so a passing check re-runs nothing
downstream (DVC compares dependency hashes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from eva.config import value_at
from eva.params import check_inputs, check_params, check_weights
from eva.utils.io import atomic_path
from eva.utils.log import setup_logging
from stages._entry import run_stage
from stages._params import load_params

log = logging.getLogger("eva.stages.check")

CHECKED = Path("data/params.checked")
TEXT = "params.yaml and the input paths it names pass `python -m stages.check`\n"
PRODUCED = (Path("data/demo"),)  # folders a stage writes; `pretrain.out` is added from the params


def main() -> None:
    setup_logging()
    params = load_params()
    produced = (*PRODUCED, Path(value_at(params, "pretrain.out")))
    check_weights(params, produced)  # first: it needs none of the model code the config classes load
    check_params(params)
    check_inputs(params, produced=produced)
    if not CHECKED.is_file() or CHECKED.read_text(encoding="utf-8") != TEXT:
        with atomic_path(CHECKED) as tmp:
            tmp.write_text(TEXT, encoding="utf-8")
    log.info("check: params.yaml and its input paths are valid")


if __name__ == "__main__":
    run_stage("check", main)
