"""Write a folder into the Hugging Face hub cache layout, as `snapshot_download` leaves it.

`<cache>/models--<org>--<name>/refs/main` holds the revision; `snapshots/<revision>/` the files
(hard links of the originals). `from_pretrained("<org>/<name>")` and `try_to_load_from_cache` then
find them offline, exactly as they find real downloaded weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REVISION = "0" * 40


def put_in_hub_cache(folder: str | Path, cache: str | Path, repo_id: str, revision: str = REVISION) -> Path:
    """Place every file of `folder` as repo `repo_id` in hub cache `cache`; return the snapshot folder."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    for src in Path(folder).rglob("*"):
        if src.is_file():
            dst = snapshot / src.relative_to(folder)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    return snapshot
