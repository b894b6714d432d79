"""The sample count beside each shard: `train-000000.json` ({samples, bytes}) next to `train-000000.tar`.

Written by the extract stage when it publishes a shard, read by the loaders so that a rank counts a
split without reading tar headers. Its own module: the train and evaluate stages read it without
depending on the extraction code (eva/utils/code_deps.py lists the modules a stage imports).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def count_file(shard: Path) -> Path:
    """`train-000000.tar` -> `train-000000.json`: the shard's sample count and size in bytes."""
    return shard.with_name(shard.name.removesuffix(".tar") + ".json")


def counted_samples(shard: str | Path) -> int | None:
    """The sample count written beside `shard`, or None when absent or not for this file (its size differs)."""
    sidecar = count_file(Path(shard))
    try:
        facts = json.loads(sidecar.read_text(encoding="utf-8"))
        if int(facts["bytes"]) == os.path.getsize(shard):
            return int(facts["samples"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
