"""Dense sampling against mmaction's SampleFrames formula, strided extraction, and the per-clip augmentations.

The reference formula below is SampleFrames (`_get_train_clips` / `_get_test_clips`, then
`offset + arange(clip_len) * frame_interval`, wrapped with `out_of_bound_opt='loop'`) restated in
numpy from its documented behaviour; `sample_dense_indices` must give its results on every length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import moving_square, write_video

from eva.data.clips import (
    MULTI_SCALES,
    Augment,
    ClipSpec,
    VideoAttributeDataset,
    batch_to_device,
    make_loader,
    mean_colour,
    multi_scale_crop_box,
    sample_dense_indices,
    spatial_crops,
    stored_interval,
    train_clip,
)
from eva.data.extract import ExtractConfig, extract_shards, sample_stride_indices
from eva.data.shards import iter_videos, list_shards
from eva.models import ModelConfig
from eva.params import check_sampling

LENGTHS = [1, 5, 7, 8, 31, 63, 64, 65, 127, 128, 129, 200, 300]


def reference_offsets(n: int, clip_len: int, interval: int, num_clips: int, test: bool) -> list[set[int]]:
    """Per clip, the window starts SampleFrames can pick (one value at test, the random support in training)."""
    span = clip_len * interval
    if test:
        average = (n - span + 1) / float(num_clips)
        if n > span - 1:
            return [{int(c * average + average / 2.0)} for c in range(num_clips)]
        return [{0}] * num_clips
    average = (n - span + 1) // num_clips
    if average > 0:
        return [set(range(c * average, c * average + average)) for c in range(num_clips)]
    if n > max(num_clips, span):  # unreachable with num_clips=1, kept for the formula's sake
        return [set(range(n - span + 1))] * num_clips
    if average == 0:
        ratio = (n - span + 1.0) / num_clips
        return [{int(np.around(c * ratio))} for c in range(num_clips)]
    return [{0}] * num_clips


def reference_indices(n: int, offset: int, clip_len: int, interval: int) -> list[int]:
    return list(np.mod(offset + np.arange(clip_len) * interval, n))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("clip_len,interval", [(8, 16), (16, 4), (8, 1), (8, 2)])
def test_dense_test_clips_are_sample_frames(n: int, clip_len: int, interval: int) -> None:
    for num_clips in (1, 3, 4):
        expected = reference_offsets(n, clip_len, interval, num_clips, test=True)
        for c in range(num_clips):
            got = sample_dense_indices(n, clip_len, interval, train=False, clip_index=c, num_clips=num_clips)
            (offset,) = expected[c]
            assert got == reference_indices(n, offset, clip_len, interval), (n, num_clips, c)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("clip_len,interval", [(8, 16), (16, 4), (8, 1)])
def test_dense_training_window_is_uniform_over_sample_frames_support(
    n: int, clip_len: int, interval: int
) -> None:
    (support,) = reference_offsets(n, clip_len, interval, 1, test=False)
    seen = set()
    for seed in range(300):
        got = sample_dense_indices(
            n, clip_len, interval, train=True, generator=torch.Generator().manual_seed(seed)
        )
        offsets = [o for o in support if reference_indices(n, o, clip_len, interval) == got]
        assert offsets, (n, got)
        seen.update(offsets)
    assert seen == support if len(support) <= 20 else len(seen) > 20  # every start is reachable


def test_dense_sampling_is_seeded_and_refuses_bad_arguments() -> None:
    draw = [
        sample_dense_indices(300, 8, 2, train=True, generator=torch.Generator().manual_seed(s))
        for s in range(5)
    ]
    again = [
        sample_dense_indices(300, 8, 2, train=True, generator=torch.Generator().manual_seed(s))
        for s in range(5)
    ]
    assert draw == again and len({tuple(d) for d in draw}) > 1
    with pytest.raises(ValueError, match="model.frame_interval"):
        sample_dense_indices(10, 4, 0, train=True)
    with pytest.raises(ValueError, match="evaluate.clips"):
        sample_dense_indices(10, 4, 1, train=False, clip_index=3, num_clips=3)


def test_stride_indices_keep_every_nth_frame_and_the_middle_of_long_videos() -> None:
    assert sample_stride_indices(0, 20, 4, 16) == [0, 4, 8, 12, 16]
    assert sample_stride_indices(3, 12, 2, 16) == [3, 5, 7, 9, 11]
    assert sample_stride_indices(0, 100, 4, 10) == list(range(28, 68, 4))  # 25 on the grid, middle 10
    assert len(sample_stride_indices(0, 10**12, 16, 32)) == 32  # a header claiming 10^12 frames is cheap


def test_stored_interval_reads_the_stride_from_the_shard() -> None:
    assert stored_interval({"frame_indices": [0, 4, 8, 12]}, 16) == 4
    assert stored_interval({"frame_indices": [5]}, 16) == 1
    with pytest.raises(ValueError, match="model.frame_interval"):
        stored_interval({"frame_indices": [0, 4, 8]}, 6)
    with pytest.raises(ValueError, match="extract.frame_stride"):
        stored_interval({"frame_indices": [2, 6, 11], "video_id": "v"}, 4)  # segment centres


def test_check_refuses_dense_sampling_the_shards_cannot_serve() -> None:
    def model(**kw: object) -> ModelConfig:
        return ModelConfig(method="aim", num_classes=2, backbone="x", sampling="dense", **kw)  # type: ignore[arg-type]

    check_sampling(model(frame_interval=16), ExtractConfig(frame_stride=4))
    check_sampling(ModelConfig(method="aim", num_classes=2, backbone="x"), ExtractConfig(frame_stride=0))
    with pytest.raises(ValueError, match="extract.frame_stride"):
        check_sampling(model(frame_interval=16), ExtractConfig(frame_stride=0))
    with pytest.raises(ValueError, match="model.frame_interval"):
        check_sampling(model(frame_interval=6), ExtractConfig(frame_stride=4))
    with pytest.raises(ValueError, match="model.sampling"):
        ModelConfig(method="aim", num_classes=2, backbone="x", sampling="tsn").validate()


# ----------------------------------------------------------------------------- dense, end to end


@pytest.fixture(scope="module")
def strided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of three videos (40, 64 and 90 frames) stored at stride 2."""
    root = tmp_path_factory.mktemp("strided")
    rows = []
    for i, n in enumerate((40, 64, 90)):
        path = write_video(root / f"v{i}.mp4", moving_square(n, 32, seed=i))
        rows.append(
            {"video_id": f"v{i}", "path": str(path), "label": i % 2, "label_name": "x", "split": "val"}
        )
    table = pa.table(
        {
            **{k: [r[k] for r in rows] for k in ("video_id", "path", "label_name", "split")},
            "label": pa.array([r["label"] for r in rows], pa.int32()),
            "start": pa.array([None] * 3, pa.float64()),
            "end": pa.array([None] * 3, pa.float64()),
        }
    )
    cfg = ExtractConfig(frames_per_video=64, frame_stride=2, short_side=32, samples_per_shard=8, workers=1)
    extract_shards(table, root / "shards", cfg)
    return root / "shards"


def test_dense_evaluation_views_are_source_frames_an_interval_apart(strided: Path) -> None:
    urls = list_shards(strided, "val")
    samples = {s.meta["video_id"]: s for s in iter_videos(urls)}
    assert samples["v2"].meta["frame_indices"] == list(range(0, 90, 2))
    spec = ClipSpec(num_frames=4, image_size=32, sampling="dense", frame_interval=6, clips=3)
    data = VideoAttributeDataset(urls, spec, train=False, batch_size=3)
    (batch,) = list(make_loader(data))
    assert batch["video"].shape == (3, 3, 4, 3, 32, 32)  # [B, clips, T, 3, S, S]
    for b, video_id in enumerate(batch["video_id"]):
        sample = samples[video_id]
        stored = sample.frames.shape[0]
        for c in range(3):
            (offset,) = reference_offsets(stored, 4, 3, 3, test=True)[c]
            picked = reference_indices(stored, offset, 4, 3)
            source = [sample.meta["frame_indices"][i] for i in picked]
            assert all(y - x == 6 for x, y in zip(source, source[1:], strict=False)), source
            expected = spatial_crops(sample.frames[picked], 32, 1)[0]
            assert torch.equal(batch["video"][b, c], expected), (video_id, c)


def test_dense_training_draws_one_window_per_video_and_epoch(strided: Path) -> None:
    urls = list_shards(strided, "val")
    spec = ClipSpec(num_frames=4, image_size=32, sampling="dense", frame_interval=4)
    data = VideoAttributeDataset(urls, spec, train=True, batch_size=3, steps=1, seed=7)
    first = next(iter(make_loader(data)))["video"]
    assert torch.equal(first, next(iter(make_loader(data)))["video"])  # seeded
    data.set_epoch(1)
    assert not torch.equal(first, next(iter(make_loader(data)))["video"])  # another window next epoch


def test_device_decode_of_dense_clips_is_the_workers_decode_on_the_cpu(strided: Path) -> None:
    """Dense sampling under `decode="device"` (the main process decodes, here on the CPU): the loader
    workers' batches bit for bit, for training (multi-scale crop, RandAugment, erasing) and 3 clips x 3 crops."""
    urls = list_shards(strided, "val")
    augment = Augment(crop="multi_scale", flip=True, rand_augment_ops=2, erasing=1.0)
    specs = ((ClipSpec(num_frames=4, image_size=24, sampling="dense", frame_interval=4, augment=augment), True),
             (ClipSpec(num_frames=4, image_size=24, sampling="dense", frame_interval=6, clips=3, crops=3), False))  # fmt: skip
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    for spec, train in specs:
        got = []
        for decode in ("cpu", "device"):
            data = VideoAttributeDataset(urls, spec, train=train, batch_size=2, steps=2 if train else None,
                                         seed=3, decode=decode)  # fmt: skip
            got.append([batch_to_device(b, torch.device("cpu"), mean, std)[0] for b in make_loader(data)])
        assert len(got[0]) == len(got[1]) > 0
        assert all(torch.equal(a, b) for a, b in zip(*got, strict=True))


# ----------------------------------------------------------------------------- augmentations


def noise_clip(frames: int = 4, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (frames, 3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


SSV2 = Augment(crop_scale=(0.08, 1.0), rand_augment_ops=4, rand_augment_magnitude=7, erasing=0.25)


def test_rand_augment_and_erasing_treat_every_frame_of_a_clip_alike() -> None:
    clip = noise_clip()
    changed = 0
    for seed in range(12):
        whole = train_clip(clip, 24, SSV2, generator=torch.Generator().manual_seed(seed))
        plain = train_clip(
            clip, 24, Augment(crop_scale=(0.08, 1.0)), generator=torch.Generator().manual_seed(seed)
        )
        changed += not torch.equal(whole, plain)  # same crop, then RandAugment's ops
        for t in range(clip.shape[0]):  # frame t alone, same draws: same pixels
            alone = train_clip(clip[t : t + 1], 24, SSV2, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(whole[t], alone[0]), (seed, t)
    assert changed >= 10


def test_augmentations_are_seeded_and_leave_the_global_generator_alone() -> None:
    clip = noise_clip()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    outs = [train_clip(clip, 24, SSV2, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    assert torch.equal(torch.rand(3), expected_next)  # dropout's generator untouched
    again = [train_clip(clip, 24, SSV2, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again, strict=True))
    assert len({o.sum().item() for o in outs}) == 6


def test_erasing_paints_one_rectangle_of_the_mean_colour_on_every_frame() -> None:
    clip = noise_clip(frames=3, height=48, width=48, seed=1)
    colour = mean_colour([0.48145466, 0.4578275, 0.40821073])  # CLIP's mean
    augment = Augment(crop_scale=(1.0, 1.0), erasing=1.0, erase_value=colour)
    for seed in range(10):
        out = train_clip(clip, 48, augment, generator=torch.Generator().manual_seed(seed))
        painted = (out == torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)).all(dim=1)  # [T, S, S]
        assert torch.equal(painted[0], painted[1]) and torch.equal(painted[0], painted[2])
        rows, cols = painted[0].any(dim=1).nonzero(), painted[0].any(dim=0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(painted[0].sum()) == int(box)  # one filled rectangle
        assert 0.02 * 48 * 48 - 48 <= int(box) <= 48 * 48 / 3 + 48


def test_multi_scale_crop_takes_tsn_sizes_at_fixed_positions() -> None:
    height, width, size = 256, 340, 224
    sides = [224 if abs(int(256 * s) - 224) < 3 else int(256 * s) for s in MULTI_SCALES]
    assert sides == [256, 224, 192, 168]
    pairs = {(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1}
    seen_pairs, seen_cells = set(), set()
    for seed in range(400):
        top, left, h, w = multi_scale_crop_box(
            height, width, size, generator=torch.Generator().manual_seed(seed)
        )
        assert (w, h) in pairs and top >= 0 and top + h <= height and left >= 0 and left + w <= width
        seen_pairs.add((w, h))
        # inside the short-side square: its top is 0 (landscape), its left any of 0..84
        h_step = (256 - h) // 4
        if h_step:
            assert top % h_step == 0 and top // h_step <= 4
            seen_cells.add(top // h_step)
    assert seen_pairs == pairs and seen_cells == {0, 1, 2, 3, 4}
    out = train_clip(
        noise_clip(2, 64, 80), 32, Augment(crop="multi_scale"), generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8


def test_loader_warns_with_the_size_to_ask_for_when_shared_memory_is_short(
    strided: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil
    from collections import namedtuple

    from eva.data import clips

    spec = ClipSpec(num_frames=4, image_size=32)
    data = VideoAttributeDataset(
        list_shards(strided, "val"), spec, train=True, batch_size=1, steps=3, workers=2
    )
    assert data.num_workers == 2
    assert (
        clips.shared_memory_bytes(data) == 1 * 4 * 32 * 32 * 3 * clips.PREFETCH * 2
    )  # uint8 clips, no attributes
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(64 << 20, 64 << 20, 1000))
    with caplog.at_level("WARNING", logger="eva.data.clips"):
        clips.check_shared_memory(data)
    assert "--shm-size=1g" in caplog.text and "train.workers" in caplog.text
    caplog.clear()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(64 << 20, 0, 64 << 20))
    with caplog.at_level("WARNING", logger="eva.data.clips"):
        clips.check_shared_memory(data)
    assert caplog.text == ""
