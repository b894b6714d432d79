"""How good the pretrained demo models are, measured on held-out stills through the pipeline's own loaders.

The scores are computed by the classes the attributes stage uses (`ZeroShotLabeler` over the
encoder that `load_open_clip` returns, `Captioner`), on models read back from disk, so they say
what the attributes stage will get, not what the in-memory training objects could do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from eva.attributes.caption import Captioner
from eva.attributes.encode import HierarchicalEncoder
from eva.attributes.label import ZeroShotLabeler
from eva.demo.data import COLOURS, SHAPES
from eva.demo.pretrain.stills import StillWords
from eva.weights_io import load_open_clip


def zero_shot_shape_accuracy(
    clip_model: str, images: torch.Tensor, words: Sequence[StillWords], *, batch_size: int = 256
) -> dict[str, float]:
    """Top-1 of CLIP zero-shot over the shape names ("This is a photo of a {shape}."), and over colours."""
    bundle = load_open_clip(clip_model, param="attributes.clip")
    encoder = HierarchicalEncoder(bundle, torch.device("cpu"))
    shapes = ZeroShotLabeler(encoder, list(SHAPES))
    colours = ZeroShotLabeler(encoder, list(COLOURS))
    hits = {"shape": 0, "colour": 0}
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        features = encoder.encode_images(encoder.preprocess(list(chunk)))[:, -1]  # [b, D] == encode_image
        truth = words[start : start + batch_size]
        hits["shape"] += sum(
            t == w.shape for t, w in zip(shapes.classify(features).texts, truth, strict=True)
        )
        hits["colour"] += sum(
            t == w.colour for t, w in zip(colours.classify(features).texts, truth, strict=True)
        )
    return {f"zero_shot_{k}_top1": v / len(images) for k, v in hits.items()}


def _first(words: list[str], vocabulary: Sequence[str]) -> str | None:
    return next((w for w in words if w in vocabulary), None)


def caption_word_accuracy(captions: Sequence[str], words: Sequence[StillWords]) -> dict[str, float]:
    """Fraction of colour and shape words that are right: the first colour word and the first shape
    word of each caption against the still's main object (a missing word counts as wrong)."""
    colour_hits = shape_hits = 0
    for caption, truth in zip(captions, words, strict=True):
        tokens = re.findall(r"[a-z]+", caption.lower())
        colour_hits += _first(tokens, list(COLOURS)) == truth.colour
        shape_hits += _first(tokens, list(SHAPES)) == truth.shape
    n = max(len(captions), 1)
    return {
        "caption_colour_accuracy": colour_hits / n,
        "caption_shape_accuracy": shape_hits / n,
        "caption_word_accuracy": (colour_hits + shape_hits) / (2 * n),
    }


def captioner_accuracy(
    captioner: str,
    images: torch.Tensor,
    words: Sequence[StillWords],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
) -> tuple[dict[str, float], list[str]]:
    """Caption the held-out stills with the saved captioner (as the attributes stage does) and score them."""
    model = Captioner(captioner, param="attributes.captioner")
    captions: list[str] = []
    for start in range(0, len(images), batch_size):
        captions += model.generate(list(images[start : start + batch_size]), max_new_tokens)
    return caption_word_accuracy(captions, words), captions
