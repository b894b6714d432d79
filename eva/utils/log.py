"""Logging and progress: tqdm on a terminal, periodic plain log lines otherwise (CI, SLURM logs)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("eva")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def progress(items: Iterable[T], desc: str, total: int | None = None, every_s: float = 30.0) -> Iterator[T]:
    """Iterate with a tqdm bar on a TTY, or a log line every `every_s` seconds when not on a TTY."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, dynamic_ncols=True)
        return
    start = last = time.monotonic()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s done (%.1f/s)", desc, count, of, count / (now - start))
    log.info("%s: %d done in %.1f s", desc, count, time.monotonic() - start)
