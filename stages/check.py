"""Stage `check`: all params and the input paths they name, then each stage's code listing.

Every other stage depends on its listing `data/code/<stage>.sha256` (the files it runs, with their
sha256: eva/utils/code_deps.py), so DVC runs this stage before any other and stops at its error
before it removes any stage's outputs: a mistyped `-S` costs nothing. A listing is rewritten only
when its bytes change, and its bytes change only with the code it lists, so a passing check re-runs
nothing downstream for a params change (DVC compares dependency hashes), and a code change re-runs
exactly the stages that run the changed file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eva.config import load_params, value_at
from eva.params import check_inputs, check_params, check_weights
from eva.utils.code_deps import listing
from eva.utils.io import atomic_path
from eva.utils.log import setup_logging
from stages._entry import run_stage

log = logging.getLogger("eva.stages.check")

CODE = Path("data/code")  # data/code/<stage>.sha256
STAGES = (
    "demo_data",
    "pretrain",
    "index",
    "extract",
    "attributes",
    "train",
    "evaluate",
)  # modules stages.<name>
PRODUCED = (Path("data/demo"),)  # folders a stage writes; `pretrain.out` is added from the params


def main() -> None:
    setup_logging()
    params = load_params()
    produced = (*PRODUCED, Path(value_at(params, "pretrain.out")))
    check_weights(params, produced)  # first: it needs none of the model code the config classes load
    check_params(params)
    check_inputs(params, produced=produced)
    log.info("check: the params and their input paths are valid")
    write_listings()


def write_listings(folder: Path = CODE) -> None:
    """`<folder>/<stage>.sha256` for every stage, each rewritten only when its bytes change."""
    for stage in STAGES:
        path = folder / f"{stage}.sha256"
        text = listing(f"stages.{stage}")
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            log.info("check: %s lists %d source files (changed)", path, text.count("\n"))


if __name__ == "__main__":
    run_stage("check", main)
