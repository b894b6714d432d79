"""Read the extract stage's WebDataset shards back as `[T, 3, H, W]` uint8 clips plus their json.

Training reads through `video_dataset` (shard + buffer shuffling, split across DDP ranks and
DataLoader workers); attribute extraction and evaluation read everything in order with `iter_videos`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg
from webdataset.tariterators import tarfile_samples

_FRAME = re.compile(r"^(\d{3,})\.jpg$")


@dataclass
class VideoSample:
    key: str
    frames: torch.Tensor  # uint8 [T, 3, H, W]
    meta: dict[
        str, Any
    ]  # video_id, label, label_name, split, fps, frame_indices, timestamps, orig_size, duration, num_frames


def list_shards(root: str | Path, split: str) -> list[str]:
    """Sorted paths of `<split>-NNNNNN.tar` in `root`; an error naming the directory if there are none."""
    root = Path(root)
    pattern = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar$")
    paths = sorted(str(p) for p in root.glob(f"{split}-*.tar") if pattern.match(p.name))
    if not paths:
        raise FileNotFoundError(
            f"no '{split}-NNNNNN.tar' shards in {root} (run the extract stage: dvc repro extract)"
        )
    return paths


def decode_sample(raw: dict[str, Any]) -> VideoSample:
    """A raw webdataset sample (`__key__`, `NNN.jpg`..., `json` as bytes) -> VideoSample."""
    key = raw["__key__"]
    meta = json.loads(raw["json"])
    names = sorted((int(m.group(1)), name) for name in raw if (m := _FRAME.match(name)))
    if not names or len(names) != meta.get("num_frames", len(names)):
        raise ValueError(
            f"sample {key!r} in {raw.get('__url__', '?')}: {len(names)} frames, json says {meta.get('num_frames')}"
        )
    data = [torch.frombuffer(bytearray(raw[name]), dtype=torch.uint8) for _, name in names]
    frames = torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB))  # [T, 3, H, W]
    return VideoSample(key=key, frames=frames, meta=meta)


def _node_slot() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class VideoShardDataset(IterableDataset):
    """Shards -> VideoSample, each sample seen by exactly one (rank, DataLoader worker) per epoch.

    Splitting is by shard when there are at least as many shards as readers; with fewer shards
    (small datasets, many GPUs) every reader walks all shards and keeps every n-th sample, so no
    reader is ever left empty. Shuffling is deterministic in (seed, epoch): call `set_epoch`.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        shuffle: int = 0,
        seed: int = 0,
        split_by_node: bool = True,
        split_by_worker: bool = True,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("video_dataset: empty shard list")
        self.urls = list(urls)
        self.shuffle = shuffle
        self.seed = seed
        self.split_by_node = split_by_node
        self.split_by_worker = split_by_worker
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _reader_slot(self) -> tuple[int, int]:
        rank, world = _node_slot() if self.split_by_node else (0, 1)
        info = get_worker_info() if self.split_by_worker else None
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[VideoSample]:
        slot, slots = self._reader_slot()
        urls = list(self.urls)
        if self.shuffle > 0:
            random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(urls)
        by_shard = len(urls) >= slots
        if by_shard:
            urls = urls[slot::slots]
        samples: Iterator[dict[str, Any]] = tarfile_samples([{"url": u} for u in urls])
        if not by_shard:
            samples = islice(samples, slot, None, slots)
        if self.shuffle > 0:
            samples = buffer_shuffle(
                samples, self.shuffle, random.Random(f"samples-{self.seed}-{self.epoch}-{slot}")
            )
        for raw in samples:
            yield decode_sample(raw)


def buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield a random element of a `size`-item buffer at a time (raw bytes, decoded later)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def video_dataset(
    urls: list[str],
    *,
    shuffle: int = 0,
    seed: int = 0,
    split_by_node: bool = True,
    split_by_worker: bool = True,
) -> VideoShardDataset:
    """IterableDataset of VideoSample; `shuffle` > 0 shuffles shard order and a buffer of that many samples."""
    return VideoShardDataset(
        urls, shuffle=shuffle, seed=seed, split_by_node=split_by_node, split_by_worker=split_by_worker
    )


def iter_videos(urls: list[str]) -> Iterator[VideoSample]:
    """Every sample of `urls`, in shard order then tar order (the index order), in this process."""
    for raw in tarfile_samples([{"url": u} for u in urls]):
        yield decode_sample(raw)
