"""How a stage ends on a user error: one log line that names the param, then exit status 2.

The library raises ValueError / FileNotFoundError / KeyError with the params.yaml key in the
message (a bad value, a missing file or weights, a missing key). A traceback around that line
hides it, and under several processes every rank would print it, so `run_stage` reports it once
(rank 0) and exits with USER_ERROR_EXIT; a launcher that sees only that status knows the line is
already printed. `EVA_TRACEBACK=1` re-raises instead, for debugging the library itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)
USER_ERROR_EXIT = 2
# Set by a launcher of ours (stages/train.py): workers write their user error there instead of logging it.
USER_ERROR_DIR = "EVA_USER_ERROR_DIR"

log = logging.getLogger("eva.stages")

# What a run measured about the machine and the cache rather than the data: kept out of the declared
# outputs (they would change the files DVC and git track on every run) and written, per stage, to
# metrics/timings/<stage>.json, which is neither tracked nor declared.
TIMINGS_DIR = Path("metrics/timings")
RUN_KEYS = frozenset(
    {"seconds", "seconds_note", "videos_per_second", "throughput_clips_per_s", "peak_memory_mb",
     "device", "cache_key", "shards_reused", "videos_computed"}
)  # fmt: skip


def split_run_facts(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`values` without RUN_KEYS at any depth, those keys alone in the same nesting)."""
    kept: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for key, value in values.items():
        if key in RUN_KEYS:
            facts[key] = value
        elif isinstance(value, Mapping):
            inner_kept, inner_facts = split_run_facts(value)
            kept[key] = inner_kept
            if inner_facts:
                facts[key] = inner_facts
        else:
            kept[key] = value
    return kept, facts


def write_summary(path: str | Path, values: Mapping[str, Any], stage: str, *, sort_keys: bool = True) -> None:
    """Write `values` to `path` (a tracked output: the same bytes for the same data) and their
    timings, throughput and cache facts to metrics/timings/<stage>.json."""
    from eva.utils.io import write_json

    kept, facts = split_run_facts(values)
    write_json(TIMINGS_DIR / f"{stage}.json", facts)
    write_json(path, kept, sort_keys=sort_keys)


def user_error_message(err: BaseException) -> str:
    """The error's own message on one line (KeyError's str() would add quotes)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split())


def run_stage(name: str, main: Callable[[], None], *, uses_torch: bool = True) -> None:
    """Run `main`; a user error becomes `ERROR ... <name>: <message>` on rank 0 and exit status 2.

    `uses_torch`: apply torch's pinned numerics first (`eva.utils.numerics.configure_torch`: a fixed
    thread count). Only stages that never compute with torch pass False (they then never load it).
    """
    try:
        if uses_torch:
            from eva.utils.numerics import configure_torch

            configure_torch()
        main()
    except USER_ERRORS as err:
        if os.environ.get("EVA_TRACEBACK"):
            raise
        rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
        if report_dir := os.environ.get(USER_ERROR_DIR):
            # Started by a launcher of ours: it prints the line once, whichever rank failed first
            # (the others may be stopped by a signal before they could print anything).
            (Path(report_dir) / f"rank{rank}.txt").write_text(user_error_message(err), encoding="utf-8")
            sys.exit(USER_ERROR_EXIT)
        if rank == 0:
            if not logging.getLogger().handlers:
                logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
            log.error("%s stage: %s", name, user_error_message(err))
        sys.exit(USER_ERROR_EXIT)
