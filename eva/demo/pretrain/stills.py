"""Captioned stills for pretraining the demo's models: scenes from the demo renderer, words from their parameters.

CLIP and BLIP learn from (image, caption) pairs; here the pairs are made on the fly. A still is the
demo renderer's main object (shape, colour, size, position, angle of its marker spot) plus
distractors, a background and noise, and its caption is written from those parameters alone. No
action class exists for a still, so none can reach a caption.

Contrastive batches are built from small groups of stills that share everything but one factor
(shape, position, pointing direction, size or colour), so a caption can only be matched to its
image by that factor. Without such hard negatives a tiny CLIP learns colour and position (which
alone tell most stills of a random batch apart) and stays near chance on shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from eva.demo.data import (
    COLOURS,
    SHAPES,
    StillSpec,
    main_object,
    render_clip,
    sample_still,
    valid_centre_range,
)

SIZE_WORDS = ("small", "medium", "large")
_SIZE_EDGES = (0.13, 0.19)  # radius (frame units) between small | medium | large
ROW_WORDS = ("top", "upper", "lower", "bottom")
COLUMN_WORDS = ("far left", "left", "right", "far right")
# Where the marker spot points (angle 0 = right, clockwise on screen), in 45-degree bins.
DIRECTION_WORDS = ("right", "lower right", "down", "lower left", "left", "upper left", "up", "upper right")
FACTORS = ("shape", "position", "direction", "size", "colour")


@dataclass(frozen=True)
class StillWords:
    """The caption-relevant facts of a still, as words."""

    shape: str
    colour: str
    size: str
    row: str
    column: str
    direction: str
    distractors: tuple[tuple[str, str], ...]  # (colour, shape) of each small distractor

    @property
    def position(self) -> str:
        return f"{self.row} {self.column}"

    def factor(self, name: str) -> str:
        """The words of one factor (`FACTORS`), used to keep a group's variants distinct."""
        return self.position if name == "position" else getattr(self, name)


def still_words(spec: StillSpec) -> StillWords:
    main = spec.main
    radius, cx, cy, angle = (float(v[0]) for v in (main.radius, main.cx, main.cy, main.angle))
    return StillWords(
        shape=main.shape,
        colour=main.colour,
        size=SIZE_WORDS[int(np.searchsorted(_SIZE_EDGES, radius))],
        row=ROW_WORDS[min(int(cy * len(ROW_WORDS)), len(ROW_WORDS) - 1)],
        column=COLUMN_WORDS[min(int(cx * len(COLUMN_WORDS)), len(COLUMN_WORDS) - 1)],
        direction=DIRECTION_WORDS[int(np.floor(angle % 360.0 / 45.0 + 0.5)) % len(DIRECTION_WORDS)],
        distractors=tuple((d.colour, d.shape) for d in spec.distractors),
    )


def caption_text(words: StillWords) -> str:
    """The canonical caption (what the captioner learns to say): object, place, pointing direction."""
    return f"a {words.size} {words.colour} {words.shape} at the {words.position} pointing {words.direction}"


def caption_vocabulary() -> list[str]:
    """Every word a canonical caption can contain (the demo captioner's WordPiece vocabulary)."""
    parts = [
        *SIZE_WORDS,
        *COLOURS,
        *SHAPES,
        *ROW_WORDS,
        *COLUMN_WORDS,
        *DIRECTION_WORDS,
        "a",
        "at the pointing",
    ]
    return sorted({w for part in parts for w in part.split()})


def place_caption(words: StillWords) -> str:
    """A caption that says only where the object is: matching it takes the object's place alone."""
    return f"something at the {words.position}"


def contrastive_caption(
    words: StillWords, rng: np.random.Generator, keep: str | None = None, place_share: float = 0.0
) -> str:
    """A varied caption for CLIP: colour and shape always, other facts sometimes, `keep`'s factor always.

    Some captions are the zero-shot label prompt itself, so the text tower knows that phrasing; a
    `place_share` of them are `place_caption`s instead.
    """
    if place_share and rng.uniform() < place_share:
        return place_caption(words)
    roll = rng.uniform()
    if roll < 0.1 and keep in (None, "shape"):
        return f"This is a photo of a {words.shape}."
    if roll < 0.2 and keep in (None, "shape", "colour"):
        return f"This is a photo of a {words.colour} {words.shape}."
    size = words.size + " " if keep == "size" or rng.uniform() < 0.7 else ""
    text = f"a {size}{words.colour} {words.shape}"
    if keep == "position" or rng.uniform() < 0.7:
        text += f" at the {words.position}"
    if keep == "direction" or rng.uniform() < 0.7:
        text += f" pointing {words.direction}"
    if words.distractors and rng.uniform() < 0.5:
        text += " with " + " and ".join(f"a small {c} {s}" for c, s in words.distractors)
    return text


def _vary(spec: StillSpec, factor: str, rng: np.random.Generator) -> StillSpec:
    """`spec` with one factor of its main object redrawn (the rest, background included, kept)."""
    m = spec.main
    values = {
        "shape": m.shape,
        "colour": m.colour,
        "cx": float(m.cx[0]),
        "cy": float(m.cy[0]),
        "radius": float(m.radius[0]),
        "angle": float(m.angle[0]),
    }
    if factor == "shape":
        values["shape"] = str(rng.choice(list(SHAPES)))
    elif factor == "colour":
        taken = {d.colour for d in spec.distractors}
        values["colour"] = str(rng.choice([c for c in COLOURS if c not in taken]))
    elif factor == "direction":
        values["angle"] = float(rng.uniform(0.0, 360.0))
    elif factor == "size":
        values["radius"] = float(np.exp(rng.uniform(np.log(0.09), np.log(0.28))))
    elif factor != "position":
        raise ValueError(f"unknown still factor {factor!r}; expected one of {FACTORS}")
    lo, hi = valid_centre_range(values["radius"])
    if factor == "position":
        values["cx"], values["cy"] = (float(v) for v in rng.uniform(lo, hi, size=2))
    else:  # a bigger object may need to move in a little to stay inside the frame
        values["cx"], values["cy"] = (float(np.clip(values[k], lo, hi)) for k in ("cx", "cy"))
    return dataclasses.replace(
        spec,
        main=main_object(rng, **values),
        noise_seed=int(rng.integers(2**63)),
    )


def sample_group(
    rng: np.random.Generator, size: int, group: int, factor_weights: Sequence[float]
) -> tuple[str, list[StillSpec]]:
    """`group` stills equal but for one factor, each with a different caption word for it.

    Returns the varied factor and the stills; for a factor with fewer values than `group` (size has
    three words) the group is as large as the factor allows.
    """
    factor = str(rng.choice(FACTORS, p=np.asarray(factor_weights) / np.sum(factor_weights)))
    base = sample_still(rng, size=size)
    stills, seen = [base], {still_words(base).factor(factor)}
    for _ in range(20 * group):
        if len(stills) == group:
            break
        candidate = _vary(base, factor, rng)
        word = still_words(candidate).factor(factor)
        if word not in seen:
            seen.add(word)
            stills.append(candidate)
    return factor, stills


@dataclass(frozen=True)
class StillBatch:
    images: torch.Tensor  # uint8 [B, 3, S, S]
    words: list[StillWords]
    captions: list[str]  # contrastive captions (CLIP); the captioner uses `caption_text(words)`


def render_still(spec: StillSpec) -> np.ndarray:
    return render_clip(spec)[0]  # [S, S, 3] uint8


class StillBatches(IterableDataset):
    """An endless, seeded stream of grouped still batches; batch i depends only on (seed, i).

    With DataLoader workers, worker w of n renders batches w, w+n, ...; the loader interleaves
    them back in order, so the stream is the same for any worker count.
    """

    def __init__(
        self,
        *,
        seed: int,
        batch_size: int,
        size: int,
        group: int,
        factor_weights: Sequence[float],
        steps: int,
        place_captions: float = 0.0,
    ) -> None:
        self.seed, self.batch_size, self.size, self.group = seed, batch_size, size, group
        self.factor_weights = tuple(factor_weights)
        self.steps = steps
        self.place_captions = place_captions

    def batch(self, index: int) -> StillBatch:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(index,)))
        specs: list[StillSpec] = []
        keep: list[str] = []
        while len(specs) < self.batch_size:
            factor, group = sample_group(rng, self.size, self.group, self.factor_weights)
            specs += group
            keep += [factor] * len(group)
        specs, keep = specs[: self.batch_size], keep[: self.batch_size]
        words = [still_words(s) for s in specs]
        images = np.stack([render_still(s) for s in specs])  # [B, S, S, 3]
        return StillBatch(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # [B, 3, S, S]
            words=words,
            captions=[
                contrastive_caption(w, rng, k, self.place_captions) for w, k in zip(words, keep, strict=True)
            ],
        )

    def __iter__(self) -> Iterator[StillBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(worker, self.steps, workers):
            yield self.batch(index)


def held_out_stills(seed: int, count: int, size: int) -> tuple[torch.Tensor, list[StillWords]]:
    """Independent random stills (no groups) from a seed stream the training batches never use."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31, 7)))
    specs = [sample_still(rng, size=size) for _ in range(count)]
    images = np.stack([render_still(s) for s in specs])  # [N, S, S, 3]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), [still_words(s) for s in specs]


def collate_batches(batch: StillBatch) -> StillBatch:
    """DataLoader `collate_fn` for already-batched items (batch_size=None)."""
    return batch
