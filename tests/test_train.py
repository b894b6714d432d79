"""Training on a tiny end-to-end fixture: generated videos -> extract shards -> attribute parquet -> tiny ViT.

The attribute file is written with the store's own writer in the contract format (random
embeddings stand in for the attribute stage's encoders, which would only cost time here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from conftest import moving_square, torch_threads
from torch.distributed import TCPStore

import eva.train.loop as loop
from eva.config import load_params
from eva.data.attribute_store import (
    AttributeStore,
    rows_to_table,
    write_table,
)
from eva.data.clips import (
    Augment,
    ClipSpec,
    VideoAttributeDataset,
    batch_to_device,
    make_loader,
    normalize,
    random_resized_crop_box,
    sample_frame_indices,
    spatial_crops,
    split_size,
    train_clip,
)
from eva.data.shards import list_shards
from eva.demo import tiny_training
from eva.demo.tiny import save_tiny_open_clip
from eva.demo.tiny_training import (
    CLASSES,
    FRAMES,
    META,
    MISSING,
    SPEC,
    TinyData,
    model_config,
    write_tiny_data,
)
from eva.demo.tiny_training import attribute_rows as _attribute_rows
from eva.methods import PUBLISHED_RECIPES, Recipe
from eva.models import METHODS, ModelConfig, VideoClassifier, build_model
from eva.models.trained import load_trained_model
from eva.train.checkpoint import resume_path
from eva.train.config import TrainConfig, TrainJob
from eva.train.loop import run_training
from eva.train.optim import build_optimizer, param_groups
from eva.train.schedule import cosine_with_warmup
from eva.utils.ddp import DistEnv
from eva.utils.fingerprint import code_fingerprint, file_fingerprint
from stages import _layout as layout

_one_thread = torch_threads(1)  # tiny tensors: a second thread only adds contention on 2 cores


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return write_tiny_data(tmp_path_factory.mktemp("train_fixture"))


def make_job(data: TinyData, out: Path, model: dict | None = None, **train) -> TrainJob:
    return tiny_training.make_job(data, out, model, params={"test": True}, **train)


def clip_spec(**overrides) -> ClipSpec:
    fields = dict(num_frames=FRAMES, image_size=SPEC.image_size)
    fields.update(overrides)
    return ClipSpec(**fields)


# ----------------------------------------------------------------------------- sampling and transforms


@pytest.mark.parametrize("stored,frames", [(16, 8), (8, 8), (10, 4), (3, 8)])
def test_train_frame_indices_fall_one_per_segment(stored: int, frames: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_frame_indices(stored, frames, train=True, generator=gen)
        assert len(idx) == frames and all(0 <= i < stored for i in idx)
        assert idx == sorted(idx)
        if stored >= frames:
            assert len(set(idx)) == frames  # one distinct frame per segment
            for i, j in enumerate(idx):
                assert i * stored // frames <= j < (i + 1) * stored // frames


def test_train_frame_indices_are_random_but_seeded() -> None:
    draws = {
        tuple(sample_frame_indices(16, 4, train=True, generator=torch.Generator().manual_seed(s)))
        for s in range(10)
    }
    assert len(draws) > 1
    again = sample_frame_indices(16, 4, train=True, generator=torch.Generator().manual_seed(3))
    assert again == sample_frame_indices(16, 4, train=True, generator=torch.Generator().manual_seed(3))


def test_eval_frame_indices_are_segment_centres_and_clips_spread() -> None:
    assert sample_frame_indices(16, 4, train=False) == [2, 6, 10, 14]
    clips = [sample_frame_indices(16, 4, train=False, clip_index=c, num_clips=4) for c in range(4)]
    assert clips == [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]
    with pytest.raises(ValueError, match="evaluate.clips"):
        sample_frame_indices(16, 4, train=False, clip_index=2, num_clips=2)
    with pytest.raises(ValueError, match="model.frames"):
        sample_frame_indices(16, 0, train=False)


def test_spatial_crops_along_the_long_side() -> None:
    wide = torch.arange(40, dtype=torch.uint8).expand(2, 3, 20, 40)  # value = x coordinate
    views = spatial_crops(wide, 20, crops=3)  # [3, T, 3, 20, 20] (no resize: short side is already 20)
    assert views.shape == (3, 2, 3, 20, 20)
    assert [v[0, 0, 0, 0].item() for v in views] == [0.0, 10.0, 20.0]  # left, centre, right
    assert spatial_crops(wide, 20, crops=1)[0, 0, 0, 0, 0].item() == 10.0
    tall = wide.transpose(-1, -2)
    assert [v[0, 0, 0, 0].item() for v in spatial_crops(tall, 20, crops=3)] == [
        0.0,
        10.0,
        20.0,
    ]  # top..bottom
    assert spatial_crops(torch.zeros(1, 3, 64, 48, dtype=torch.uint8), 16, crops=1).shape == (1, 1, 3, 16, 16)
    with pytest.raises(TypeError, match="uint8"):  # resized in uint8, as decoded
        spatial_crops(torch.zeros(1, 3, 64, 48), 16)


def test_train_clip_crops_every_frame_alike_and_never_flips_by_default() -> None:
    frames = torch.from_numpy(moving_square(4, 32)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    still = frames[:1].expand(4, -1, -1, -1)
    for seed in range(5):
        out = train_clip(
            still, 24, Augment(crop_scale=(0.3, 1.0)), generator=torch.Generator().manual_seed(seed)
        )
        assert out.shape == (4, 3, 24, 24)
        assert torch.equal(out[0], out[3])  # same crop box for the whole clip
    box = random_resized_crop_box(32, 32, (0.5, 0.5), generator=torch.Generator().manual_seed(0))
    assert abs(box[2] * box[3] - 512) < 40
    # Without flips the square still moves right after the crop: compare the red mass's centre.
    out = train_clip(frames, 32, Augment(crop_scale=(0.9, 1.0)), generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8
    red = (out[:, 0].float() - out[:, 1].float()).clamp(min=0)  # [T, S, S]
    xs = (red.sum(dim=1) * torch.arange(32.0)).sum(dim=1) / red.sum(dim=(1, 2))
    assert xs[-1] > xs[0]


def test_warmup_then_cosine() -> None:
    lrs = [cosine_with_warmup(s, warmup_steps=4, total_steps=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False)) and lrs[-1] < 0.01


@pytest.mark.parametrize(("warmup", "total"), [(50, 400), (30, 200)])  # pretrain.yaml's clip, captioner
def test_the_pretraining_rounding_is_the_demo_models(warmup: int, total: int) -> None:
    """`angle_first` is the formula the demo's pretrained models were made with, bit for bit (their
    bytes depend on it); the default rounds `pi * (elapsed / decay)` and differs in the last bit."""
    made_with = [
        (s + 1) / warmup if s < warmup else 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        for s in range(total + 1)
    ]
    angle_first = [
        cosine_with_warmup(s, warmup_steps=warmup, total_steps=total, angle_first=True)
        for s in range(total + 1)
    ]
    default = [cosine_with_warmup(s, warmup_steps=warmup, total_steps=total) for s in range(total + 1)]
    assert angle_first == made_with
    assert default != made_with and max(abs(a - b) for a, b in zip(default, made_with, strict=True)) < 1e-15


# ----------------------------------------------------------------------------- dataset


def test_dataset_joins_attributes_and_skips_videos_without_them(data: TinyData) -> None:
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    urls = list_shards(data.shards, "train")
    assert split_size(urls, store).skipped == 1
    names = ("label", "caption")
    train = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=4, attributes=store,
                                  attribute_names=names, steps=3)  # fmt: skip
    batches = list(train)
    assert len(batches) == 3
    batch = batches[0]
    assert batch["video"].shape == (4, FRAMES, 3, 32, 32) and batch["video"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["attributes"]["label"].dtype == torch.float32
    assert batch["attributes"]["caption"].shape == (4, META.text_layers, META.dim)
    seen = {v for b in batches for v in b["video_id"]}
    assert MISSING not in seen and len(seen) == 11  # 3 x 4 positions cover the 11 usable videos
    # Training draws one keyframe per video; evaluation hands over all K keyframes (extra views).
    vid, row = batch["video_id"][0], store.get(batch["video_id"][0], names)
    assert any(torch.equal(batch["attributes"]["label"][0], row["label"][k].float()) for k in range(2))
    evaluation = VideoAttributeDataset(urls, clip_spec(clips=2, crops=3), train=False, batch_size=5,
                                       attributes=store, attribute_names=names)  # fmt: skip
    batches = list(evaluation)
    assert [len(b["video_id"]) for b in batches] == [5, 5, 1]
    assert batches[0]["video"].shape == (5, 6, FRAMES, 3, 32, 32)  # [B, clips*crops, T, 3, S, S]
    all_label = {v: a for b in batches for v, a in zip(b["video_id"], b["attributes"]["label"], strict=True)}
    torch.testing.assert_close(all_label[vid], row["label"].float(), atol=0, rtol=0)  # [K, L, D]


def global_batches(data: TinyData, world: int, workers: int, epoch: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per global step: video id -> input video, merged over the ranks of a `world`-process run."""
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    merged: list[dict[str, torch.Tensor]] = []
    for rank in range(world):
        ds = VideoAttributeDataset(
            list_shards(data.shards, "train"), clip_spec(), train=True, batch_size=4 // world, attributes=store,
            attribute_names=("label",), steps=2, seed=7, rank=rank, world_size=world, workers=workers,
        )  # fmt: skip
        ds.set_epoch(epoch)
        assert ds.mode == "samples"
        for step, batch in enumerate(make_loader(ds)):
            if rank == 0:
                merged.append({})
            merged[step].update(zip(batch["video_id"], batch["video"], strict=True))
    return merged


def test_ranks_and_workers_share_one_global_batch_sequence(data: TinyData) -> None:
    single = global_batches(data, world=1, workers=0)
    split = global_batches(data, world=2, workers=2)
    assert [sorted(b) for b in single] == [sorted(b) for b in split]
    assert all(len(b) == 4 for b in split)
    for one, two in zip(single, split, strict=True):
        for vid, video in one.items():
            assert torch.equal(video, two[vid])  # same frames, same crop: augmentation is per video
    assert [sorted(b) for b in global_batches(data, world=1, workers=0, epoch=1)] != [
        sorted(b) for b in single
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_one_iteration_over_several_epochs_gives_each_epochs_batches(data: TinyData, workers: int) -> None:
    """A training loader is iterated once for all epochs (its workers persist); the batches of each
    epoch are those of that epoch alone, also with an odd step count split over 2 workers."""
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    urls = list_shards(data.shards, "train")

    def batches(start: int, stop: int) -> list[tuple[list[str], torch.Tensor]]:
        ds = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=2, attributes=store,
                                   attribute_names=("label",), steps=3, seed=5, workers=workers)  # fmt: skip
        ds.set_epoch(start, stop)
        return [(b["video_id"], b["video"]) for b in make_loader(ds)]

    together = batches(0, 3)
    apart = [b for epoch in range(3) for b in batches(epoch, epoch + 1)]
    assert len(together) == len(apart) == 9
    for (ids, video), (ids_apart, video_apart) in zip(together, apart, strict=True):
        assert ids == ids_apart and torch.equal(video, video_apart)
    assert [ids for ids, _ in together[:3]] != [ids for ids, _ in together[3:6]]  # epochs differ
    with pytest.raises(ValueError, match="empty epoch range"):
        VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=2, steps=3).set_epoch(2, 2)


def test_reading_data_leaves_the_models_random_stream_alone(data: TinyData) -> None:
    """Loader iterators draw no number from torch's global generator (dropout and drop path use it)."""
    urls = list_shards(data.shards, "train")
    ds = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=4, steps=2, workers=1)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    loader = make_loader(ds)
    for _ in range(2):  # a persistent-worker loader, iterated twice
        assert len(list(loader)) == 2
    assert torch.equal(torch.rand(3), expected)


def test_the_fast_read_paths_give_the_plain_paths_batches(
    data: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's shard reader (frames read only when decoded), its channels-last decode and the
    attribute store's raw row reads give, bit for bit, the batches of webdataset's reader, planar
    frames and pyarrow's row-group decode (docs/performance.md, issue 37)."""
    from webdataset.tariterators import tarfile_samples

    import eva.data.clips as clips
    from eva.data.shards import EncodedVideo

    names = ("label", "caption", "original")
    augments = (Augment(flip=True, crop_scale=(0.08, 1.0)),
                Augment(crop="multi_scale", rand_augment_ops=2, erasing=0.5, erase_value=(120, 110, 100)))  # fmt: skip

    def batches() -> list[dict[str, Any]]:
        store = AttributeStore(data.root / "attributes" / "train.parquet")
        out = []
        for augment in augments:
            for shards, world in ((data.shards, 1), (data.many_shards, 2)):
                urls = list_shards(shards, "train")
                train = VideoAttributeDataset(urls, clip_spec(augment=augment), train=True, batch_size=3,
                                              attributes=store, attribute_names=names, steps=3, seed=5,
                                              world_size=world)  # fmt: skip
                train.set_epoch(1, 3)
                out += list(train)
        evaluation = VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(clips=2, crops=3),
                                           train=False, batch_size=4, attributes=store, attribute_names=names)  # fmt: skip
        return out + list(evaluation)

    fast = batches()
    decode = EncodedVideo.decode
    monkeypatch.setattr(
        clips, "tar_samples", lambda urls, lazy_frames: tarfile_samples([{"url": u} for u in urls])
    )
    monkeypatch.setattr(
        EncodedVideo, "decode", lambda self, indices=None, channels_last=False: decode(self, indices)
    )
    monkeypatch.setattr(AttributeStore, "_column_runs", lambda self, group, name: None)
    plain = batches()
    assert len(fast) == len(plain) == 2 * (6 + 6) + 3
    for a, b in zip(fast, plain, strict=True):
        assert a["video_id"] == b["video_id"] and torch.equal(a["label"], b["label"])
        assert a["video"].dtype == torch.uint8 and torch.equal(a["video"], b["video"])
        assert a["video"].movedim(-3, -1).is_contiguous()  # each pixel's RGB adjacent, as decoded
        assert all(torch.equal(a["attributes"][n], b["attributes"][n]) for n in names)
        mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
        video = batch_to_device(a, torch.device("cpu"), mean, std)[0]
        assert video.is_contiguous() and torch.equal(
            video, batch_to_device(b, torch.device("cpu"), mean, std)[0]
        )


def test_device_decode_on_the_cpu_gives_the_loader_workers_batches(data: TinyData) -> None:
    """`train.decode` / `evaluate.decode: device`: workers ship JPEG bytes and each clip's plan, the main
    process decodes and augments in `batch_to_device`; on the CPU that is the workers' batches bit for
    bit (the same draws in the same order, keyframes included; the same decoder and augmentation code)."""
    from eva.data.clips import EncodedClips

    names = ("label", "caption")
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    augments = (Augment(flip=True, crop_scale=(0.08, 1.0), rand_augment_ops=2, erasing=0.5),
                Augment(crop="multi_scale", flip=True, rand_augment_ops=3, rand_augment_magnitude=15,
                        erasing=1.0, erase_value=(120, 110, 100)))  # fmt: skip

    def batches(decode: str) -> list[dict[str, Any]]:
        out = []
        for augment, workers in zip(augments, (0, 1), strict=True):
            train = VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(augment=augment),
                                          train=True, batch_size=3, attributes=store, attribute_names=names,
                                          steps=2, seed=5, workers=workers, decode=decode)  # fmt: skip
            train.set_epoch(1, 3)
            out += list(make_loader(train))
        evaluation = VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(clips=2, crops=3),
                                           train=False, batch_size=4, attributes=store, attribute_names=names,
                                           workers=1, decode=decode)  # fmt: skip
        return out + list(make_loader(evaluation))

    workers, device = batches("cpu"), batches("device")
    assert len(workers) == len(device) == 2 * 4 + 3
    for a, b in zip(workers, device, strict=True):
        assert isinstance(b["video"], EncodedClips) and len(b["video"]) == len(a["video_id"])
        assert a["video_id"] == b["video_id"] and torch.equal(a["label"], b["label"])
        assert all(torch.equal(a["attributes"][n], b["attributes"][n]) for n in names)  # same keyframes
        cpu = torch.device("cpu")
        video_a, _, _ = batch_to_device(a, cpu, mean, std)
        video_b, _, _ = batch_to_device(b, cpu, mean, std)
        assert video_a.shape == video_b.shape and torch.equal(video_a, video_b)
    with pytest.raises(ValueError, match="train.decode"):
        VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(), train=True, batch_size=1, steps=1,
                              decode="gpu")  # fmt: skip


@pytest.mark.parametrize(
    ("height", "width", "size"), [(256, 340, 224), (256, 256, 224), (120, 90, 224), (64, 48, 32)]
)
def test_the_device_resize_is_within_one_of_the_cpu_kernel(height: int, width: int, size: int) -> None:
    """Off the CPU (`decode: device` on CUDA) the crop is resized in float and rounded; on the CPU in
    torch's uint8 kernel. Both run here on the CPU: every pixel within 1 (about a fifth of them off by
    one: the uint8 kernel's fixed-point weights), shrinking (antialiased) and enlarging, on a crop box
    as training draws it. Part of `decode: device`'s stated tolerance (`DEVICE_DECODE_TOLERANCE`)."""
    from eva.data.clips import _resize, _resize_float

    generator = torch.Generator().manual_seed(height + width)
    smooth = torch.nn.functional.interpolate(  # smooth content with edges, as decoded frames have
        torch.rand(8, 3, height // 8, width // 8, generator=generator), size=(height, width), mode="bilinear"
    )
    frames = (smooth * 255 + torch.randint(-20, 21, (8, 3, height, width), generator=generator)).clamp(0, 255)
    frames = frames.to(torch.uint8).contiguous(memory_format=torch.channels_last)  # as the loader decodes
    top, left, h, w = random_resized_crop_box(height, width, (0.3, 1.0), generator=generator)
    crop = frames[..., top : top + h, left : left + w]
    cpu, device_path = _resize(crop, (size, size)), _resize_float(crop, (size, size))
    diff = (cpu.int() - device_path.int()).abs()
    assert cpu.shape == device_path.shape == (8, 3, size, size)
    assert int(diff.max()) <= 1 and float(diff.float().mean()) < 0.25  # measured: 0.18-0.20


def test_batches_stay_uint8_until_the_device_normalises_them(data: TinyData) -> None:
    urls = list_shards(data.shards, "train")
    ds = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=4, steps=1)
    batch = next(iter(ds))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    video, attributes, labels = batch_to_device(batch, torch.device("cpu"), mean, std)
    assert batch["video"].dtype == torch.uint8 and video.dtype == torch.float32 and attributes is None
    expected = (batch["video"].float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    torch.testing.assert_close(video, expected, atol=1e-6, rtol=0)
    assert torch.equal(labels, batch["label"])


def test_the_loader_starts_no_worker_beyond_the_batches_there_are(data: TinyData) -> None:
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    urls = list_shards(data.shards, "train")
    for steps, workers in ((3, 3), (1, 0)):  # training: a worker per batch at most; none for a single batch
        train = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=4, attributes=store, steps=steps,
                                      workers=8)  # fmt: skip
        assert train.num_workers == workers and len(list(make_loader(train))) == steps
    # 11 usable videos in batches of 5 -> 3 workers; in one batch of 11 -> none (nothing to overlap)
    for batch_size, workers in ((5, 3), (11, 0)):
        val = VideoAttributeDataset(urls, clip_spec(), train=False, batch_size=batch_size, attributes=store,
                                    workers=8, samples=split_size(urls, store).usable)  # fmt: skip
        assert val.num_workers == workers
        ids = [v for b in make_loader(val) for v in b["video_id"]]
        assert len(ids) == len(set(ids)) == 11 and MISSING not in ids  # every usable video once


def test_many_shards_are_dealt_to_ranks_with_equal_step_counts(data: TinyData) -> None:
    urls = list_shards(data.many_shards, "train")
    assert len(urls) == 4
    store = AttributeStore(data.root / "attributes" / "train.parquet")
    ids = []
    for rank in range(2):
        ds = VideoAttributeDataset(urls, clip_spec(), train=True, batch_size=2, attributes=store,
                                   steps=2, rank=rank, world_size=2)  # fmt: skip
        assert ds.mode == "shards"
        batches = list(ds)
        assert len(batches) == 2  # the same number of steps on every rank
        ids.append({v for b in batches for v in b["video_id"]})
    assert not ids[0] & ids[1]  # disjoint shards


# ----------------------------------------------------------------------------- optimisation


def test_optimizer_holds_exactly_the_tunable_tensors_and_only_they_get_gradients(data: TinyData) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(data, head_dropout=0.0))
    tunable = dict(model.named_tunable_parameters())
    groups = param_groups(model, Recipe(lr=1e-2, weight_decay=0.05))
    assert all(g["lr"] == 1e-2 for g in groups)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in tunable.values()}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(tunable["head.fc.bias"]) in no_decay and id(tunable["attribute_tokens.offsets"]) in no_decay
    assert id(tunable["temporal_embedding"]) in no_decay and id(tunable["head.fc.weight"]) not in no_decay
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in in_optimizer}
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)

    store = AttributeStore(data.root / "attributes" / "train.parquet")
    ds = VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(), train=True, batch_size=4,
                               attributes=store, attribute_names=("label", "caption"), steps=1)  # fmt: skip
    batch = next(iter(ds))
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    model.train()
    video = normalize(batch["video"], model.mean, model.std)
    torch.nn.functional.cross_entropy(model(video, batch["attributes"]), batch["label"]).backward()
    optimizer.step()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(
        tunable[n].grad is not None for n in ("head.fc.weight", "attribute_tokens.projections.label.weight")
    )
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_params_yaml_recipes_are_the_published_ones_and_settable() -> None:
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    for method in METHODS:
        params["model"]["method"] = method
        assert TrainConfig.from_params(params).recipe == PUBLISHED_RECIPES[method].recipe, method
    params["model"]["method"] = "full"
    params["train"]["recipes"]["full"]["backbone_lr"] = (
        3e-5  # what `-S train.recipes.full.backbone_lr=3e-5` does
    )
    assert TrainConfig.from_params(params).recipe.backbone_lr == 3e-5
    params["train"]["recipes"]["full"]["backbone_lr"] = 0.0
    with pytest.raises(ValueError, match=r"train\.recipes\.full\.backbone_lr"):
        TrainConfig.from_params(params)
    params["train"]["recipes"]["full"] |= {"backbone_lr": 1e-5, "betas": [0.9, 0.99]}
    with pytest.raises(ValueError, match=r"unknown keys \['train\.recipes\.full\.betas'\]"):
        TrainConfig.from_params(params)
    del params["train"]["recipes"]["full"]
    with pytest.raises(KeyError, match=r"train\.recipes\.full"):
        TrainConfig.from_params(params)
    with pytest.raises(ValueError, match=r"train\.recipes\.vpt\.optimizer"):
        Recipe(name="vpt", optimizer="lamb")


def test_full_fine_tuning_moves_backbone_weights_at_the_backbone_rate(data: TinyData) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(data, method="full", attributes=(), head_dropout=0.0))
    recipe = PUBLISHED_RECIPES["full"].recipe
    optimizer = build_optimizer(model, recipe)
    in_backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        from_backbone = {id(p) in in_backbone for p in group["params"]}
        assert len(from_backbone) == 1  # no group mixes backbone and new tensors
        assert group["lr"] == (recipe.backbone_lr if from_backbone.pop() else recipe.lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    video = torch.randn(2, FRAMES, 3, SPEC.image_size, SPEC.image_size)
    model.train()
    torch.nn.functional.cross_entropy(model(video), torch.tensor([0, 1])).backward()
    optimizer.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    # Adam's first step moves each weight by about its group's lr (plus lr * wd * w).
    backbone = max(v for n, v in moved.items() if n.startswith("backbone."))
    assert 0 < backbone <= 1.1 * recipe.backbone_lr
    assert moved["head.fc.weight"] == pytest.approx(recipe.lr, rel=0.1)


def test_a_few_steps_lower_the_loss(data: TinyData, tmp_path: Path) -> None:
    # Overfit 8 videos (3 of the 3-video shards; one of them lacks attributes): one step per epoch.
    shards = list_shards(data.many_shards, "train")
    job = make_job(data, tmp_path, epochs=6, batch_size=8, lr=1e-2, warmup_epochs=0, label_smoothing=0.0,
                   crop_scale=(0.9, 1.0), model={"head_dropout": 0.0})  # fmt: skip
    job.train_shards = [shards[0], shards[1], shards[3]]
    job.val_shards, job.val_attributes = job.train_shards, job.train_attributes  # measures the fit
    result = run_training(job)
    # The fit (loss on the same 8 videos without augmentation) ends clearly below where it started,
    # and the last three epochs sit below the first three on average. It falls slowly: a random tiny
    # ViT gives every video nearly the same features (std ~0.05 around a common mean), so a single
    # step may wobble; the trend may not.
    fit = [h["val_loss"] for h in result.history]
    assert len(result.steps) == 6 and len(fit) == 6, fit
    assert fit[-1] < fit[0] - 0.005 and sum(fit[3:]) < sum(fit[:3]), fit

    saved = torch.load(job.output, weights_only=True)
    assert saved["classes"] == CLASSES and saved["stage"] == 1 and len(saved["history"]) == 6
    assert saved["config"]["attributes"] == ("label", "caption") and saved["params"] == {"test": True}
    model, _ = load_trained_model(job.output)
    for name, value in model.tunable_state_dict().items():
        assert torch.equal(value, result.model.tunable_state_dict()[name])
    metrics = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["epoch"] == 6
    assert metrics["val"]["loss"] == pytest.approx(fit[-1]) and set(metrics["train"]) >= {"loss", "acc", "lr"}
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "lr.tsv").is_file()


def test_train_checkpointing_recomputes_layers_and_trains_the_same_model(
    data: TinyData, tmp_path: Path
) -> None:
    """`train.checkpointing: true` reaches the model and changes memory, not what is learnt."""
    plain = run_training(make_job(data, tmp_path / "plain", epochs=1))
    recomputed = run_training(make_job(data, tmp_path / "recomputed", epochs=1, checkpointing=True))
    assert (plain.model.checkpointing, recomputed.model.checkpointing) == (False, True)
    for name, value in plain.model.tunable_state_dict().items():
        torch.testing.assert_close(recomputed.model.tunable_state_dict()[name], value, rtol=0, atol=1e-6)
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    assert TrainConfig.from_params(params).checkpointing is False
    params["train"]["checkpointing"] = "yes"
    with pytest.raises(ValueError, match=r"train\.checkpointing"):
        TrainConfig.from_params(params)


def test_validation_interval_skips_epochs_and_leaves_training_alone(data: TinyData, tmp_path: Path) -> None:
    """`train.val_interval`: validated epochs are every N-th and the last; validating (which reads
    data and runs the model in eval mode) changes nothing in what is trained."""
    every = run_training(make_job(data, tmp_path / "every", epochs=3, workers=1))
    sparse = run_training(make_job(data, tmp_path / "sparse", epochs=3, workers=1, val_interval=2))
    assert ["val_acc" in r for r in every.history] == [True, True, True]
    assert ["val_acc" in r for r in sparse.history] == [False, True, True]
    for name, value in every.model.tunable_state_dict().items():
        torch.testing.assert_close(sparse.model.tunable_state_dict()[name], value, rtol=0, atol=0)
    for full, part in zip(every.history, sparse.history, strict=True):
        trained = {k: v for k, v in full.items() if not k.startswith("val_")}
        assert part == (full if "val_acc" in part else trained)
    val_plot = (tmp_path / "sparse/dvclive/plots/metrics/val/acc.tsv").read_text().splitlines()
    assert len(val_plot) == 1 + 2  # header + epochs 2 and 3
    with pytest.raises(ValueError, match="train.val_interval"):
        TrainConfig(val_interval=0)


class Killed(Exception):
    pass


@pytest.mark.parametrize("killed_after", [1, 2])
def test_resume_equals_uninterrupted(
    data: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_after: int
) -> None:
    # Head dropout stays on: resuming must also restore the RNG streams.
    full = run_training(make_job(data, tmp_path / "full", epochs=3))

    real_save = loop.save_resume

    def save_then_die(*args, **kwargs) -> None:
        real_save(*args, **kwargs)
        if kwargs["epoch"] == killed_after:
            raise Killed  # the process dies right after this epoch's checkpoint

    monkeypatch.setattr(loop, "save_resume", save_then_die)
    job = make_job(data, tmp_path / "resumed", epochs=3)
    with pytest.raises(Killed):
        run_training(job)
    assert not job.output.exists()
    monkeypatch.setattr(loop, "save_resume", real_save)
    resumed = run_training(job)

    assert resumed.resumed_from == killed_after and full.resumed_from == 0
    for name, value in full.model.tunable_state_dict().items():
        torch.testing.assert_close(resumed.model.tunable_state_dict()[name], value, rtol=0, atol=0)
    assert resumed.history == full.history and resumed.steps == full.steps
    # DVC hashes model.pt: a resumed run must write the very bytes of an uninterrupted one
    assert job.output.read_bytes() == (tmp_path / "full/model.pt").read_bytes()
    for path in ("metrics.json", "plots/metrics/train/loss.tsv", "plots/metrics/val/acc.tsv"):
        assert (tmp_path / "resumed/dvclive" / path).read_text() == (
            tmp_path / "full/dvclive" / path
        ).read_text()


def test_a_finished_run_is_never_resumed_and_an_interrupted_one_only_on_the_same_inputs(
    data: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `dvc repro -f` must retrain: a finished run deletes its resume file. An interrupted run resumes,
    # but not once the pretrained backbone or the attributes changed under the same params (same
    # files, same sizes, other bytes). The inputs are copies, so the shared fixture stays as is.
    root = tmp_path / "inputs"
    shutil.copytree(data.root / "attributes", root / "attributes")
    backbone = save_tiny_open_clip(root / "backbone", SPEC, seed=0)
    job = make_job(data, tmp_path, model={"backbone": backbone})
    job.train_attributes, job.val_attributes = (
        root / "attributes/train.parquet",
        root / "attributes/val.parquet",
    )
    assert run_training(job).resumed_from == 0
    assert not list(job.checkpoint_root.rglob("*.pt"))  # finished: nothing left to resume
    assert run_training(job).resumed_from == 0

    real_save = loop.save_resume

    def save_then_die(*args, **kwargs) -> None:
        real_save(*args, **kwargs)
        raise Killed

    def interrupt() -> None:
        monkeypatch.setattr(loop, "save_resume", save_then_die)
        with pytest.raises(Killed):
            run_training(job)
        monkeypatch.setattr(loop, "save_resume", real_save)

    interrupt()
    save_tiny_open_clip(root / "backbone", SPEC, seed=1)  # re-pretrained: same files, same sizes
    assert run_training(job).resumed_from == 0
    interrupt()
    ids = pq.read_table(job.train_attributes, columns=["video_id"]).column("video_id").to_pylist()
    write_table(job.train_attributes, rows_to_table(_attribute_rows(ids, seed=7), META))  # recomputed
    assert run_training(job).resumed_from == 0
    interrupt()
    assert run_training(job).resumed_from == 1  # same inputs: the interrupted run continues


@pytest.mark.parametrize("size", [1000, (3 << 20) // 2, 5 << 20])  # < 1 MiB, between 1 and 2, > 2
def test_file_fingerprint_sees_a_change_at_either_end(tmp_path: Path, size: int) -> None:
    """Parquet keeps its footer at the end: a file of the same size with new values must not match."""
    data = bytearray(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    path = tmp_path / "table.parquet"
    path.write_bytes(data)
    first = file_fingerprint(path)
    for at in (0, size - 1):
        edited = bytearray(data)
        edited[at] ^= 0xFF
        path.write_bytes(edited)
        assert file_fingerprint(path) != first, f"a change at byte {at} of {size} went unseen"
    path.write_bytes(data + b"x")
    assert file_fingerprint(path) != first
    path.write_bytes(data)
    assert file_fingerprint(path) == first


def test_code_fingerprint_follows_python_sources_only(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "blocks.py").write_text("SCALE = 0.5\n")
    (tmp_path / "pkg" / "README.md").write_text("docs\n")
    first = code_fingerprint(tmp_path / "pkg")
    assert code_fingerprint(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "README.md").write_text("other docs\n")
    assert code_fingerprint(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "blocks.py").write_text("SCALE = 1.0\n")
    assert code_fingerprint(tmp_path / "pkg") != first
    (tmp_path / "pkg" / "sub" / "blocks.py").rename(tmp_path / "pkg" / "blocks.py")
    moved = code_fingerprint(tmp_path / "pkg")
    assert moved not in (first, code_fingerprint(tmp_path / "pkg" / "sub"))


def test_the_run_identity_includes_the_code(
    data: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(data, tmp_path)
    env = DistEnv(rank=0, world_size=1, device=torch.device("cpu"))
    before = resume_path(job.checkpoint_root, loop._run_identity(job, env))
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "edited")
    assert resume_path(job.checkpoint_root, loop._run_identity(job, env)) != before


# ----------------------------------------------------------------------------- DDP


def _rendezvous_store() -> TCPStore:
    """A TCP store on a port the OS picks and this process keeps bound while the workers run.

    Picking a free port, closing it and letting rank 0 bind it later races with every other process
    on the machine; here no gap exists. The workers join it as clients, the way torchrun's agent
    hosts the store for its ranks (TORCHELASTIC_USE_AGENT_STORE).
    """
    return TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def _become_rank(rank: int, world: int, port: int) -> None:
    """This spawned process's torchrun environment: rank `rank` of `world` on a local store at `port`."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
    )


def _ddp_worker(rank: int, world: int, port: int, job: TrainJob) -> None:
    _become_rank(rank, world, port)
    run_training(job)


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(data: TinyData, tmp_path: Path) -> None:
    # Same global batch (4 = 2 x 2); no dropout, so the two runs see identical computations.
    settings = dict(epochs=2, batch_size=4, model={"head_dropout": 0.0})
    single = make_job(data, tmp_path / "one", **settings)
    run_training(single)
    double = make_job(data, tmp_path / "two", **settings)
    store = _rendezvous_store()
    mp.spawn(_ddp_worker, args=(2, store.port, double), nprocs=2, join=True)
    del store

    one = torch.load(single.output, weights_only=True)
    two = torch.load(double.output, weights_only=True)
    # Two ranks of 2 clips and one process of 4 feed GEMMs of different heights, which round differently;
    # after two epochs of AdamW an element near zero can differ by about 1e-5 (measured 1.1e-5 once the
    # temporal projection became one GEMM over the batch).
    for name, value in one["tunable"].items():
        torch.testing.assert_close(two["tunable"][name], value, rtol=1e-4, atol=3e-5)
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


# Evaluation splits: (shards folder, split, attribute file). The val split is one shard ("samples" mode
# on any world size); the train split of `many_shards` is 4 shards of 3 videos ("shards" mode on 2 ranks).
EVAL_SPLITS = {"one_shard": ("shards", "val", "val"), "many_shards": ("many_shards", "train", "train")}


def _eval_inputs(data: TinyData, split: str) -> tuple[list[str], AttributeStore]:
    folder, name, attributes = EVAL_SPLITS[split]
    return list_shards(data.root / folder, name), AttributeStore(
        data.root / "attributes" / f"{attributes}.parquet"
    )


def _eval_batches(
    data: TinyData, split: str, world: int, workers: int
) -> list[tuple[list[str], torch.Tensor]]:
    """Every evaluation batch of a `world`-rank run (video ids, uint8 video), sorted by first video id."""
    urls, store = _eval_inputs(data, split)
    batches = []
    for rank in range(world):
        ds = VideoAttributeDataset(urls, clip_spec(clips=2), train=False, batch_size=2, attributes=store,
                                   attribute_names=("label",), rank=rank, world_size=world, workers=workers)  # fmt: skip
        batches += [(b["video_id"], b["video"]) for b in make_loader(ds)]
    return sorted(batches, key=lambda b: b[0][0])


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_evaluation_batches_are_one_processes_whatever_the_ranks_and_workers(
    data: TinyData, split: str
) -> None:
    """The model sees the same batches, so scores the same bits: a batch never spans two shards."""
    single = _eval_batches(data, split, world=1, workers=0)
    for world, workers in ((2, 0), (2, 2), (1, 3)):
        split_run = _eval_batches(data, split, world, workers)
        assert [ids for ids, _ in split_run] == [ids for ids, _ in single], (world, workers)
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(split_run, single, strict=True))
    ids = [v for batch, _ in single for v in batch]
    assert len(ids) == len(set(ids)) == (4 if split == "one_shard" else 11) and MISSING not in ids
    if split == "many_shards":  # 4 shards of 3 videos (the last lacks MISSING): no batch crosses a shard
        assert [len(batch) for batch, _ in single] == [2, 1, 2, 1, 2, 1, 2]


# (split, loader workers per rank): "samples" mode in the ranks' own processes; "shards" mode with
# 2 loader workers per rank (4 readers of 4 shards)
EVAL_RUNS = (("one_shard", 0), ("many_shards", 2))


def _eval_ddp_worker(rank: int, world: int, port: int, model_path: Path, data: TinyData, out: Path) -> None:
    """One rank of a gloo evaluation of each of `EVAL_RUNS`; rank 0 saves the results."""
    from eva.evaluate import evaluate_views
    from eva.utils.ddp import init_distributed

    _become_rank(rank, world, port)
    env, created = init_distributed()
    assert created and env.world_size == world
    model, _ = load_trained_model(model_path)
    results = {}
    for split, workers in EVAL_RUNS:
        urls, store = _eval_inputs(data, split)
        result = evaluate_views(model, urls, clips=2, crops=1, batch_size=2, store=store, workers=workers,
                                rank=env.rank, world_size=env.world_size)  # fmt: skip
        results[split] = (result.scores, result.labels, result.video_ids, result.views)
    if rank == 0:
        torch.save(results, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_evaluation_equals_one_process(data: TinyData, tmp_path: Path) -> None:
    """Two ranks score disjoint shares; gathered and put in order, scores, labels, ids and metrics are
    exactly one process's, in "samples" mode and in "shards" mode with loader workers."""
    from eva.evaluate import eval_metrics, evaluate_views
    from eva.train.checkpoint import save_trained_model

    torch.manual_seed(3)
    model = build_model(model_config(data))
    model_path = tmp_path / "model.pt"
    save_trained_model(model_path, model, classes=CLASSES, stage=1, params={}, history=[])
    model, _ = load_trained_model(model_path)
    store = _rendezvous_store()
    mp.spawn(
        _eval_ddp_worker, args=(2, store.port, model_path, data, tmp_path / "ddp.pt"), nprocs=2, join=True
    )
    del store
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)

    def compared(result: Any) -> dict[str, Any]:  # the metrics, not the machine's throughput and memory
        metrics = eval_metrics(result, model, dataset="t", stage=1, seed=0, clips=2, crops=1)
        return {k: v for k, v in metrics.items() if k not in ("throughput_clips_per_s", "peak_memory_mb")}

    for split, _ in EVAL_RUNS:
        urls, attributes = _eval_inputs(data, split)
        one = evaluate_views(model, urls, clips=2, crops=1, batch_size=2, store=attributes)
        assert len(one.video_ids) == len(set(one.video_ids)) == (4 if split == "one_shard" else 11)
        scores, labels, video_ids, views = ddp[split]
        assert video_ids == one.video_ids, split  # every video once, in one process's order
        assert torch.equal(labels, one.labels) and torch.equal(scores, one.scores), split
        assert views == one.views == 2 * META.keyframes
        gathered = replace(one, scores=scores, labels=labels, video_ids=video_ids)
        assert compared(gathered) == compared(one), split


def test_params_map_to_configs_and_bad_values_name_their_key() -> None:
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    cfg = TrainConfig.from_params(params)
    assert cfg.crop_scale == (0.7, 1.0) and cfg.flip is False
    with pytest.raises(ValueError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="train.crop_scale"):
        TrainConfig(crop_scale=(0.9, 0.5))
    # A batch that does not split over the processes is rounded up, the lr scaled alike (linear rule).
    uneven = TrainConfig(batch_size=6, nproc=4)
    assert uneven.global_batch == 8
    assert uneven.scaled_recipe.lr == pytest.approx(uneven.recipe.lr * uneven.lr_scale_adamw * 8 / 6)
    even = TrainConfig(batch_size=8, nproc=4, lr_scale_adamw=3.0)
    assert even.global_batch == 8 and even.scaled_recipe.lr == even.recipe.lr * 3.0  # exactly
    with pytest.raises(ValueError, match="train.crop"):
        TrainConfig(crop="centre")
    with pytest.raises(ValueError, match="train.rand_augment.magnitude"):
        TrainConfig(rand_augment_magnitude=31)
    with pytest.raises(ValueError, match="train.random_erasing"):
        TrainConfig(random_erasing=1.5)
    model = ModelConfig.from_params(params, num_classes=3, stage=2, attribute_meta=META)
    assert model.attributes == ("label", "caption", "foreground", "background", "original", "dynamic")
    assert (
        model.attribute_layers["label"] == 3
        and model.attribute_layers["dynamic"] == 2
        and model.attribute_dim == 16
    )
    params["model"]["method"] = "aim"
    assert ModelConfig.from_params(params, num_classes=3, stage=2, attribute_meta=None).attributes == ()
    params["model"]["method"] = "eva"
    with pytest.raises(ValueError, match="stage"):
        ModelConfig.from_params(params, num_classes=3, stage=3, attribute_meta=META)


def test_model_file_bytes_depend_only_on_its_contents(data: TinyData, tmp_path: Path) -> None:
    """DVC hashes models/trained/model.pt: the same weights must give the same bytes."""
    from eva.train.checkpoint import save_trained_model

    model = build_model(model_config(data))
    for name in ("a.pt", "b.pt"):
        save_trained_model(tmp_path / name, model, classes=["x", "y"], stage=1, params={}, history=[])
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


# ----------------------------------------------------------------------------- keyframe policy, multi-view


def _recording(model: VideoClassifier, calls: list) -> None:
    """Wrap `model.forward` so every call's video and attributes are kept (and still computed)."""
    forward = model.forward

    def record(video, attributes=None):
        calls.append((video.detach().clone(), {k: v.detach().clone() for k, v in (attributes or {}).items()}))
        return forward(video, attributes)

    model.forward = record


def test_view_probabilities_pair_every_video_view_with_every_keyframe(data: TinyData) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(data)).eval()
    b, v, k = 2, 3, 2
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(b, v, FRAMES, 3, SPEC.image_size, SPEC.image_size, generator=gen)
    attributes = {
        n: torch.randn(b, k, META.text_layers, META.dim, generator=gen) for n in ("label", "caption")
    }
    calls: list = []
    _recording(model, calls)
    with torch.no_grad():
        probs = model.view_probabilities(video, attributes)
    assert len(calls) == k  # one forward per keyframe, each over all B*V video views
    expected = torch.zeros(b, model.config.num_classes)
    for key, (flat, fed) in enumerate(calls):
        assert flat.shape == (b * v, FRAMES, 3, SPEC.image_size, SPEC.image_size)
        for row in range(b * v):
            i, j = divmod(row, v)  # rows ordered (b v)
            assert torch.equal(flat[row], video[i, j])
            for name in ("label", "caption"):
                assert torch.equal(
                    fed[name][row], attributes[name][i, key]
                )  # one keyframe for all attributes
        with torch.no_grad():
            expected += model.head(model.frame_features(flat, fed).mean(1)).softmax(-1).view(b, v, -1).sum(1)
    torch.testing.assert_close(probs, expected / (v * k))
    assert torch.allclose(probs.sum(1), torch.ones(b))


def test_evaluation_feeds_only_keyframe_combinations_training_can_produce(data: TinyData) -> None:
    from eva.evaluate import evaluate_views

    names = ("label", "caption")
    store = AttributeStore(data.root / "attributes" / "val.parquet")
    import pyarrow.parquet as pq

    all_ids = pq.read_table(data.root / "attributes" / "val.parquet", columns=["video_id"])["video_id"]
    val_ids = [vid for vid in all_ids.to_pylist() if vid.startswith("val/")]
    # What training can feed: one keyframe k of a video, the same k for every attribute.
    producible = {
        (vid, key): {n: store.get(vid, names)[n][key].float() for n in names}
        for vid in val_ids
        for key in range(META.keyframes)
    }

    def which(fed: dict, row: int) -> tuple[str, int]:
        hits = [c for c, a in producible.items() if all(torch.equal(fed[n][row], a[n]) for n in names)]
        assert len(hits) == 1, "evaluation fed an attribute combination training never produces"
        return hits[0]

    torch.manual_seed(0)
    model = build_model(model_config(data))
    calls: list = []
    _recording(model, calls)
    result = evaluate_views(
        model, list_shards(data.shards, "val"), clips=2, crops=3, batch_size=3, store=store
    )
    fed_rows = [which(fed, row) for _, fed in calls for row in range(len(fed["label"]))]
    assert len(fed_rows) == len(val_ids) * 6 * META.keyframes
    counts = {c: fed_rows.count(c) for c in set(fed_rows)}
    assert counts == {c: 6 for c in producible}  # every (video, keyframe) once per clip x crop view
    assert result.views == 6 * META.keyframes and result.keyframes == META.keyframes

    # The training loader's attributes fall in the same set (per-video keyframe draw).
    train_store = AttributeStore(data.root / "attributes" / "train.parquet")
    ds = VideoAttributeDataset(list_shards(data.shards, "train"), clip_spec(), train=True, batch_size=4,
                               attributes=train_store, attribute_names=names, steps=3)  # fmt: skip
    for batch in ds:
        for row, vid in enumerate(batch["video_id"]):
            rows = train_store.get(vid, names)
            assert any(
                all(torch.equal(batch["attributes"][n][row], rows[n][key].float()) for n in names)
                for key in range(META.keyframes)
            )


# ----------------------------------------------------------------------------- user errors at the stage


def _stage_project(data: TinyData, root: Path, **train: Any) -> Path:
    """A project folder laid out as the train stage reads it, on the tiny fixture data."""
    (root / layout.CLASSES).parent.mkdir(parents=True)
    (root / layout.CLASSES).write_text(json.dumps(CLASSES))
    root.joinpath(layout.SHARDS).symlink_to(data.shards)
    root.joinpath(layout.ATTRIBUTES).symlink_to(data.root / "attributes")
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    params["dataset"]["name"] = "demo"
    params["model"]["backbone"].update(family="open_clip", name=data.backbone, pretrained="")
    params["model"].update(image_size=SPEC.image_size, frames=FRAMES)
    params["train"].update(epochs=1, workers=0, **train)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _run_stage(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    env.pop("EVA_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_user_error_in_the_train_stage_is_one_line_naming_the_param(data: TinyData, tmp_path: Path) -> None:
    # Caught before any worker starts: a bad method.
    project = _stage_project(data, tmp_path / "a", nproc=2)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["method"] = "adapterformer"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = _run_stage(project)
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "`model.method` must be one of" in errors[0], done.stderr
    assert "Traceback" not in done.stderr

    # Also before the workers: a bad train value.
    project = _stage_project(data, tmp_path / "b", nproc=2)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["random_erasing"] = 1.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = _run_stage(project)
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "`train.random_erasing` must be" in errors[0] and errors[0].endswith("; got 1.5"), done.stderr
    assert "starting 2 training processes" not in done.stderr

    # Caught inside the two DDP workers: the val attribute file is missing (only they open it).
    project = _stage_project(data, tmp_path / "c", nproc=2, batch_size=4)
    (project / layout.ATTRIBUTES).unlink()
    (project / layout.ATTRIBUTES).mkdir()
    (project / layout.attributes("train")).symlink_to(data.root / "attributes" / "train.parquet")
    done = _run_stage(project)
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert "starting 2 training processes" in done.stderr
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "val.parquet not found" in errors[0] and "model.method=eva" in errors[0], (
        done.stderr
    )
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("stage", "override", "expected"),
    [
        ("index", {"dataset": {"name": "kinetics"}}, "`dataset.name` must be one of"),
        (
            "demo_data",
            {"demo": {"size": 63}},
            "`demo.size` must be even (H.264 yuv420p needs even sides); got 63",
        ),
        ("pretrain", {"pretrain": {"seed": -1}}, "`pretrain.seed` must be an integer >= 0; got -1"),
        ("extract", {"extract": {"frames_per_vido": 8}}, "unknown keys ['extract.frames_per_vido']"),
        ("train", {"train": {"epochz": 2}}, "unknown keys ['train.epochz']"),
        (
            "extract",
            {"extract": {"jpeg_quality": 0}},
            "`extract.jpeg_quality` must be an integer in 1..100; got 0",
        ),
        (
            "attributes",
            {"attributes": {"keyframes": 0}},
            "`attributes.keyframes` must be an integer >= 1; got 0",
        ),
        ("evaluate", {}, "run the train stage"),  # no model file yet
    ],
)
def test_every_stage_reports_a_user_error_in_one_line(
    tmp_path: Path, stage: str, override: dict, expected: str
) -> None:
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    for section, values in override.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "shards" / "demo").mkdir(parents=True)  # attributes: gets past "no shards"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    env.pop("EVA_TRACEBACK", None)
    done = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and expected in errors[0] and f"{stage} stage:" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("method", ["eva", "lora"])
def test_a_videomae_backbone_trains_saves_and_evaluates(data: TinyData, tmp_path: Path, method: str) -> None:
    """`model.backbone.family: videomae` through the whole loop: train, model.pt, reload, multi-view eval."""
    from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
    from eva.evaluate import evaluate_views

    folder = save_tiny_videomae(
        tmp_path / "videomae", TinyVideoMAESpec(frames=FRAMES, image_size=SPEC.image_size)
    )
    model = {"method": method, "backbone": folder, "backbone_family": "videomae"}
    if method != "eva":
        model["attributes"] = ()
    job = make_job(data, tmp_path / "run", model=model, epochs=1)
    result = run_training(job)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["val_loss"])

    reloaded, checkpoint = load_trained_model(job.output)
    assert checkpoint["config"]["backbone_family"] == "videomae" and reloaded.temporal_embedding is None
    assert "head.norm.weight" in reloaded.tunable_state_dict()  # VideoMAE's fc_norm is saved and restored
    for name, value in reloaded.tunable_state_dict().items():
        assert torch.equal(value, result.model.tunable_state_dict()[name]), name
    store = AttributeStore(data.root / "attributes" / "val.parquet") if method == "eva" else None
    evaluated = evaluate_views(
        reloaded, list_shards(data.shards, "val"), clips=2, crops=1, batch_size=4, store=store
    )
    assert len(evaluated.labels) == 4 and evaluated.views == 2 * (2 if method == "eva" else 1)
    assert torch.allclose(evaluated.scores.sum(dim=1), torch.ones(4))


def test_training_reads_metrics_back_once_per_window_not_per_step(
    data: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 37: no host sync per step. Each epoch's step metrics come back in one reduction per
    `METRICS_EVERY` steps (here 2, then the odd last one), and the records equal a per-step read."""
    import eva.train.loop as loop

    calls: list[tuple[int, ...]] = []
    real = loop._all_reduce

    def counting(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
        calls.append(tuple(tensor.shape))
        return real(tensor, env)

    monkeypatch.setattr(loop, "METRICS_EVERY", 2)
    monkeypatch.setattr(loop, "_all_reduce", counting)
    job = make_job(data, tmp_path / "a", epochs=1, batch_size=2, workers=0)
    result = run_training(job)
    steps = len(result.steps)
    assert steps % 2 == 1 and steps > 2
    assert calls == [(2, 3)] * (steps // 2) + [(1, 3), (3,)]  # two steps at a time, the last, validation
    assert [r["step"] for r in result.steps] == list(range(1, steps + 1))
    assert all(0 <= r["acc"] <= 1 and r["loss"] > 0 for r in result.steps)
    monkeypatch.setattr(loop, "METRICS_EVERY", 1)  # a read-back per step: the same records
    again = run_training(make_job(data, tmp_path / "b", epochs=1, batch_size=2, workers=0))
    assert again.steps == result.steps and again.history == result.history


@pytest.mark.slow
def test_train_compile_trains_the_same_model_within_float_noise(data: TinyData, tmp_path: Path) -> None:
    """`train.compile`: torch.compile (inductor, CPU here) gives the eager run's losses within float noise."""
    no_dropout = {"head_dropout": 0.0}  # inductor draws dropout masks from its own generator
    eager = run_training(make_job(data, tmp_path / "eager", no_dropout, epochs=1, batch_size=2, workers=0))
    compiled = run_training(
        make_job(data, tmp_path / "compiled", no_dropout, epochs=1, batch_size=2, workers=0, compile=True)
    )
    for a, b in zip(eager.steps, compiled.steps, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
    for name, p in eager.model.state_dict().items():
        assert torch.allclose(p, compiled.model.state_dict()[name], atol=1e-4), name
