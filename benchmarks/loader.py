"""Loader benchmark: the training loader per clip against the JPEG decode floor, at the presets' sizes.

    python -m benchmarks.loader [--videos 32] [--rounds 7] [--presets k400,ucf101-videomae]

Two presets' shapes, read from presets/ over params.yaml (`eva.preset.resolve`):
  k400             CLIP ViT-B/16 with AIM's recipe: 32 frames stored every 16th frame, 8 used
                   (dense, interval 16), RandomResizedCrop (area 0.08-1) to 224, flip;
  ucf101-videomae  VideoMAE ViT-B in the EVA authors' setup: 64 frames stored every 4th frame, 16 used
                   (dense, interval 4), TSN's multi-scale crop to 224, no flip.
Data, written by the pipeline's own code: synthetic 340x256 videos with natural-image statistics (a
dead-leaves scene, shapes filled with 1/f textures over a smooth gradient and a 1/f colour field,
two textured objects moving over it, a panning and bobbing camera, mild sensor noise), encoded as
H.264 (`eva.demo.data.encode_mp4`, libx264) and extracted to WebDataset shards by the extract stage
(`eva.data.extract.extract_shards` with the preset's `extract.*`: short side 256, JPEG q90); the
frames' JPEG sizes are reported (real video at this size: 15-25 KiB). The attribute file
(`eva.data.attribute_store.write_table`) has six attributes at the presets' sizes (4 keyframes,
12 layers, D_enc 512, float16); each video's row sits in a row group of its own among filler rows,
as in a split of thousands of videos, where a random read almost never finds its row group cached.

Measured in this process on one thread (`torch.set_num_threads(1)`), steady state, as the process's
CPU time (`time.process_time`, which counts helper threads such as Arrow's and not the waits for a
core on a shared machine; wall time is shown beside it), each loader batch followed by the floor on as many clips (so load from other
processes hits both alike), one pass of the split a round, the first round a warm-up; medians over
`--rounds`:
  loader  `VideoAttributeDataset(train=True)` through `make_loader` with 0 workers, batch `--batch`,
          the six attributes loaded: ms per clip over one pass of the split (tar headers, json,
          shuffle buffer, attribute rows, reading and decoding the used frames, crop, resize, flip,
          collate);
  floor   torchvision `decode_jpeg` of exactly the frames a clip uses (drawn by the preset's
          sampling and crop), one crop and a resize to 224, uint8 (no normalisation: batches stay
          uint8 until the device), from JPEG bytes already in memory, the frames kept in the
          decoder's HWC memory (the fastest way: torch's uint8 antialiased resize computes in it);
  ratio   loader / floor, the median of the rounds' ratios (goal of issue 37: <= 1.3);
  cores per GPU  the clips/s one H100 consumes x CPU ms per clip / 1000, where one H100 consumes
          0.4 x 989 TFLOP/s (40% MFU of its dense bf16 peak) / the counted FLOPs of one EVA
          training step per clip (forward + backward, `benchmarks/train_step.count_step_flops` on the
          preset's model: CLIP ViT-B/16 at 8 frames, VideoMAE ViT-B at 16, random weights);
  phases  one more pass with timers around the loader's functions, ms per clip per phase;
  workers clips/s through `make_loader` with `--workers` loader processes (the shards split
          between them), the first pass (start-up) left out.
Writes the tables to `--out` (results/bench/loader.md) and prints them. `--step-gflop` skips the
FLOP count (the tests); `--width/--height/--short-side/--image-size` shrink the clips.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from benchmarks import machine
from eva.config import load_params
from eva.data.attribute_store import (
    ATTRIBUTES,
    ROW_GROUP_ROWS,
    AttributeMeta,
    AttributeStore,
    VideoAttributes,
    rows_to_table,
    write_table,
)
from eva.data.clips import (
    Augment,
    ClipSpec,
    VideoAttributeDataset,
    make_generator,
    make_loader,
    multi_scale_crop_box,
    random_resized_crop_box,
)
from eva.data.extract import ExtractConfig
from eva.demo.tiny_training import placeholder_row, random_embeddings
from eva.preset import resolve
from eva.utils.trees import merge

REPO = Path(__file__).resolve().parents[1]

PRESETS = ("k400", "ucf101-videomae")
ENCODER_DIM, ENCODER_LAYERS = 512, 12  # the presets' attribute encoder, CLIP ViT-B/16
GPU, MFU = machine.H100, 0.4
GPU_PEAK_TFLOPS = machine.peaks_for(GPU)["bf16"]  # dense bf16 peak
GOAL = 1.3  # issue 37: loader within 1.3x of the decode floor


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Setup:
    """One preset's loader shape."""

    preset: str
    family: str  # model.backbone.family
    extract: ExtractConfig
    spec: ClipSpec
    keyframes: int
    params: dict[str, Any]

    def describe(self) -> str:
        spec, ex = self.spec, self.extract
        crop = "multi-scale crop" if spec.augment.crop == "multi_scale" else "random resized crop"
        return f"{spec.num_frames} of {ex.frames_per_video} @{spec.image_size}, {spec.sampling}, {crop}" + (
            ", flip" if spec.augment.flip else ""
        )


def load_setup(preset: str, image_size: int | None = None, short_side: int | None = None) -> Setup:
    """The preset applied over params.yaml; `image_size` / `short_side` shrink it (the tests)."""
    params = merge(load_params(REPO / "params.yaml"), resolve(preset))
    extract = ExtractConfig.from_params(params)
    if short_side is not None:
        extract = replace(extract, short_side=short_side)
    model, train = params["model"], params["train"]
    low, high = train["crop_scale"]
    spec = ClipSpec(
        num_frames=int(model["frames"]),
        image_size=image_size or int(model["image_size"]),
        augment=Augment(
            crop=str(train["crop"]),
            crop_scale=(float(low), float(high)),
            flip=bool(train["flip"]),
            rand_augment_ops=int(train["rand_augment"]["ops"]),
            rand_augment_magnitude=int(train["rand_augment"]["magnitude"]),
            erasing=float(train["random_erasing"]),
        ),
        sampling=str(model["sampling"]),
        frame_interval=int(model["frame_interval"]),
    )
    family = str(model["backbone"].get("family", "open_clip"))
    return Setup(preset, family, extract, spec, int(params["attributes"]["keyframes"]), params)


def step_gflop(setup: Setup) -> float:
    """Counted GFLOP of one EVA training step on one clip of the preset's model (random weights)."""
    from benchmarks.train_step import count_step_flops
    from eva.models import ModelConfig, VideoClassifier

    meta = AttributeMeta(
        encoder="bench", text_layers=ENCODER_LAYERS, image_layers=ENCODER_LAYERS, dim=ENCODER_DIM, keyframes=1
    )
    frames = setup.spec.num_frames
    config = ModelConfig.from_params(setup.params, stage=2, attribute_meta=meta, num_classes=400)
    config = replace(config, image_size=224, frames=frames)
    if setup.family == "videomae":
        from transformers import VideoMAEConfig, VideoMAEModel

        from eva.models.videomae import VideoMAEBackbone

        with torch.device("meta"):  # ViT-B, 16 frames, tubelet 2, 224 px: VideoMAEConfig's defaults
            backbone: Any = VideoMAEBackbone(VideoMAEModel(VideoMAEConfig(num_frames=frames)))
    else:
        import open_clip

        from eva.models.clip_backbone import OpenClipBackbone

        visual = open_clip.create_model("ViT-B-16", pretrained=None).visual
        cfg = visual.preprocess_cfg
        backbone = OpenClipBackbone(visual, frames, tuple(cfg["mean"]), tuple(cfg["std"]))
    return count_step_flops(VideoClassifier(config, backbone), 1) / 1e9


# ----------------------------------------------------------------------------- natural-looking video


def pink_noise(rng: np.random.Generator, height: int, width: int, exponent: float) -> np.ndarray:
    """A unit-variance field whose amplitude spectrum falls as 1/f**exponent (natural images: ~1)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    shape = (height, fx.shape[1])
    spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / radius**exponent
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(height, width))
    return (field / field.std()).astype(np.float32)


def _leaf(
    rng: np.random.Generator, height: int, width: int, textures: Sequence[np.ndarray], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """One textured shape (an ellipse or a rotated rectangle) as (mask, RGB values) over a `height x width` box."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(0.04, 0.25) * scale, rng.uniform(0.04, 0.25) * scale
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
    mask = u**2 + v**2 < 1 if rng.random() < 0.5 else (np.abs(u) < 1) & (np.abs(v) < 1)
    texture = textures[int(rng.integers(len(textures)))]
    texture = np.roll(texture, (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))
    colour = rng.uniform(15, 240, 3).astype(np.float32)
    gain = rng.uniform(4, 12) * rng.uniform(0.6, 1.4, 3).astype(np.float32)
    return mask, colour + texture[..., None] * gain


def natural_scene(rng: np.random.Generator, height: int, width: int, leaves: int = 40) -> np.ndarray:
    """float32 `[height, width, 3]`: a dead-leaves scene (occluding shapes with 1/f textures) over a
    smooth two-colour gradient and a 1/f colour field, the classic model of natural-image statistics."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xx / width + np.sin(theta) * yy / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    low, high = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    scene = (low + (high - low) * ramp[..., None]).astype(np.float32)
    for channel in range(3):
        scene[..., channel] += 22 * pink_noise(rng, height, width, 1.8) + 4 * pink_noise(
            rng, height, width, 1.0
        )
    textures = [pink_noise(rng, height, width, e) for e in (0.9, 1.1, 1.3)]
    scale = min(height, width)
    for _ in range(leaves):
        mask, values = _leaf(rng, height, width, textures, scale)
        scene[mask] = values[mask]
    return scene


def natural_video(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 `[frames, height, width, 3]`: a camera panning and bobbing over a `natural_scene`, two
    textured objects moving across it, mild sensor noise."""
    pad_y, pad_x = max(height // 8, 2), max(width // 2, 4)
    scene = natural_scene(rng, height + 2 * pad_y, width + 2 * pad_x)
    objects = []
    for _ in range(2):
        side = max(height // 4, 4)
        mask, values = _leaf(rng, side, side, [pink_noise(rng, side, side, 1.0)], side * 3)
        start = rng.uniform([0, 0], [height - side, width - side])
        velocity = rng.uniform(-1.5, 1.5, 2)
        objects.append((mask, values, start, velocity))
    period_x, period_y = rng.uniform(150, 400), rng.uniform(60, 200)
    phase = rng.uniform(0, 2 * np.pi, 2)
    noise = rng.normal(0.0, 1.5, size=(4, height, width, 3)).astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        y = pad_y + round(pad_y * 0.8 * np.sin(2 * np.pi * t / period_y + phase[0]))
        x = pad_x + round(pad_x * 0.9 * np.sin(2 * np.pi * t / period_x + phase[1]))
        frame = scene[y : y + height, x : x + width] + noise[t % len(noise)]
        for mask, values, start, velocity in objects:
            side = mask.shape[0]
            top, left = (start + velocity * t) % [height - side + 1, width - side + 1]
            box = frame[int(top) : int(top) + side, int(left) : int(left) + side]
            box[mask] = values[mask]
        np.clip(frame, 0, 255, out=frame)
        out[t] = frame
    return out


# ----------------------------------------------------------------------------- the split on disk


@dataclass
class Split:
    urls: list[str]
    attributes: Path
    jpeg_kib: list[float]  # every stored frame's JPEG size


def write_split(root: Path, setup: Setup, args: argparse.Namespace) -> Split:
    """`args.videos` clips of `args.sources` generated videos, extracted to shards by the extract
    stage, and their attribute file (each row in a row group of its own)."""
    import pyarrow as pa
    from webdataset.tariterators import tarfile_samples

    from eva.data.extract import extract_shards
    from eva.data.index import INDEX_SCHEMA
    from eva.data.shards import list_shards
    from eva.demo.data import encode_mp4

    ex = setup.extract
    # long enough for `frames_per_video` frames at `frame_stride`: the stored frames are a strided run
    source_frames = ex.frames_per_video * max(ex.frame_stride, 1)
    rng = np.random.default_rng(args.seed)
    paths = []
    for s in range(args.sources):
        path = root / "videos" / f"{s:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_mp4(path, natural_video(rng, source_frames, args.height, args.width), 30)
        paths.append(str(path))
    rows = [
        {"video_id": f"train/{i:05d}", "path": paths[i % len(paths)], "label": i % 4,
         "label_name": f"class{i % 4}", "split": "train", "start": None, "end": None}
        for i in range(args.videos)
    ]  # fmt: skip
    per_shard = max(1, -(-args.videos // args.shards))
    cfg = replace(ex, samples_per_shard=per_shard, workers=args.extract_workers)
    result = extract_shards(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), root / "shards", cfg)
    if result.failures:
        raise RuntimeError(f"extract failed: {result.failures[:2]}")
    urls = list_shards(root / "shards", "train")
    sizes = [
        len(value) / 1024
        for sample in tarfile_samples([{"url": u} for u in urls])
        for name, value in sample.items()
        if name.endswith(".jpg")
    ]
    meta = AttributeMeta(
        encoder="bench",
        text_layers=ENCODER_LAYERS,
        image_layers=ENCODER_LAYERS,
        dim=ENCODER_DIM,
        keyframes=setup.keyframes,
    )
    embeddings = random_embeddings(meta, rng)
    keyframes = list(range(setup.keyframes))

    def row(video_id: str) -> VideoAttributes:
        return placeholder_row(video_id, keyframes, embeddings)

    table_rows = []
    for i, r in enumerate(rows):  # the video's row at a varying place in a row group of fillers
        fillers = [row(f"filler/{i:05d}-{k:02d}") for k in range(ROW_GROUP_ROWS - 1)]
        fillers.insert(i % ROW_GROUP_ROWS, row(r["video_id"]))
        table_rows += fillers
    write_table(root / "train.parquet", rows_to_table(table_rows, meta), row_group_rows=ROW_GROUP_ROWS)
    return Split(urls, root / "train.parquet", sizes)


# ----------------------------------------------------------------------------- the floor


def floor_plans(split: Split, setup: Setup, rounds: int, seed: int) -> list[list[tuple[list, tuple]]]:
    """Per round, per video: (the used frames as JPEG byte tensors, the crop box), drawn as the loader
    draws them (the preset's temporal sampling and crop), prepared before any timing."""
    from webdataset.tariterators import tarfile_samples

    from eva.data.shards import parse_sample

    videos = [parse_sample(s) for s in tarfile_samples([{"url": u} for u in split.urls])]
    data = [[torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in v.jpegs] for v in videos]
    spec = setup.spec
    plans = []
    for r in range(rounds):
        plan = []
        for video, jpegs in zip(videos, data, strict=True):
            generator = make_generator(seed, "floor", r, video.meta["video_id"])
            indices = spec.frame_indices(video, train=True, generator=generator)
            height, width = _frame_size(jpegs[0])
            if spec.augment.crop == "multi_scale":
                box = multi_scale_crop_box(height, width, spec.image_size, generator=generator)
            else:
                box = random_resized_crop_box(height, width, spec.augment.crop_scale, generator=generator)
            plan.append(([jpegs[i] for i in indices], box))
        plans.append(plan)
    return plans


def _frame_size(jpeg: torch.Tensor) -> tuple[int, int]:
    height, width = decode_jpeg(jpeg, mode=ImageReadMode.RGB).shape[-2:]
    return int(height), int(width)


def floor_clip(jpegs: list[torch.Tensor], box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """The floor for one clip: decode its frames, one crop, resize to `size` (uint8 `[T, 3, S, S]`).

    The frames stay in the decoder's HWC memory (`decode_jpeg` returns `[3, H, W]` views of it): the
    fastest way to crop and resize them, the layout torch's uint8 antialiased resize computes in.
    """
    top, left, h, w = box
    decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB)
    frames = torch.stack([f.permute(1, 2, 0) for f in decoded]).permute(0, 3, 1, 2)  # [T, 3, H, W]
    return TF.resize(frames[..., top : top + h, left : left + w], [size, size], antialias=True)


# ----------------------------------------------------------------------------- timing


PHASES = {  # label -> where the time goes in one pass of the loader (`phase_timer`)
    "reading": "shard headers, json, shuffle buffer, frame draws, loop",
    "attributes": "attribute rows (store + keyframe pick)",
    "frames": "reading the used frames",
    "decode": "JPEG decode + stack",
    "augment": "crop, resize, flip",
    "collate": "collate",
}


@contextlib.contextmanager
def phase_timer(store: AttributeStore) -> Iterator[collections.Counter]:
    """CPU seconds per phase while the context is open: the loader's functions wrapped in timers."""
    import eva.data.clips as clips
    import eva.data.shards as shards

    spent: collections.Counter = collections.Counter()

    def timed(function: Any, label: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - start

        return wrapper

    targets = [
        (shards.EncodedVideo, "decode", "decode"),  # includes `frames`, subtracted below
        (shards, "_jpeg_tensors", "frames"),
        (clips, "train_clip", "augment"),
        (clips, "collate", "collate"),
        (clips, "select_attributes", "attributes"),
        (store, "get", "attributes"),
    ]
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in targets]
    for owner, name, label in targets:
        setattr(owner, name, timed(getattr(owner, name), label))
    try:
        yield spent
    finally:
        for owner, name, original in saved:
            if original is None:
                delattr(owner, name)  # an instance attribute set above: the method shows through again
            else:
                setattr(owner, name, original)
        spent["decode"] -= spent["frames"]


def bench_setup(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Loader and floor, interleaved per round (round 0 a warm-up), then one pass timed per phase;
    then the loader with workers."""
    rounds = args.rounds + 1
    batch = args.batch
    steps = args.videos // batch
    if steps < 1 or args.videos % batch or args.rounds < 1:
        raise SystemExit(f"--videos ({args.videos}) must be a multiple of --batch ({batch}); --rounds >= 1")
    with tempfile.TemporaryDirectory(prefix="eva-loader-") as tmp:
        split = write_split(Path(tmp), setup, args)
        store = AttributeStore(split.attributes)
        plans = floor_plans(split, setup, rounds, args.seed)
        common = dict(
            train=True,
            batch_size=batch,
            attributes=store,
            attribute_names=ATTRIBUTES,
            steps=steps,
            seed=args.seed,
        )
        dataset = VideoAttributeDataset(split.urls, setup.spec, **common)
        dataset.set_epoch(0, rounds + 1)  # the last pass: per phase
        batches: Iterator[dict[str, Any]] = iter(make_loader(dataset))
        # per round: [loader, floor] x [wall, cpu] seconds, a loader batch and the floor on as many
        # clips alternating, so that load from other processes hits both alike
        spent_by_round = []
        size = setup.spec.image_size
        for r in range(rounds):
            seconds = np.zeros((2, 2))
            for step in range(steps):
                wall, cpu = time.perf_counter(), time.process_time()
                next(batches)
                seconds[0] += (time.perf_counter() - wall, time.process_time() - cpu)
                wall, cpu = time.perf_counter(), time.process_time()
                for jpegs, box in plans[r][step * batch : (step + 1) * batch]:
                    floor_clip(jpegs, box, size)
                seconds[1] += (time.perf_counter() - wall, time.process_time() - cpu)
            spent_by_round.append(1000 * seconds / args.videos)  # ms per clip
        with phase_timer(store) as spent:
            cpu = time.process_time()
            for _ in range(steps):
                next(batches)
            total = time.process_time() - cpu
        phases = {label: 1000 * spent[label] / args.videos for label in PHASES if label != "reading"}
        phases["reading"] = 1000 * total / args.videos - sum(phases.values())
        workers = None
        if args.workers:
            parallel = VideoAttributeDataset(split.urls, setup.spec, workers=args.workers, **common)
            parallel.set_epoch(0, rounds)
            rates, last = [], None
            for count, _ in enumerate(make_loader(parallel), 1):
                if count % steps == 0:  # a pass of the split
                    now = time.perf_counter()
                    if last is not None:
                        rates.append(args.videos / (now - last))
                    last = now
            workers = statistics.median(rates)
    timed = np.stack(spent_by_round[1:])  # [rounds, loader/floor, wall/cpu], round 0 a warm-up
    return {
        "loader_ms": float(np.median(timed[:, 0, 1])),  # CPU time
        "floor_ms": float(np.median(timed[:, 1, 1])),
        "ratio": float(np.median(timed[:, 0, 1] / timed[:, 1, 1])),
        "wall_loader_ms": float(np.median(timed[:, 0, 0])),
        "wall_floor_ms": float(np.median(timed[:, 1, 0])),
        "wall_ratio": float(np.median(timed[:, 0, 0] / timed[:, 1, 0])),
        "phases_ms": phases,
        "workers_clips_per_s": workers,
        "jpeg_kib": statistics.mean(split.jpeg_kib),
        "jpeg_kib_range": (min(split.jpeg_kib), max(split.jpeg_kib)),
    }


def markdown(results: dict[str, dict[str, Any]], setups: dict[str, Setup], args: argparse.Namespace) -> str:
    """The table `--out` receives: a summary (README's copy) and the details."""
    quality = {setup.extract.jpeg_quality for setup in setups.values()}
    workers = f" {args.workers}-worker clips/s |" if args.workers else ""
    lines = [
        "<!-- generated by benchmarks/loader.py; do not edit -->",
        "<!-- summary -->",
        f"Training loader ({machine.cpu_model()}, {os.cpu_count()} cores; one thread, no workers, batch {args.batch}, "
        "six attributes) against the floor (`decode_jpeg` of the clip's frames + one crop + resize, uint8): "
        f"CPU ms per clip, median of {args.rounds} rounds of loader batches and floor alternating. Cores per "
        f"GPU: the clips/s one {GPU} consumes at {MFU:.0%} MFU x CPU seconds per clip. Goal (issue 37): <= {GOAL}x.",
        "",
        "| preset | clip | loader ms/clip | floor ms/clip | loader / floor | cores per GPU (floor) |"
        + workers,
        "|---|---|---:|---:|---:|---:|" + ("---:|" if args.workers else ""),
    ]
    for name, r in results.items():
        gpu = r["gpu_clips_per_s"]
        cores, floor_cores = gpu * r["loader_ms"] / 1000, gpu * r["floor_ms"] / 1000
        rate = f" {r['workers_clips_per_s']:.0f} |" if args.workers else ""
        lines.append(
            f"| {name} | {setups[name].describe()} | {r['loader_ms']:.2f} | {r['floor_ms']:.2f} | "
            f"{r['ratio']:.2f}x | {cores:.1f} ({floor_cores:.1f}) |" + rate
        )
    lines += [
        "<!-- /summary -->",
        "",
        f"Frames: generated {args.width}x{args.height} videos with natural-image statistics (`natural_video`), "
        f"H.264, extracted by the extract stage at each preset's `extract.*` (JPEG q{'/'.join(map(str, quality))}); "
        f"{args.videos} clips per preset in {args.shards} shards, six attributes of 4 x 12 x 512 float16 with each "
        f"video's row in a row group of its own. One {GPU} consumes {MFU:.0%} x {GPU_PEAK_TFLOPS:.0f} TFLOP/s "
        "(dense bf16) over the counted FLOPs of one EVA training step per clip (forward + backward).",
        "",
        f"| preset | JPEG KiB per frame (min-max) | EVA step GFLOP per clip | {GPU} clips/s | "
        "wall ms per clip: loader | floor | loader / floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        low, high = r["jpeg_kib_range"]
        lines.append(
            f"| {name} | {r['jpeg_kib']:.1f} ({low:.1f}-{high:.1f}) | {r['gflop']:,.0f} | "
            f"{r['gpu_clips_per_s']:.0f} | {r['wall_loader_ms']:.2f} | {r['wall_floor_ms']:.2f} | "
            f"{r['wall_ratio']:.2f}x |"
        )
    lines += [
        "",
        "Wall time counts the waits for a core as well: on a machine shared with other jobs it is the noisier.",
    ]
    names = list(results)
    lines += [
        "",
        "One more pass of the loader, CPU ms per clip per phase (timers around its functions):",
        "",
        "| phase | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, text in PHASES.items():
        lines.append(
            f"| {text} | " + " | ".join(f"{results[n]['phases_ms'][label]:.2f}" for n in names) + " |"
        )
    lines.append(
        "| total | " + " | ".join(f"{sum(results[n]['phases_ms'].values()):.2f}" for n in names) + " |"
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    parser.add_argument("--videos", type=int, default=32, help="clips in the split (a multiple of --batch)")
    parser.add_argument("--sources", type=int, default=4, help="distinct generated videos behind the clips")
    parser.add_argument("--shards", type=int, default=4, help="shards the clips are written to")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (one pass each), after a warm-up")
    parser.add_argument(
        "--workers", type=int, default=2, help="loader workers for the clips/s column (0: skip)"
    )
    parser.add_argument("--width", type=int, default=340, help="generated video width")
    parser.add_argument("--height", type=int, default=256, help="generated video height")
    parser.add_argument("--short-side", type=int, default=None, help="override extract.short_side")
    parser.add_argument("--image-size", type=int, default=None, help="override model.image_size")
    parser.add_argument("--extract-workers", type=int, default=2)
    parser.add_argument(
        "--step-gflop", default="", help="GFLOP per clip per preset, `k400=907,...` (default: counted)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "loader.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    given = dict(item.split("=") for item in args.step_gflop.split(",") if item.strip())
    setups = {
        name: load_setup(name, args.image_size, args.short_side) for name in args.presets.split(",") if name
    }
    results = {}
    for name, setup in setups.items():
        gflop = float(given[name]) if name in given else step_gflop(setup)
        r = bench_setup(setup, args)
        r["gflop"] = gflop
        r["gpu_clips_per_s"] = MFU * GPU_PEAK_TFLOPS * 1e3 / gflop
        results[name] = r
    table = markdown(results, setups, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
