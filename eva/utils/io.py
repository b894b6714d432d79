"""Atomic writes: an artifact is either complete under its final name or absent."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = True) -> None:
    """Write `obj` as indented JSON, atomically; keys sorted (stable bytes for DVC) unless `obj`'s
    own order is the one to keep (e.g. metrics whose first key is the column `dvc exp show` keeps)."""
    with atomic_path(path) as tmp:
        text = json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False)
        tmp.write_text(text + "\n", encoding="utf-8")


def staging_dir(path: str | os.PathLike[str]) -> Path:
    """Where `atomic_dir` builds `path`: a hidden sibling, so a killed run leaves nothing under the final name."""
    final = Path(path)
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder; swap it in for `path` only if the block succeeds.

    A run killed mid-way (even `kill -9`) leaves the staging folder, which the next run empties
    first; `path` itself only ever holds a finished output (or nothing, between the two renames).
    """
    final = Path(path)
    staging = staging_dir(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    else:
        final.unlink(missing_ok=True)
    os.replace(staging, final)
