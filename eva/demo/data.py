"""The embedded demo dataset: synthetic clips whose action classes can only be told apart over time.

The pipeline has to run end to end offline with no dataset on disk, so `make demo` and the tests
run on clips generated here. A demo that a single frame could solve would hide a temporal model
that does not work, so every class shares its single-frame statistics with at least one other
class: positions, sizes and angles are drawn from common ranges and only the change across frames
(direction of travel, sense of rotation, growth) tells the class. The clips go through the same
code as real data: real H.264 mp4 files (decodable by PyAV and decord) and annotations in
Something-Something V2's own json format, read by the SSv2 reader.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

from eva.config import check_fields, integer, invalid, section_values, setting
from eva.data.index import SSV2_LABELS, SSV2_SPLIT_FILES
from eva.data.index import ssv2_template_key as template_key
from eva.utils.log import progress

log = logging.getLogger(__name__)

# Template (SSv2 style, with [something] placeholders) -> the motion that renders it.
CLASS_MOTIONS: Mapping[str, str] = MappingProxyType(
    {
        "Pushing [something] from left to right": "right",
        "Pushing [something] from right to left": "left",
        "Moving [something] up": "up",
        "Moving [something] down": "down",
        "Turning [something] clockwise": "clockwise",
        "Turning [something] anticlockwise": "anticlockwise",
        "Moving [something] towards the camera": "grow",
        "Moving [something] away from the camera": "shrink",
    }
)


# Class templates in label-id order: sorted by labels-json key, as SSv2's labels json is.
DEMO_CLASSES: tuple[str, ...] = tuple(sorted(CLASS_MOTIONS, key=template_key))

# Saturated object colours, far from each other and from the low-saturation backgrounds, so an
# object stays findable by colour after yuv420p encoding.
COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (220, 40, 40),
        "green": (40, 180, 60),
        "blue": (40, 90, 230),
        "yellow": (235, 215, 40),
        "magenta": (210, 50, 200),
        "cyan": (40, 200, 215),
    }
)

# SSv2's file names and template -> label key mapping have one home, the index reader.
LABELS_FILE = SSV2_LABELS
SPLIT_FILES: Mapping[str, str] = MappingProxyType(SSV2_SPLIT_FILES)

_MARGIN = 0.02  # min gap between an object's circumscribed circle and the frame edge (frame units)
_RADIUS_MIN, _RADIUS_MAX = 0.09, 0.26  # main object circumscribed radius, frame units
_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered: anti-aliased edges, sub-pixel motion
_MARKER_AT, _MARKER_RADIUS = (0.42, 0.0), 0.21  # dark spot that makes every shape's rotation visible


def _regular_polygon(corners: int, phase_deg: float = 0.0) -> np.ndarray:
    a = np.deg2rad(phase_deg + 360.0 * np.arange(corners) / corners)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = np.deg2rad(180.0 * np.arange(2 * points) / points)
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(half_width: float = 0.24) -> np.ndarray:
    w, e = half_width, float(np.sqrt(1.0 - half_width**2))  # arm ends touch the unit circle
    return np.array(
        [
            (e, -w),
            (e, w),
            (w, w),
            (w, e),
            (-w, e),
            (-w, w),
            (-e, w),
            (-e, -w),
            (-w, -w),
            (-w, -e),
            (w, -e),
            (w, -w),
        ]
    )


def _arrow() -> np.ndarray:
    return np.array(
        [(1.0, 0.0), (0.1, 0.62), (0.1, 0.22), (-0.95, 0.22), (-0.95, -0.22), (0.1, -0.22), (0.1, -0.62)]
    )


# Unit shapes (circumscribed radius 1, local x to the right, y down); all contain the marker spot.
SHAPES: Mapping[str, np.ndarray] = MappingProxyType(
    {
        "square": _regular_polygon(4, 45.0),
        "circle": _regular_polygon(48),
        "triangle": _regular_polygon(3),
        "star": _star(),
        "cross": _cross(),
        "hexagon": _regular_polygon(6),
        "arrow": _arrow(),
    }
)


@dataclass(frozen=True)
class ObjectTrack:
    """One object over a clip. Frame units (0..1 of the side); angle in degrees, clockwise on screen."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    cx: np.ndarray  # [T]
    cy: np.ndarray  # [T]
    radius: np.ndarray  # [T] circumscribed radius
    angle: np.ndarray  # [T]
    marker: bool


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip; `main` is the object the label talks about."""

    template: str
    motion: str
    main: ObjectTrack
    distractors: tuple[ObjectTrack, ...]
    background: np.ndarray  # [S, S, 3] float32
    noise_sigma: float
    noise_seed: int

    @property
    def placeholder(self) -> str:
        return f"{self.main.colour} {self.main.shape}"

    @property
    def label(self) -> str:
        """The filled-in template, lower case, as SSv2's `label` field."""
        return self.template.replace("[something]", self.placeholder).lower()


@dataclass(frozen=True)
class DemoSummary:
    out_dir: Path
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> template -> number of videos
    num_videos: int
    total_bytes: int


@dataclass(frozen=True)
class DemoConfig:
    """The `demo` section of params.yaml; checked before anything is written."""

    seed: int = setting(rule=integer(0))
    train_per_class: int = setting(rule=integer(1))
    val_per_class: int = setting(rule=integer(1))
    frames: int = setting(rule=integer(4))
    size: int = setting(rule=integer(32, what="(even: H.264 yuv420p needs even sides)"))
    fps: int = setting(rule=integer(1))

    def __post_init__(self) -> None:
        check_fields(self, "demo")
        if self.size % 2:
            raise invalid("demo.size", "even (H.264 yuv420p needs even sides)", self.size)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DemoConfig:
        return cls(**section_values(cls, params, "demo"))


def _progress_curve(rng: np.random.Generator, frames: int) -> np.ndarray:
    """0 -> 1 over the clip with a random onset and offset, so speed varies and timing is not fixed."""
    onset, offset = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
    t = np.linspace(0.0, 1.0, frames)
    return np.clip((t - onset) / (offset - onset), 0.0, 1.0)


def _drifting_centre(
    rng: np.random.Generator, p: np.ndarray, radius_max: float, max_drift: float
) -> tuple[np.ndarray, np.ndarray]:
    """A centre that stays roughly put (small drift), fully inside the frame at the largest radius."""
    lo, hi = radius_max + _MARGIN, 1.0 - radius_max - _MARGIN
    start = rng.uniform(lo, hi, size=2)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    drift = rng.uniform(0.0, max_drift) * np.array([np.cos(direction), np.sin(direction)])
    cx = np.clip(start[0] + drift[0] * p, lo, hi)
    cy = np.clip(start[1] + drift[1] * p, lo, hi)
    return cx, cy


def _main_track(rng: np.random.Generator, motion: str, frames: int) -> tuple[np.ndarray, ...]:
    """Centre, radius and angle per frame for the labelled motion.

    Ranges are shared between classes: left/right movers, up/down movers, the two rotations and
    the two scalings have identical single-frame distributions, and position, size and angle
    overlap between the groups too. Non-defining quantities wobble a little so that only a
    large, consistent change identifies the class.
    """
    p = _progress_curve(rng, frames)
    angle0 = rng.uniform(0.0, 360.0)
    wobble_angle = angle0 + rng.uniform(-15.0, 15.0) * p
    if motion in ("right", "left", "up", "down"):
        distance = rng.uniform(0.3, 0.55)
        r_top = min(_RADIUS_MAX, (1.0 - distance) / 2.0 - _MARGIN) / 1.08
        radius = rng.uniform(_RADIUS_MIN, r_top) * (1.0 + rng.uniform(-0.08, 0.08) * p)
        lo, hi = radius.max() + _MARGIN, 1.0 - radius.max() - _MARGIN
        start = rng.uniform(lo, hi - distance)
        along = start + distance * p if motion in ("right", "down") else hi - (start - lo) - distance * p
        across = np.clip(rng.uniform(lo, hi) + rng.uniform(-0.05, 0.05) * p, lo, hi)
        cx, cy = (along, across) if motion in ("right", "left") else (across, along)
        return cx, cy, radius, wobble_angle
    if motion in ("clockwise", "anticlockwise"):
        radius = rng.uniform(_RADIUS_MIN, _RADIUS_MAX / 1.08) * (1.0 + rng.uniform(-0.08, 0.08) * p)
        cx, cy = _drifting_centre(rng, p, float(radius.max()), 0.06)
        turn = rng.uniform(100.0, 200.0) * (1.0 if motion == "clockwise" else -1.0)
        return cx, cy, radius, angle0 + turn * p
    if motion in ("grow", "shrink"):
        small = rng.uniform(_RADIUS_MIN, 0.14)
        big = small * rng.uniform(1.6, 2.0)
        q = p if motion == "grow" else 1.0 - p
        radius = small * (big / small) ** q  # geometric: the same relative growth every frame
        cx, cy = _drifting_centre(rng, p, big, 0.06)
        return cx, cy, radius, wobble_angle
    raise ValueError(f"unknown demo motion {motion!r}; expected one of {sorted(set(CLASS_MOTIONS.values()))}")


def _distractor_track(rng: np.random.Generator, frames: int, colour: str) -> ObjectTrack:
    """A small object wandering at random (momentum + bounces), following no class's rule."""
    radius = rng.uniform(0.04, 0.08)
    lo, hi = radius + _MARGIN, 1.0 - radius - _MARGIN
    pos = rng.uniform(lo, hi, size=2)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    step = rng.uniform(0.1, 0.5) / max(frames - 1, 1)
    xs, ys = np.empty(frames), np.empty(frames)
    for t in range(frames):
        xs[t], ys[t] = pos
        heading += rng.normal(0.0, 0.5)
        pos = pos + step * np.array([np.cos(heading), np.sin(heading)])
        for axis in range(2):  # bounce off the walls
            if not lo <= pos[axis] <= hi:
                pos[axis] = np.clip(pos[axis], lo, hi)
                heading = np.pi - heading if axis == 0 else -heading
    spin = rng.uniform(-180.0, 180.0) * np.linspace(0.0, 1.0, frames)
    shape = str(rng.choice(list(SHAPES)))
    return ObjectTrack(
        shape=shape,
        colour=colour,
        rgb=_jitter_colour(rng, COLOURS[colour]),
        cx=xs,
        cy=ys,
        radius=np.full(frames, radius),
        angle=rng.uniform(0.0, 360.0) + spin,
        marker=False,
    )


def _jitter_colour(rng: np.random.Generator, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in rgb)
    return r, g, b


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted (low-saturation) gradient or texture, [S, S, 3] float32: varied, but never object-coloured."""
    grey = rng.uniform(50.0, 180.0, size=2)
    tint = rng.uniform(-20.0, 20.0, size=(2, 3))
    c0, c1 = grey[0] + tint[0], grey[1] + tint[1]  # [3]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.integers(4))
    if kind == 0:  # linear gradient at a random angle
        a = rng.uniform(0.0, 2.0 * np.pi)
        w = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)
        w = (w - w.min()) / max(float(np.ptp(w)), 1e-6)
    elif kind == 1:  # radial gradient around a random centre
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        w = np.clip(np.hypot(x - cx, y - cy) / 0.9, 0.0, 1.0)
    elif kind == 2:  # low-contrast stripes at a random angle and frequency
        a, freq = rng.uniform(0.0, np.pi), rng.uniform(3.0, 9.0)
        w = 0.5 + 0.5 * np.sin(2.0 * np.pi * freq * (x * np.cos(a) + y * np.sin(a)))
    else:  # smooth value noise: a coarse random grid, bicubic-upsampled
        cells = int(rng.integers(3, 8))
        coarse = Image.fromarray((rng.uniform(0.0, 1.0, size=(cells, cells)) * 255).astype(np.uint8))
        w = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    bg = c0 * (1.0 - w[..., None]) + c1 * w[..., None]  # [S, S, 3]
    grain = rng.normal(0.0, rng.uniform(0.0, 6.0), size=(size, size, 1))  # static texture, luminance only
    return np.clip(bg + grain, 0.0, 255.0).astype(np.float32)


def sample_clip(rng: np.random.Generator, template: str, *, frames: int, size: int) -> ClipSpec:
    """Draw one clip of class `template`: object, colour, trajectory, distractors, background, noise."""
    motion = CLASS_MOTIONS[template]
    shape = str(rng.choice(list(SHAPES)))
    colour = str(rng.choice(list(COLOURS)))
    cx, cy, radius, angle = _main_track(rng, motion, frames)
    main = ObjectTrack(
        shape, colour, _jitter_colour(rng, COLOURS[colour]), cx, cy, radius, angle, marker=True
    )
    others = [c for c in COLOURS if c != colour]  # a distractor never shares the main object's colour
    distractors = tuple(
        _distractor_track(rng, frames, str(rng.choice(others))) for _ in range(int(rng.integers(0, 3)))
    )
    return ClipSpec(
        template=template,
        motion=motion,
        main=main,
        distractors=distractors,
        background=_background(rng, size),
        noise_sigma=float(rng.uniform(1.0, 5.0)),
        noise_seed=int(rng.integers(2**63)),
    )


# Radius range of a still's main object: every size the main object takes in any clip (a growing
# object ends at up to 2x its 0.14 start), so pretraining sees every frame the clips can show.
STILL_RADIUS = (_RADIUS_MIN, 0.28)


@dataclass(frozen=True)
class StillSpec:
    """One still scene for pretraining: the clip renderer's objects frozen at one instant, no motion.

    It has no template and no motion: what a still shows is drawn independently of any action class.
    """

    main: ObjectTrack  # T = 1
    distractors: tuple[ObjectTrack, ...]
    background: np.ndarray  # [S, S, 3] float32
    noise_sigma: float
    noise_seed: int


def main_object(
    rng: np.random.Generator, *, shape: str, colour: str, cx: float, cy: float, radius: float, angle: float
) -> ObjectTrack:
    """A one-frame main object (with its rotation marker) at a given place, size and angle."""
    one = np.ones(1)
    rgb = _jitter_colour(rng, COLOURS[colour])
    return ObjectTrack(shape, colour, rgb, cx * one, cy * one, radius * one, angle * one, marker=True)


def valid_centre_range(radius: float) -> tuple[float, float]:
    """Centre coordinates that keep an object of `radius` fully inside the frame (frame units)."""
    return radius + _MARGIN, 1.0 - radius - _MARGIN


def sample_still(rng: np.random.Generator, *, size: int) -> StillSpec:
    """Draw one still: the clips' shapes, colours, sizes, positions, angles, distractors, backgrounds, noise."""
    shape = str(rng.choice(list(SHAPES)))
    colour = str(rng.choice(list(COLOURS)))
    radius = float(np.exp(rng.uniform(*np.log(STILL_RADIUS))))  # log-uniform: small objects as common as big
    lo, hi = valid_centre_range(radius)
    cx, cy = (float(v) for v in rng.uniform(lo, hi, size=2))
    main = main_object(
        rng, shape=shape, colour=colour, cx=cx, cy=cy, radius=radius, angle=float(rng.uniform(0.0, 360.0))
    )
    others = [c for c in COLOURS if c != colour]
    distractors = tuple(
        _distractor_track(rng, 1, str(rng.choice(others))) for _ in range(int(rng.integers(0, 3)))
    )
    return StillSpec(
        main=main,
        distractors=distractors,
        background=_background(rng, size),
        noise_sigma=float(rng.uniform(1.0, 5.0)),
        noise_seed=int(rng.integers(2**63)),
    )


def _object_alpha(
    obj: ObjectTrack, t: int, size: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray | None]:
    """Anti-aliased coverage of the body and of the marker spot at frame t, in the object's box.

    Returns the (rows, cols) box and, over it, body and spot coverage [h, w] float32 in 0..1:
    drawing only the box keeps rendering cheap at any frame size.
    """
    a = np.deg2rad(obj.angle[t])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # clockwise on screen (y down)
    centre = np.array([obj.cx[t], obj.cy[t]]) * size  # pixels
    r = obj.radius[t] * size
    x0, y0 = (max(int(np.floor(c - r)) - 1, 0) for c in centre)
    x1, y1 = (min(int(np.ceil(c + r)) + 1, size) for c in centre)
    box_px = ((x1 - x0) * _SUPERSAMPLE, (y1 - y0) * _SUPERSAMPLE)

    def _draw(draw_shape: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        image = Image.new("L", box_px, 0)
        draw_shape(ImageDraw.Draw(image))
        return np.asarray(image.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), dtype=np.float32) / 255.0

    def _to_box(local: np.ndarray) -> np.ndarray:
        return (centre + r * local @ rot.T - (x0, y0)) * _SUPERSAMPLE  # [N, 2] supersampled box pixels

    outline = [tuple(v) for v in _to_box(SHAPES[obj.shape]).tolist()]
    body = _draw(lambda d: d.polygon(outline, fill=255))
    box = (slice(y0, y1), slice(x0, x1))
    if not obj.marker:
        return box, body, None
    mx, my = _to_box(np.array([_MARKER_AT]))[0]
    mr = _MARKER_RADIUS * r * _SUPERSAMPLE
    return box, body, _draw(lambda d: d.ellipse((mx - mr, my - mr, mx + mr, my + mr), fill=255))


def render_clip(spec: ClipSpec | StillSpec) -> np.ndarray:
    """Pixels of a clip (or a still, T = 1), [T, S, S, 3] uint8: background, distractors (behind), main
    object, noise."""
    frames, size = len(spec.main.cx), spec.background.shape[0]
    noise_rng = np.random.default_rng(spec.noise_seed)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        img = spec.background.copy()  # [S, S, 3]
        for obj in (*spec.distractors, spec.main):
            box, body, spot = _object_alpha(obj, t, size)
            rgb = np.asarray(obj.rgb, dtype=np.float32)
            region = img[box]  # a view: [h, w, 3]
            region += body[..., None] * (rgb - region)
            if spot is not None:
                region += spot[..., None] * (0.3 * rgb - region)
        img += noise_rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(spec.noise_sigma)
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def encode_mp4(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """H.264 / yuv420p mp4 whose bytes depend only on the pixels.

    Threaded x264 is not bit-reproducible, and neither is its macroblock-tree rate control here:
    its SIMD code reads memory whose content depends on the process's history, so the same
    pixels gave different bytes from one call to the next. One thread, `mbtree=0` and bitexact
    muxing (no library version in the file) make the bytes a function of the pixels alone.
    """
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        stream.codec_context.options = {"preset": "fast", "crf": "23", "x264-params": "mbtree=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _clip_rng(seed: int, split: str, class_index: int, k: int) -> np.random.Generator:
    """Each clip has its own stream, so changing one count does not change the other clips."""
    split_code = list(SPLIT_FILES).index(split)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_code, class_index, k)))


def _ssv2_labels_text(classes: Sequence[str]) -> str:
    """Byte-for-byte the layout of SSv2's labels json (CRLF, one space indent, ids as strings)."""
    rows = [f" {json.dumps(template_key(t))}:{json.dumps(str(i))}" for i, t in enumerate(classes)]
    return "{\r\n" + ",\r\n".join(rows) + "\r\n}\r\n"


def _ssv2_list_text(items: Sequence[dict]) -> str:
    """SSv2's train/validation layout: a json list, one compact object per CRLF line."""
    rows = [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in items]
    return "[\r\n" + ",\r\n".join(rows) + "\r\n]\r\n"


def _readme_text(counts: Mapping[str, Mapping[str, int]], params: Mapping[str, int]) -> str:
    what = {
        "right": "the object travels from left to right",
        "left": "the object travels from right to left",
        "up": "the object travels upwards",
        "down": "the object travels downwards",
        "clockwise": "the object turns clockwise (100-200 degrees) in place",
        "anticlockwise": "the object turns anticlockwise (100-200 degrees) in place",
        "grow": "the object grows 1.6-2x in place, as if approaching",
        "shrink": "the object shrinks 1.6-2x in place, as if receding",
    }
    lines = [
        "# EVA demo dataset (synthetic, generated by `stages/demo_data.py`)",
        "",
        "Do not edit: regenerated from `demo.yaml` (`demo.*`) by `dvc repro demo_data`.",
        "",
        "Each clip shows one coloured shape (" + ", ".join(SHAPES) + "; colours " + ", ".join(COLOURS) + ")",
        "with a dark spot that makes its rotation visible, over a muted gradient or textured background, with 0-2",
        "small distractor objects wandering at random and pixel noise. Start position, size and angle are random",
        "and shared between classes, so a single frame does not tell the class: only the change over time does.",
        "",
        "Generated with " + ", ".join(f"`{k}={v}`" for k, v in params.items()) + ".",
        "Layout: `videos/<id>.mp4` (H.264, yuv420p), `annotations/` in Something-Something V2's json format.",
        "",
        "| id | template | motion | train | val |",
        "|---|---|---|---|---|",
    ]
    for i, t in enumerate(DEMO_CLASSES):
        lines.append(f"| {i} | {t} | {what[CLASS_MOTIONS[t]]} | {counts['train'][t]} | {counts['val'][t]} |")
    return "\n".join(lines) + "\n"


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a finished directory in under its final name; the old one is removed only afterwards."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    os.replace(final, old)  # onto an empty directory: allowed by rename(2)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def generate_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int,
    train_per_class: int,
    val_per_class: int,
    frames: int,
    size: int,
    fps: int,
) -> DemoSummary:
    """Write the demo dataset to `out_dir` (videos/, annotations/, README.md), replacing it atomically.

    Same arguments give the same bytes in every file (the mp4s included). The dataset is built in
    a temporary directory beside `out_dir` and renamed into place only when complete.
    """
    DemoConfig(
        seed=seed,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        frames=frames,
        size=size,
        fps=fps,
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    per_class = {"train": train_per_class, "val": val_per_class}
    jobs = [
        (split, c, k) for split, n in per_class.items() for c in range(len(DEMO_CLASSES)) for k in range(n)
    ]
    # SSv2-like numeric ids that do not reveal class or split order.
    ids = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(99,))).permutation(len(jobs)) + 1

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (tmp / "videos").mkdir()
        (tmp / "annotations").mkdir()
        entries: dict[str, list[tuple[int, dict]]] = {split: [] for split in per_class}
        total_bytes = 0
        for (split, c, k), vid in progress(list(zip(jobs, ids.tolist(), strict=True)), desc="demo videos"):
            spec = sample_clip(_clip_rng(seed, split, c, k), DEMO_CLASSES[c], frames=frames, size=size)
            path = tmp / "videos" / f"{vid}.mp4"
            encode_mp4(path, render_clip(spec), fps)
            total_bytes += path.stat().st_size
            entry = {
                "id": str(vid),
                "label": spec.label,
                "template": spec.template,
                "placeholders": [spec.placeholder],
            }
            entries[split].append((vid, entry))

        (tmp / "annotations" / LABELS_FILE).write_text(_ssv2_labels_text(DEMO_CLASSES), encoding="utf-8")
        for split, rows in entries.items():
            ordered = [entry for _, entry in sorted(rows, key=lambda row: row[0])]
            (tmp / "annotations" / SPLIT_FILES[split]).write_text(_ssv2_list_text(ordered), encoding="utf-8")
        counts = {split: dict.fromkeys(DEMO_CLASSES, n) for split, n in per_class.items()}
        params = {"seed": seed, "train_per_class": train_per_class, "val_per_class": val_per_class}
        params |= {"frames": frames, "size": size, "fps": fps}
        (tmp / "README.md").write_text(_readme_text(counts, params), encoding="utf-8")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoSummary(
        out_dir=out_dir,
        classes=DEMO_CLASSES,
        counts=counts,
        num_videos=len(jobs),
        total_bytes=total_bytes,
    )
