"""Training and evaluation batches: shard clips joined with their attribute rows.

A video enters a batch as `T = model.frames` frames picked from the `T_stored` stored ones
(`model.sampling`: `segments`, TSN's one frame per equal segment, random in training and centred at
test; or `dense`, mmaction's SampleFrames: T frames `model.frame_interval` source frames apart in
one random window for training, `evaluate.clips` evenly spaced windows at test), spatially cropped
(random resized or multi-scale crop, flip, RandAugment and random erasing for training, all drawn
once per clip; resize + centre crop(s) for evaluation) and kept uint8 until it reaches the model's device, where `batch_to_device` normalises it with the
backbone's mean/std (a quarter of the bytes through the loader's queues and the host-to-device copy). Its attributes follow one keyframe policy: training
feeds one random keyframe's `[L, D]` features (the same keyframe for every attribute of the
video); evaluation hands over all K keyframes, `[K, L, D]`, and the model scores each keyframe
as an extra view (`VideoClassifier.view_probabilities`), so evaluation only ever feeds the model
inputs that training produces. Videos without an attribute row are
skipped (and counted), for every method, so all methods train and evaluate on the same videos.

Partitioning across DDP ranks and DataLoader workers. Every rank must run the same number of
steps per epoch (a rank that runs out of data first would leave the others waiting forever in
the gradient all-reduce), so the epoch length is fixed up front from the sample count
(`steps_per_epoch`) and each (rank, worker) produces exactly its share of batches:

* "samples" mode, when there are fewer shards than readers (rank x worker), e.g. the demo's
  single shard, or a single reader: every reader walks all shards in the same seeded order through the same seeded
  shuffle buffer, so all readers see one identical global stream. Sample p of that stream belongs
  to global batch s = p // B (B = global batch), to rank (p % B) // b (b = B / world) and to
  worker s % workers (s counted on across the epochs of one iteration); only the owner decodes it. The global batches are therefore the same for any
  world size or worker count: 2-process DDP sees exactly the batches of 1 process. The stream is
  cycled (with a fresh shuffle) if it is shorter than the epoch.
* "shards" mode, otherwise: shards (in a seeded order per epoch) are dealt round-robin to readers
  and read in order through this reader's own shuffle buffer; each reader cycles its shards until it has
  produced its quota of batches. Batches then depend on the world size, as in any sharded loader.

Evaluation reads every usable video once, in batches cut per shard (a batch never spans two shards):
"samples" mode deals those batches round-robin to the readers, "shards" mode deals whole shards.
Its batches are therefore the same for any world size and worker count, and so are the model's
scores; each batch's `order` (shard index, position in the shard) puts gathered results back in one
process's order.

Per-sample randomness (frame offsets, crop, flip, keyframe) comes from a generator seeded by
(seed, epoch, pass, video_id), not by rank or worker: a video is augmented the same way whichever
process reads it, so runs are reproducible and DDP is comparable to one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from eva.config import check, invalid, one_of
from eva.data.attribute_store import AttributeStore
from eva.data.segments import SAMPLING
from eva.data.shard_counts import counted_samples
from eva.data.shards import (
    EncodedVideo,
    buffer_shuffle,
    jpeg_size,
    parse_sample,
    stack_frames,
    tar_samples,
)

log = logging.getLogger(__name__)

# Samples held by a shuffle buffer (raw JPEG bytes in "samples" mode: ~T x 10 kB each).
SHUFFLE_BUFFER = 256
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


# ----------------------------------------------------------------------------- seeds


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from `parts` (Python's `hash` is salted per process, so unusable here)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_generator(*parts: object) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*parts))
    return generator


# ----------------------------------------------------------------------------- temporal sampling


def _check_clip(clip_index: int, num_clips: int) -> None:
    if num_clips < 1 or not 0 <= clip_index < num_clips:
        raise ValueError(
            f"clip_index must be in 0..num_clips-1 (`evaluate.clips`={num_clips}), got {clip_index}"
        )


def sample_frame_indices(
    num_stored: int,
    num_frames: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """Pick `num_frames` of `num_stored` stored frames, one per equal segment (TSN).

    Segment i is `[floor(i*n/T), floor((i+1)*n/T))`. Training takes a random frame of each segment;
    evaluation takes the point `(clip_index + 0.5) / num_clips` of the way through each segment, so
    `num_clips` temporal clips spread their offsets evenly (one clip: the segment centres). With
    fewer stored frames than requested, segments are empty and frames repeat.
    """
    if num_stored < 1:
        raise ValueError(f"a video needs at least one stored frame, got {num_stored}")
    if num_frames < 1:
        raise invalid("model.frames", "an integer >= 1", num_frames)
    _check_clip(clip_index, num_clips)
    indices = []
    for i in range(num_frames):
        start = i * num_stored // num_frames
        length = (i + 1) * num_stored // num_frames - start
        if length <= 0:
            offset = 0
        elif train:
            offset = int(torch.randint(length, (1,), generator=generator))
        else:
            offset = int(length * (clip_index + 0.5) / num_clips)
        indices.append(min(start + offset, num_stored - 1))
    return indices


def sample_dense_indices(
    num_stored: int,
    clip_len: int,
    interval: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """`clip_len` stored frames `interval` apart from one window (mmaction's SampleFrames, one clip).

    The window spans `clip_len * interval` frames. Training starts it at a uniform random offset in
    `0 .. num_stored - span` (0 when the video is shorter than the window); evaluation clip
    `clip_index` of `num_clips` starts at `int(clip_index * avg + avg / 2)` with
    `avg = (num_stored - span + 1) / num_clips`, i.e. the windows' starts evenly spaced (0 when
    shorter). Indices past the end wrap around (SampleFrames' default `out_of_bound_opt='loop'`).
    """
    if num_stored < 1:
        raise ValueError(f"a video needs at least one stored frame, got {num_stored}")
    if clip_len < 1:
        raise invalid("model.frames", "an integer >= 1", clip_len)
    if interval < 1:
        raise invalid("model.frame_interval", "an integer >= 1", interval)
    _check_clip(clip_index, num_clips)
    span = clip_len * interval
    room = num_stored - span + 1  # window starts that keep the whole window inside the video
    if train:
        offset = int(torch.randint(room, (1,), generator=generator)) if room > 0 else 0
    else:
        average = room / num_clips
        offset = int(clip_index * average + average / 2.0) if room > 0 else 0
    return [(offset + k * interval) % num_stored for k in range(clip_len)]


def stored_interval(meta: Mapping[str, Any], frame_interval: int) -> int:
    """`model.frame_interval` (source frames) in stored frames, from the sample's `frame_indices`.

    Dense sampling needs frames stored at one constant stride (`extract.frame_stride`) that divides
    the interval; a video stored as segment centres, or at a stride that does not divide, is refused.
    """
    positions = meta["frame_indices"]
    if len(positions) < 2:
        return 1  # one stored frame: every index is 0 anyway
    stride = positions[1] - positions[0]
    if stride < 1 or any(b - a != stride for a, b in zip(positions, positions[1:], strict=False)):
        raise ValueError(
            f"model.sampling=dense needs frames stored at a constant stride (extract.frame_stride >= 1); "
            f"video {meta.get('video_id')!r} stores frames {positions[:6]}...: re-run the extract stage"
        )
    if frame_interval % stride:
        raise invalid(
            "model.frame_interval",
            f"a multiple of the shards' frame stride {stride} (extract.frame_stride)",
            frame_interval,
        )
    return frame_interval // stride


# ----------------------------------------------------------------------------- spatial transforms


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = CROP_RATIO,
    *,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random `scale` fraction of the area at a random aspect ratio.

    The torchvision RandomResizedCrop recipe, drawn from `generator` so the crop is reproducible.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u_area, u_ratio = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + u_area * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u_ratio * (log_ratio[1] - log_ratio[0]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (1,), generator=generator))
            left = int(torch.randint(width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback: the largest centred crop with an aspect ratio inside `ratio`.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


CROPS = ("random_resized", "multi_scale")
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)  # TSN's GroupMultiScaleCrop scales (the EVA authors' dataset.py)


def _pick(options: Sequence[Any], generator: torch.Generator | None) -> Any:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def multi_scale_crop_box(
    height: int,
    width: int,
    size: int,
    scales: Sequence[float] = MULTI_SCALES,
    *,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of TSN's multi-scale crop inside a random short-side square.

    As the EVA authors' loader: a square of the short side at a random place along the long side,
    then TSN's GroupMultiScaleCrop inside it: crop sides `int(side * scale)` (snapped to `size`
    within 3 pixels), a (w, h) pair with scale indices at most 1 apart, at one of 13 fixed positions
    (corners, centre, edge centres, quarter points).
    """
    side = min(height, width)
    square_top = int(torch.randint(height - side + 1, (1,), generator=generator))
    square_left = int(torch.randint(width - side + 1, (1,), generator=generator))
    sides = [size if abs(int(side * s) - size) < 3 else int(side * s) for s in scales]
    pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    w, h = _pick(pairs, generator)
    w_step, h_step = (side - w) // 4, (side - h) // 4
    grid = [
        (0, 0),
        (4, 0),
        (0, 4),
        (4, 4),
        (2, 2),
        (0, 2),
        (4, 2),
        (2, 4),
        (2, 0),
        (1, 1),
        (3, 1),
        (1, 3),
        (3, 3),
    ]
    x, y = _pick(grid, generator)
    return square_top + y * h_step, square_left + x * w_step, h, w


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 `[T, 3, h, w]` -> uint8 `[T, 3, *size]` (bilinear, antialiased when shrinking).

    torch's uint8 kernel (the one torchvision's `Resize` uses): 4x faster than resizing in float,
    within 1 of the rounded float result.
    """
    if video.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (as decoded), got {video.dtype}")
    if video.device.type == "cpu":
        return F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    return _resize_float(video, size)  # elsewhere (CUDA): torch's uint8 antialiased kernel is the CPU's


def _resize_float(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`_resize` off the CPU: the same filter in float, rounded back to uint8 (within 1 of the CPU's
    uint8 kernel: tests/test_train.py runs both on the CPU)."""
    out = F.interpolate(video.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class Augment:
    """What training does to a clip's pixels (`train.*`); each draw is made once for all its frames."""

    crop: str = "random_resized"  # train.crop: random_resized (area `crop_scale`) | multi_scale (TSN)
    crop_scale: tuple[float, float] = (0.7, 1.0)  # train.crop_scale
    flip: bool = False  # train.flip
    rand_augment_ops: int = 0  # train.rand_augment.ops: 0 = off
    rand_augment_magnitude: int = 9  # train.rand_augment.magnitude (0..30)
    erasing: float = 0.0  # train.random_erasing: probability of erasing one rectangle
    # the erased pixels' uint8 colour: the backbone's mean, i.e. 0 after normalisation (timm's `const` mode)
    erase_value: tuple[int, int, int] = (0, 0, 0)


def _with_seed(transform: Any, clip: torch.Tensor, seed: int) -> torch.Tensor:
    """A torchvision transform (it draws from torch's global generator) run under `seed`, leaving the
    global generators as they were (dropout and drop path draw from them)."""
    with torch.random.fork_rng(devices=[clip.device] if clip.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return transform(clip)


@dataclass(frozen=True)
class TrainPlan:
    """Every random choice `train_clip` makes for one clip, drawn before any pixel is touched: what a
    loader worker ships with the clip's JPEG bytes when the main process decodes (`train.decode: device`)."""

    box: tuple[int, int, int, int]  # (top, left, h, w) of the crop in the stored frame
    flip: bool
    rand_augment_seed: int | None  # None: RandAugment off
    erasing_seed: int | None  # None: erasing off


def plan_train_clip(
    height: int,
    width: int,
    size: int,
    augment: Augment = Augment(),
    *,
    generator: torch.Generator | None = None,
) -> TrainPlan:
    """`train_clip`'s draws for `[T, 3, height, width]` frames, in its order: crop box, flip,
    RandAugment's seed, erasing's seed (each only where that augmentation is on)."""
    if augment.crop == "multi_scale":
        box = multi_scale_crop_box(height, width, size, generator=generator)
    else:
        box = random_resized_crop_box(height, width, augment.crop_scale, generator=generator)
    flip = augment.flip and bool(torch.rand(1, generator=generator) < 0.5)
    rand_augment_seed = (
        int(torch.randint(1 << 62, (1,), generator=generator)) if augment.rand_augment_ops else None
    )
    erasing_seed = int(torch.randint(1 << 62, (1,), generator=generator)) if augment.erasing > 0 else None
    return TrainPlan(box=box, flip=flip, rand_augment_seed=rand_augment_seed, erasing_seed=erasing_seed)


def apply_train_clip(frames: torch.Tensor, size: int, augment: Augment, plan: TrainPlan) -> torch.Tensor:
    """uint8 `[T, 3, H, W]` -> uint8 `[T, 3, size, size]`: `plan`'s crop, flip, RandAugment and
    erasing, on `frames`' device (no draw from any generator but the plan's seeds)."""
    top, left, h, w = plan.box
    clip = _resize(frames[..., top : top + h, left : left + w], (size, size))  # [T, 3, S, S]
    if plan.flip:
        clip = clip.flip(-1)
    if augment.rand_augment_ops or augment.erasing > 0:
        clip = clip.contiguous()  # as they have always seen it (channels-last frames resize to channels-last)
    if plan.rand_augment_seed is not None:
        from torchvision.transforms import v2

        rand_augment = v2.RandAugment(augment.rand_augment_ops, augment.rand_augment_magnitude)
        clip = _with_seed(rand_augment, clip, plan.rand_augment_seed)
    if plan.erasing_seed is not None:
        from torchvision.transforms import v2

        erase = v2.RandomErasing(p=augment.erasing, value=list(augment.erase_value))  # type: ignore[arg-type]
        clip = _with_seed(erase, clip, plan.erasing_seed)
    return clip


def train_clip(
    frames: torch.Tensor, size: int, augment: Augment = Augment(), *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 `[T, 3, H, W]` -> uint8 `[T, 3, size, size]`: one crop, flip, RandAugment and erasing for all T frames.

    The order of AIM's SSv2 pipeline: crop and resize, flip, RandAugment (torchvision's `v2`, on the
    uint8 frames), then erasing (torchvision's `v2.RandomErasing`, area 0.02-1/3, aspect 0.3-3.3, as
    timm's). Each transform sees the clip as one image with a leading frame dimension, so its random
    parameters are drawn once per clip. All draws come first (`plan_train_clip`), the pixels after
    (`apply_train_clip`): the one implementation both decode paths run.
    """
    height, width = frames.shape[-2:]
    plan = plan_train_clip(height, width, size, augment, generator=generator)
    return apply_train_clip(frames, size, augment, plan)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 `[..., 3, H, W]` -> uint8 with the shorter side `size`, aspect ratio kept."""
    height, width = video.shape[-2:]
    if height <= width:
        new = (size, max(size, round(width * size / height)))
    else:
        new = (max(size, round(height * size / width)), size)
    lead = video.shape[:-3]
    out = _resize(video.reshape(-1, *video.shape[-3:]), new)  # [N, 3, h, w]
    return out.reshape(*lead, *out.shape[-3:])


def spatial_crops(video: torch.Tensor, size: int, crops: int = 1) -> torch.Tensor:
    """Evaluation views: uint8 `[T, 3, H, W]` -> uint8 `[crops, T, 3, size, size]`.

    Resize the short side to `size`, then take `crops` squares evenly spaced along the long side:
    1 -> centre; 3 -> left/centre/right (landscape) or top/centre/bottom (portrait).
    """
    if crops < 1:
        raise invalid("evaluate.crops", "an integer >= 1", crops)
    video = resize_short_side(video, size)  # [T, 3, h, w], min(h, w) == size
    height, width = video.shape[-2:]
    span = max(height, width) - size
    offsets = [span // 2] if crops == 1 else [round(i * span / (crops - 1)) for i in range(crops)]
    views = []
    for offset in offsets:
        if width >= height:
            views.append(video[..., :, offset : offset + size])
        else:
            views.append(video[..., offset : offset + size, :])
    return torch.stack(views)  # [crops, T, 3, S, S]


def eval_views(frames: torch.Tensor, size: int, num_frames: int, crops: int) -> torch.Tensor:
    """Evaluation: uint8 `[clips * T, 3, H, W]` (clip-major) -> uint8 `[clips * crops, T, 3, S, S]`,
    or `[T, 3, S, S]` for a single view."""
    views = [
        spatial_crops(clip, size, crops) for clip in frames.split(num_frames)
    ]  # [crops, T, 3, S, S] each
    video = torch.cat(views)  # [V, T, 3, S, S], clip-major
    return video[0] if video.shape[0] == 1 else video


def normalize(
    video: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 (or 0..255 float) `[..., 3, H, W]` -> float32 `(x / 255 - mean) / std` per channel, on `video`'s device."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=video.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=video.device).view(3, 1, 1)
    return (video.float() / 255.0 - m) / s


def mean_colour(mean: Sequence[float] | torch.Tensor) -> tuple[int, int, int]:
    """The uint8 colour that normalises to (about) 0: what erased pixels are set to."""
    r, g, b = (round(255 * float(m)) for m in torch.as_tensor(mean).flatten())
    return r, g, b


def warn_host_decode(decode: str, device: torch.device, key: str) -> None:
    """`decode: device` with the model on the CPU runs, with the same pixels, but decodes in the main
    process, beside the model, instead of in the loader workers: say so (one line, naming the key)."""
    if decode == "device" and device.type != "cuda":
        log.warning("%s=device on %s: the main process decodes the JPEGs there (same pixels, no worker "
                    "parallelism); set %s=cpu unless a GPU runs the model", key, device.type, key)  # fmt: skip


def batch_to_device(
    batch: Mapping[str, Any], device: torch.device, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None, torch.Tensor]:
    """A loader batch -> (normalised float video, attributes or None, labels) on `device`.

    The uint8 video is copied first (non-blocking from pinned memory on CUDA), laid out planar
    (contiguous) there, and normalised there: the loader's batches keep each pixel's RGB adjacent.
    A batch of JPEG bytes (`train.decode` / `evaluate.decode`: device) is decoded and augmented on
    `device` first (`EncodedClips.decode`).
    """
    video = batch["video"]
    if isinstance(video, EncodedClips):
        video = video.decode(device)
    video = normalize(video.to(device, non_blocking=True).contiguous(), mean, std)
    attributes = {k: v.to(device, non_blocking=True) for k, v in batch["attributes"].items()}
    return video, attributes or None, batch["label"].to(device, non_blocking=True)


def draw_keyframe(keyframes: int, generator: torch.Generator | None) -> int:
    """Training's keyframe of a video, one for all its attributes: the video's last draw, after the clip's."""
    return int(torch.randint(keyframes, (1,), generator=generator))


def select_attributes(rows: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's attribute inputs from a video's float16 rows (`AttributeStore.get`): float32, one
    keyframe's `[L, D]` when training (read alone, `get(keyframe=draw_keyframe(...))`), all K
    keyframes' `[K, L, D]` when evaluating (extra views)."""
    return {name: value.float() for name, value in rows.items()}


def _stack_pixels(videos: list[torch.Tensor]) -> torch.Tensor:
    """uint8 clips `[..., 3, S, S]` -> `[B, ..., 3, S, S]` laid out `[B, ..., S, S, 3]` in memory.

    Each pixel's RGB adjacent, as the JPEG decoder and the uint8 resize leave them: a plain copy per
    clip instead of a transposing one (`batch_to_device` lays the batch out planar on the device,
    where that costs nothing). In a loader worker the batch is allocated in shared memory, as
    torch's `default_collate` does, so it crosses to the main process without another copy.
    """
    first = videos[0]
    *lead, channels, height, width = first.shape
    shape = (len(videos), *lead, height, width, channels)
    if get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
        out = first.new(storage).resize_(shape)
    else:
        out = torch.empty(shape, dtype=first.dtype, device=first.device)
    for i, video in enumerate(videos):
        out[i].copy_(video.movedim(-3, -1))
    return out.movedim(-1, -3)


DECODES = ("cpu", "device")  # train.decode, evaluate.decode: who decodes the JPEG frames
# `device` on CUDA against `cpu`, per pixel of the uint8 clips in levels of 255 (`EncodedClips.decode`):
# expected, and measured on a GPU by benchmarks/gpu_check.py
DEVICE_DECODE_TOLERANCE = {"max": 4, "mean": 0.5}
DECODE = one_of(*DECODES)  # their rule (TrainConfig, EvaluateConfig) and the dataset's guard


@dataclass
class EncodedClip:
    """One video's model input before decoding (`decode="device"`): the JPEGs of the stored frames
    its view(s) use, each once, and everything else a loader worker decides for it."""

    jpegs: list[torch.Tensor]  # uint8 JPEG bytes, each frame once
    positions: list[int] | None  # `EncodedVideo.encoded`: the frames in view order (None: jpegs' order)
    size: int  # model.image_size
    plan: TrainPlan | None  # training: the clip's draws; evaluation: None (views are fixed)
    augment: Augment = Augment()  # training
    num_frames: int = 1  # evaluation: T, to cut the clips x T frames into clips
    crops: int = 1  # evaluation

    def pixels(self, decoded: Sequence[torch.Tensor]) -> torch.Tensor:
        """The clip's uint8 input from its decoded JPEGs: what a loader worker makes with `decode="cpu"`."""
        frames = stack_frames(decoded, self.positions, channels_last=True)
        if self.plan is not None:
            return apply_train_clip(frames, self.size, self.augment, self.plan)
        return eval_views(frames, self.size, self.num_frames, self.crops)


@dataclass
class EncodedClips:
    """A batch's `video` when the main process decodes (`train.decode` / `evaluate.decode`: device):
    every JPEG of the batch in one uint8 buffer (one shared-memory block through the loader's queue
    instead of B x T), and each clip's plan. `decode` gives the uint8 `[B, (V,) T, 3, S, S]` a
    loader worker would have made, decoded in one batched `decode_jpeg` call on the device."""

    data: torch.Tensor  # uint8 [total bytes]: the JPEGs one after another
    lengths: list[int]  # bytes per JPEG
    clips: list[EncodedClip]  # with their `jpegs` emptied (the bytes are in `data`)

    @classmethod
    def pack(cls, clips: Sequence[EncodedClip]) -> EncodedClips:
        jpegs = [jpeg for clip in clips for jpeg in clip.jpegs]
        lengths = [int(jpeg.numel()) for jpeg in jpegs]
        if get_worker_info() is not None:  # straight into shared memory, as `_stack_pixels`
            storage = jpegs[0]._typed_storage()._new_shared(sum(lengths), device=jpegs[0].device)
            data = jpegs[0].new(storage).resize_(sum(lengths))
            torch.cat(jpegs, out=data)
        else:
            data = torch.cat(jpegs)
        kept = [EncodedClip(**{**vars(clip), "jpegs": [None] * len(clip.jpegs)}) for clip in clips]  # type: ignore[list-item]
        return cls(data=data, lengths=lengths, clips=kept)

    def __len__(self) -> int:
        return len(self.clips)

    def decode(self, device: torch.device | str) -> torch.Tensor:
        """uint8 `[B, (V,) T, 3, S, S]` on `device`: nvJPEG on CUDA (all the batch's JPEGs in one call), libjpeg-turbo on the CPU.

        On the CPU the result equals the loader workers' (`decode="cpu"`) bit for bit: the same
        decoder and the same augmentation code. On CUDA, nvJPEG's IDCT and upsampling differ from
        libjpeg-turbo's by a few levels per pixel (expected on q90 frames: `DEVICE_DECODE_TOLERANCE`;
        `benchmarks.gpu_check` measures it on a GPU, which this code has not yet run on), and
        the resize runs in float (`_resize_float`: within 1 of the CPU's uint8 kernel, mean 0.2, tested
        on the CPU).
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        device = torch.device(device)
        jpegs = list(self.data.split(self.lengths))
        decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
        videos, start = [], 0
        for clip in self.clips:
            videos.append(clip.pixels(decoded[start : start + len(clip.jpegs)]))
            start += len(clip.jpegs)
        return _stack_pixels(videos)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> `video` uint8 [B, (V,) T, 3, S, S], `attributes` name -> float32 [B, (K,) L, D], `label` [B].

    torch's `default_collate` stacks the tensors; in a loader worker it stacks them straight into
    shared memory, so a batch crosses to the main process without another copy. The video keeps
    each pixel's RGB adjacent in memory (`_stack_pixels`; `batch_to_device` makes it planar).
    """
    names = items[0]["attributes"].keys()
    videos = [it["video"] for it in items]
    return {
        "video": EncodedClips.pack(videos) if isinstance(videos[0], EncodedClip) else _stack_pixels(videos),
        "attributes": {name: default_collate([it["attributes"][name] for it in items]) for name in names},
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "video_id": [it["video_id"] for it in items],
    }


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class ClipSpec:
    """How a stored video becomes a model input (from `model.*`, `train.*` and the backbone)."""

    num_frames: int  # model.frames
    image_size: int  # model.image_size
    augment: Augment = Augment()  # train.* (training only)
    sampling: str = "segments"  # model.sampling: segments | dense
    frame_interval: int = 1  # model.frame_interval (dense): source frames between a clip's frames
    clips: int = 1  # evaluate.clips (evaluation only)
    crops: int = 1  # evaluate.crops (evaluation only)

    def __post_init__(self) -> None:
        check("model.sampling", self.sampling, SAMPLING)

    @property
    def views(self) -> int:
        return self.clips * self.crops

    def frame_indices(
        self,
        video: EncodedVideo,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        clip_index: int = 0,
    ) -> list[int]:
        """The stored frames of one view of `video` (`clip_index` of `clips` at evaluation)."""
        stored, frames = video.num_frames, self.num_frames
        if self.sampling == "dense":
            interval = stored_interval(video.meta, self.frame_interval)
            return sample_dense_indices(
                stored,
                frames,
                interval,
                train=train,
                generator=generator,
                clip_index=clip_index,
                num_clips=self.clips,
            )
        return sample_frame_indices(
            stored, frames, train=train, generator=generator, clip_index=clip_index, num_clips=self.clips
        )


def steps_per_epoch(num_samples: int, global_batch: int, grad_accum: int = 1) -> int:
    """Micro-batches per epoch, the same on every rank: whole optimiser steps, at least one.

    The remainder of the (shuffled) epoch is dropped; an epoch shorter than one optimiser step
    is filled by cycling the data.
    """
    if num_samples < 1:
        raise ValueError("no training samples (empty attribute file or shards)")
    optimiser_steps = max(1, num_samples // (global_batch * grad_accum))
    return optimiser_steps * grad_accum


def count_shard_samples(urls: Sequence[str]) -> int:
    """Samples in `urls`: the count the extract stage wrote beside each shard, else (an older shard
    folder) from the tar headers (one `.json` member per sample)."""
    import tarfile

    count = 0
    for url in urls:
        known = counted_samples(url)
        if known is None:
            with tarfile.open(url) as tar:
                known = sum(1 for member in tar if member.name.endswith(".json"))
        count += known
    return count


@dataclass(frozen=True)
class SplitSize:
    """How many videos a split has in its shards and how many of them can be used."""

    in_shards: int
    usable: int  # with an attribute row (all of them when there is no attribute file)

    @property
    def skipped(self) -> int:
        return max(self.in_shards - self.usable, 0)


def split_size(urls: Sequence[str], store: AttributeStore | None) -> SplitSize:
    """Count a split before iterating it, so every rank can agree on the epoch length.

    The attribute file has one row per video the attributes stage read from these same shards,
    so its row count is the number of usable videos; the shards are counted from tar headers only.
    """
    in_shards = count_shard_samples(urls)
    usable = in_shards if store is None else min(len(store), in_shards)
    return SplitSize(in_shards=in_shards, usable=usable)


# ----------------------------------------------------------------------------- dataset


class VideoAttributeDataset(IterableDataset):
    """Batches (already collated; use with `batch_size=None`) of one (rank, worker)'s share of a split.

    `batch_size` is per rank. Training (`steps` set) yields exactly `steps` batches per rank per
    epoch, spread over the loader workers, for each epoch of `set_epoch(start, stop)` in one
    iteration (so a loader's persistent workers carry on from one epoch into the next); evaluation yields every sample exactly once across
    ranks and workers, in batches cut per shard whatever the ranks and workers (`_eval_batches`;
    `samples`, the split's usable count, caps the workers at the batches there are, as `steps` does
    for training). `attribute_names` are loaded
    (empty for methods without attributes); `attributes` (the store) decides which videos exist
    either way.
    """

    def __init__(
        self,
        urls: Sequence[str],
        spec: ClipSpec,
        *,
        train: bool,
        batch_size: int,
        attributes: AttributeStore | None = None,
        attribute_names: Sequence[str] = (),
        steps: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        samples: int | None = None,
        decode: str = "cpu",
    ) -> None:
        super().__init__()
        check("train.decode" if train else "evaluate.decode", decode, DECODE)
        if not urls:
            raise ValueError("no shards to read")
        if batch_size < 1:
            raise ValueError(f"per-rank batch size must be >= 1, got {batch_size}")
        if train and steps is None:
            raise ValueError("training needs `steps` (batches per rank per epoch, see steps_per_epoch)")
        if train and spec.views != 1:
            raise ValueError("multi-view (clips x crops) is for evaluation only")
        if attribute_names and attributes is None:
            raise ValueError(f"attributes {list(attribute_names)} requested without an attribute file")
        self.urls = list(urls)
        self.spec = spec
        self.decode = decode  # cpu: workers decode and augment; device: `batch_to_device` does
        self.train = train
        self.batch_size = batch_size
        self.attributes = attributes
        self.attribute_names = tuple(attribute_names)
        self.steps = steps
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # A worker makes every `workers`-th batch: beyond the batches a rank has, one would only idle,
        # and with a single batch there is no model step to overlap with, only a fork and a copy to pay.
        if train:
            batches: int | None = steps
        else:  # unknown (no cap) unless the split's usable count is given
            batches = None if samples is None else math.ceil(samples / (batch_size * world_size))
        if batches is not None:
            workers = min(workers, batches) if batches > 1 else 0
        self.workers = max(workers, 1)
        self.num_workers = workers  # what the DataLoader must be built with
        self.epoch = 0
        self.stop_epoch = 1

    def set_epoch(self, epoch: int, stop: int | None = None) -> None:
        """One iteration of a training set covers epochs `epoch .. stop - 1` (default: `epoch` alone)."""
        stop = epoch + 1 if stop is None else stop
        if stop <= epoch:
            raise ValueError(f"empty epoch range {epoch}..{stop - 1}")
        self.epoch, self.stop_epoch = epoch, stop

    @property
    def mode(self) -> str:
        """'shards' when there are several readers (rank x worker) and each can get a shard of its own.

        A single reader reads everything either way, so it uses 'samples' mode: its batches are
        then exactly those of a multi-reader run over few shards.
        """
        readers = self.world_size * self.workers
        return "shards" if 1 < readers <= len(self.urls) else "samples"

    # -- items ---------------------------------------------------------------------------------

    def _item(self, sample: EncodedVideo, epoch: int, repeat: int) -> dict[str, Any]:
        """One video's model input; only the stored frames its view(s) use are decoded."""
        spec = self.spec
        video_id = sample.meta["video_id"]
        generator = make_generator(self.seed, epoch, repeat, video_id) if self.train else None
        encoded = self.decode == "device"
        video: torch.Tensor | EncodedClip
        if self.train:
            idx = spec.frame_indices(sample, train=True, generator=generator)
            if encoded:  # the same draws, the pixels left to the main process
                jpegs, positions = sample.encoded(idx)
                plan = plan_train_clip(
                    *jpeg_size(jpegs[0]), spec.image_size, spec.augment, generator=generator
                )
                video = EncodedClip(jpegs, positions, spec.image_size, plan, augment=spec.augment)
            else:
                video = train_clip(
                    sample.decode(idx, channels_last=True), spec.image_size, spec.augment, generator=generator
                )  # [T, 3, S, S]
        else:
            idx = [
                i for c in range(spec.clips) for i in spec.frame_indices(sample, train=False, clip_index=c)
            ]
            if encoded:
                jpegs, positions = sample.encoded(idx)
                video = EncodedClip(
                    jpegs, positions, spec.image_size, None, num_frames=spec.num_frames, crops=spec.crops
                )
            else:  # [V, T, 3, S, S], clip-major ([T, 3, S, S] for one view)
                video = eval_views(
                    sample.decode(idx, channels_last=True), spec.image_size, spec.num_frames, spec.crops
                )
        attributes: dict[str, torch.Tensor] = {}
        if self.attribute_names and self.attributes is not None:  # both or neither (checked in __init__)
            # training's keyframe is drawn before the rows are read, so that only its rows are copied
            keyframe = draw_keyframe(self.attributes.meta.keyframes, generator) if self.train else None
            rows = self.attributes.get(video_id, self.attribute_names, keyframe=keyframe)
            attributes = select_attributes(rows)
        return {
            "video": video,  # uint8 (or JPEGs), normalised on the model's device (`batch_to_device`)
            "attributes": attributes,
            "label": int(sample.meta["label"]),
            "video_id": video_id,
        }

    def _has_attributes(self, video_id: str) -> bool:
        return self.attributes is None or video_id in self.attributes

    # -- streams -------------------------------------------------------------------------------

    def _global_stream(self, epoch: int, repeat: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Training's raw samples with attributes, each with its parsed json (`parse_sample` takes it
        rather than parsing it again), in the seeded order every reader shares ("samples" mode)."""
        urls = list(self.urls)
        random.Random(derive_seed(self.seed, epoch, repeat, "shards")).shuffle(urls)
        raw: Iterator[dict[str, Any]] = tar_samples(urls, lazy_frames=True)
        parsed = ((s, json.loads(s["json"])) for s in raw)
        kept = ((s, meta) for s, meta in parsed if self._has_attributes(meta["video_id"]))
        return buffer_shuffle(
            kept, SHUFFLE_BUFFER, random.Random(derive_seed(self.seed, epoch, repeat, "buffer"))
        )

    def _reader_stream(self, slot: int, slots: int, epoch: int, repeat: int) -> Iterator[EncodedVideo]:
        """Training: this reader's own shards, parsed (frames still JPEG), with attributes ("shards" mode)."""
        urls = list(self.urls)
        random.Random(derive_seed(self.seed, epoch, repeat, "shards")).shuffle(urls)
        raw: Iterator[dict[str, Any]] = tar_samples(urls[slot::slots], lazy_frames=True)
        raw = buffer_shuffle(  # shuffled as raw bytes, decoded in `_item`
            raw, SHUFFLE_BUFFER, random.Random(derive_seed(self.seed, epoch, repeat, slot, "buffer"))
        )
        parsed = (parse_sample(sample) for sample in raw)
        return (s for s in parsed if self._has_attributes(s.meta["video_id"]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(
                f"dataset partitioned for {self.workers} loader workers but iterated by {workers}: "
                "build the DataLoader with `make_loader`"
            )
        if not self.train:
            yield from self._eval_batches(worker)
            return
        # Batch g of the iteration (over all its epochs) is made by worker g % workers: the order in
        # which the DataLoader collects batches from its workers, also across an epoch boundary.
        for offset, epoch in enumerate(range(self.epoch, self.stop_epoch)):
            first = offset * self.steps
            if self.mode == "samples":
                yield from self._train_by_samples(worker, epoch, first)
            else:
                yield from self._by_shards(worker, epoch, first)

    def _owns(self, worker: int, step: int) -> bool:
        return step % self.workers == worker

    def _train_by_samples(self, worker: int, epoch: int, first: int) -> Iterator[dict[str, Any]]:
        local, world = self.batch_size, self.world_size
        global_batch = local * world
        total = self.steps * global_batch  # positions in the epoch's global stream
        position, repeat, pending = 0, 0, []
        while position < total:
            seen = False
            for raw, meta in self._global_stream(epoch, repeat):
                seen = True
                step, within = divmod(position, global_batch)
                if within // local == self.rank and self._owns(worker, first + step):
                    pending.append(self._item(parse_sample(raw, meta), epoch, repeat))
                    if len(pending) == local:
                        yield collate(pending)
                        pending = []
                position += 1
                if position == total:
                    break
            if not seen:
                raise RuntimeError(f"no training video in {len(self.urls)} shards has an attribute row")
            repeat += 1

    def _eval_batches(self, worker: int) -> Iterator[dict[str, Any]]:
        """This reader's evaluation batches: the same batches for any number of ranks and workers.

        Each shard's videos (those with an attribute row, in stored order) are cut into batches of
        `batch_size`, the last one of a shard possibly short, so a batch never spans two shards and
        every reader can make any batch alone. "samples" mode deals the batches of all shards
        round-robin to the readers (rank x worker); "shards" mode deals whole shards. Either way the
        model sees exactly one process's batches, and so computes the same scores. Each batch carries
        `order`: per video (shard index, position in the shard), its place in one process's order.
        """
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        by_shards = self.mode == "shards"
        shards = range(slot, len(self.urls), slots) if by_shards else range(len(self.urls))
        dealt = 0  # "samples" mode: batches of the shards before this one
        for shard in shards:
            pending: list[dict[str, Any]] = []
            order: list[tuple[int, int]] = []
            position = 0
            for raw in tar_samples([self.urls[shard]], lazy_frames=True):
                meta = json.loads(raw["json"])
                if not self._has_attributes(meta["video_id"]):
                    continue
                if by_shards or (dealt + position // self.batch_size) % slots == slot:
                    pending.append(self._item(parse_sample(raw, meta), 0, 0))
                    order.append((shard, position))
                position += 1
                if position % self.batch_size == 0 and pending:
                    yield {**collate(pending), "order": order}
                    pending, order = [], []
            if pending:
                yield {**collate(pending), "order": order}
            dealt += -(-position // self.batch_size)

    def _by_shards(self, worker: int, epoch: int, first: int) -> Iterator[dict[str, Any]]:
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        # this worker's batches of the epoch's steps first .. first + steps - 1
        quota = sum(self._owns(worker, first + step) for step in range(self.steps))
        produced, repeat, pending = 0, 0, []
        while produced < quota:
            seen = False
            for sample in self._reader_stream(slot, slots, epoch, repeat):
                seen = True
                pending.append(self._item(sample, epoch, repeat))
                if len(pending) == self.batch_size:
                    yield collate(pending)
                    pending = []
                    produced += 1
                    if produced == quota:
                        return
            if not seen:
                raise RuntimeError(f"reader {slot} of {slots}: no video with an attribute row in its shards")
            repeat += 1


PREFETCH = 2  # batches each loader worker prepares ahead


def shared_memory_bytes(dataset: VideoAttributeDataset) -> int:
    """Bytes of batches a loader's workers hold in shared memory at once: `PREFETCH` batches each."""
    if dataset.num_workers == 0:
        return 0
    spec = dataset.spec
    views = 1 if dataset.train else spec.views
    video = dataset.batch_size * views * spec.num_frames * spec.image_size**2 * 3  # uint8
    if dataset.decode == "device":  # JPEG bytes: about a tenth (q90 at 256 px: ~20 KiB a frame)
        video //= 10
    attributes = 0
    if dataset.attribute_names and dataset.attributes is not None:
        meta = dataset.attributes.meta
        per_view = sum(meta.layers(n) for n in dataset.attribute_names) * meta.dim * 4  # float32
        attributes = dataset.batch_size * per_view * (1 if dataset.train else meta.keyframes)
    return (video + attributes) * PREFETCH * dataset.num_workers


def check_shared_memory(dataset: VideoAttributeDataset, folder: str = "/dev/shm") -> None:
    """Warn, with the size to ask for, when the workers' batches would not fit in shared memory.

    Worker batches reach the main process through /dev/shm; a container's default (Docker: 64 MiB)
    is far below a preset's (8 workers x 2 batches of 8 x 8 x 224 x 224 x 3 bytes: 147 MiB), and
    running out kills a worker with a bus error mid-epoch, long after start-up.
    """
    need = shared_memory_bytes(dataset)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no /dev/shm (not Linux): torch shares through other means
    if need and free < need:
        log.warning(
            "loader: %d workers hold up to %.0f MiB of batches in %s, which has %.0f MiB free; raise it "
            "(docker run --shm-size=%dg; Kubernetes: an emptyDir with medium Memory on /dev/shm) or lower "
            "train.workers / train.batch_size",
            dataset.num_workers, need / 2**20, folder, free / 2**20, max(1, math.ceil(2 * need / 2**30)),
        )  # fmt: skip


def make_loader(dataset: VideoAttributeDataset, *, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-collated batches, with the worker count the dataset was split for.

    Its workers persist from one iteration to the next (validation every epoch re-uses them). It
    draws its workers' base seed from a generator of its own: torch's default, the global
    generator, is the one dropout and drop path draw from, so creating an iterator would shift the
    model's randomness. Every random choice of the data comes from `make_generator` anyway.
    """
    workers = dataset.num_workers
    check_shared_memory(dataset)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH if workers > 0 else None,
        persistent_workers=workers > 0,
        generator=make_generator(dataset.seed, "loader"),
    )


def open_attribute_store(path: str | Path | None, *, needed: bool, split: str) -> AttributeStore | None:
    """The split's attribute file, shared by training and evaluation.

    Required when attribute tensors are `needed` (model.method=eva); otherwise a missing file only
    means every video in the shards is used (a warning), and a present one still decides which
    videos exist, so all methods see the same videos.
    """
    if path is not None and Path(path).is_file():
        return AttributeStore(path)
    if needed:
        raise FileNotFoundError(
            f"attribute file {path} not found: model.method=eva needs the attributes stage"
        )
    log.warning("no attribute file for %s (%s): using every video in the shards", split, path)
    return None


def read_classes(path: str | Path) -> list[str]:
    """`data/index/classes.json`: class names, index == label id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} not found (run the index stage)")
    classes = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{path} must be a non-empty JSON list of class names")
    return [str(c) for c in classes]
