"""Stage `extract`: data/index/videos.parquet -> shards/<split>-%06d.tar, metrics/extract.json.

Under torchrun or SLURM (RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS) each process writes a disjoint
set of shards into the same directory and its own metrics/extract.rank<r>-of-<w>.json.
A single process builds shards/ in a hidden staging folder and swaps it in when done, so
`kill -9` mid-run leaves no output from that run under its final name; metrics are written last.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eva.config import load_params
from eva.data.extract import ExtractConfig, extract_shards
from eva.data.index import read_index
from eva.utils.dist import worker_slot
from eva.utils.io import atomic_dir
from eva.utils.log import setup_logging
from stages._entry import run_stage, write_summary
from stages._layout import INDEX, SHARDS

log = logging.getLogger("eva.stages.extract")


def main() -> None:
    setup_logging()
    params = load_params()
    cfg = ExtractConfig.from_params(params)
    if not INDEX.exists():
        raise FileNotFoundError(f"{INDEX} not found: run the index stage first")
    slot = worker_slot()
    index = read_index(INDEX)
    out = SHARDS
    if slot.world_size == 1:  # build the folder aside: a killed run leaves no shard under `out`
        with atomic_dir(out) as staging:
            result = extract_shards(index, staging, cfg, slot)
    else:  # ranks share `out`; each shard is still published complete or not at all
        result = extract_shards(index, out, cfg, slot)
    metrics = Path("metrics/extract.json")
    if slot.world_size > 1:
        metrics = metrics.with_name(f"extract.rank{slot.rank}-of-{slot.world_size}.json")
    summary = result.metrics()
    write_summary(metrics, summary, metrics.stem)  # per rank under several: extract.rank<r>-of-<w>
    log.info(
        "extract: %d written, %d failed, %d shards, %.1f videos/s -> %s",
        summary["written"], summary["failed"], summary["shards"], summary["videos_per_second"], metrics,
    )  # fmt: skip
    if summary["videos"] and not summary["written"]:
        raise RuntimeError(f"extract: none of {summary['videos']} videos could be decoded; see {metrics}")


if __name__ == "__main__":
    run_stage("extract", main, uses_torch=False)  # no torch: its decode workers re-import this module
