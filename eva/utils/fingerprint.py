"""Cheap content fingerprints of inputs, so cached or resumable work is never reused for other inputs.

The attributes stage keys its part files with them, and a training run's resume file is keyed with
them: a rewritten shard, attribute table or local weights folder has other bytes, so it never
resumes or reuses work done on the old one, while a copy or a `dvc checkout` of the same bytes does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FINGERPRINT_BYTES = 1 << 20  # how much of each end of a file is read
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the `eva` package


def file_fingerprint(path: Path) -> str:
    """Size + first and last MiB (all of a file up to 2 MiB): cheap on multi-GB shards, and any
    re-extraction changes them."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        # the tail, never overlapping the head: every byte of a file up to 2 MiB counts
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            h.update(f.read())
    return h.hexdigest()[:16]


def path_fingerprint(source: str | Path) -> str:
    """Fingerprint of a local file or folder; hub names and tags are immutable names, kept as-is."""
    if not source:
        return ""
    path = Path(source)
    if path.is_file():
        return file_fingerprint(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(
            "".join(f"{p.relative_to(path)}:{file_fingerprint(p)};" for p in files).encode()
        ).hexdigest()[:16]
    return str(source)


def code_fingerprint(root: str | Path = PACKAGE_ROOT) -> str:
    """Digest of the Python sources under `root` (default: the `eva` package) by path and content.

    DVC re-runs training when its code changes; without this in the run identity a finished run of
    the same params would then be "resumed" and the old model written again.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
