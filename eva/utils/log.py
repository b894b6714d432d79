"""Logging and progress: tqdm on a terminal, periodic plain log lines otherwise (CI, SLURM logs)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("eva")


PROJECT_LOGGER = "eva"
LEVEL_ENV = "EVA_LOG_LEVEL"


class DemoteThirdPartyInfo(logging.Filter):
    """Re-level INFO records from outside `eva` to DEBUG, then keep them only if DEBUG is on.

    open_clip reports every model load (a dozen lines) through the *root* logger, so a root
    level of INFO would print them in every stage; warnings and errors from any library stay.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == PROJECT_LOGGER or record.name.startswith(PROJECT_LOGGER + ".")
        if own or record.levelno >= logging.WARNING or record.levelno < logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


def quiet_third_party_bars() -> None:
    """Turn off the tqdm bars of transformers and the hub ("Loading weights", "Writing model shards").

    Off a terminal (CI, SLURM logs, `dvc repro > log`) they become long carriage-return lines; our own
    `progress` logs plain lines there instead. Both libraries read the switch at import, so an already
    imported one is told directly and a later import finds it in the environment.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr at `level` (or `EVA_LOG_LEVEL=DEBUG` etc. from the environment, which wins).

    The project's INFO lines are shown; other libraries' INFO lines are demoted to DEBUG.
    """
    env = os.environ.get(LEVEL_ENV, "").strip().upper()
    if env:
        named = logging.getLevelName(env)
        if not isinstance(named, int):
            raise ValueError(f"{LEVEL_ENV}={env!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
        level = named
    if not sys.stderr.isatty():
        quiet_third_party_bars()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(DemoteThirdPartyInfo(level))
    logging.basicConfig(level=level, handlers=[handler], force=True)


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
