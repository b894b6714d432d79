"""Tiny models in the libraries' own on-disk formats, and the builders the demo's models start from.

The `save_tiny_*` writers make random-initialised stand-ins for unit tests: their outputs are
meaningless (`mark_random_weights` tags their folders so galleries and reports can say so). The demo's
real models are not these: the `pretrain` stage (`eva.demo.pretrain`) trains a CLIP and a captioner of these
shapes on the demo's synthetic stills, and they know those shapes and nothing else. Both kinds are
written so that the very same loading code (`eva.weights_io`, the transformers Auto classes) that
reads real checkpoints reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from eva.weights_io import LOCAL_DIR, write_open_clip_folder


@dataclass(frozen=True)
class TinyClipSpec:
    embed_dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 4
    text_width: int = 64
    text_layers: int = 3
    heads: int = 4
    context_length: int = 32
    pos_embed: str = "learnable"  # open_clip's `pos_embed_type`: learnable | sin_cos_2d (fixed)

    def model_cfg(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": self.vision_width // self.heads,
                "pos_embed_type": self.pos_embed,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.heads,
                "layers": self.text_layers,
            },
        }


def open_clip_folder_config(spec: TinyClipSpec) -> dict:
    """`open_clip_config.json` contents for `spec`: what `create_model('local-dir:...')` reads."""
    return {
        "model_cfg": spec.model_cfg(),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }


def build_tiny_open_clip(spec: TinyClipSpec = TinyClipSpec(), seed: int = 0) -> open_clip.CLIP:
    """A randomly initialised open_clip CLIP of `spec` (open_clip's own initialisation)."""
    torch.manual_seed(seed)
    return open_clip.CLIP(**spec.model_cfg())


def save_tiny_open_clip(folder: str | Path, spec: TinyClipSpec = TinyClipSpec(), seed: int = 0) -> str:
    """A random tiny CLIP in open_clip's local-dir format; return the `local-dir:` model name."""
    return write_open_clip_folder(folder, build_tiny_open_clip(spec, seed), open_clip_folder_config(spec))


# Marker file written next to every demo model, so reports can say their outputs are meaningless.
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"

# Words a caption needs besides object nouns; the demo captioner's vocabulary is these + the objects.
_CAPTION_WORDS_TEXT = (
    "a an the this that some two three several many one of in on at with by near next to under over "
    "behind front inside outside top side and is are was being has have holding riding playing "
    "standing sitting walking running jumping throwing catching swimming cutting eating drinking "
    "looking wearing using moving turning pushing pulling lifting opening closing falling dancing "
    "small large big little red blue green yellow white black brown young old man woman people "
    "group room kitchen street park outdoor indoor close up view picture image"
)
CAPTION_WORDS = tuple(_CAPTION_WORDS_TEXT.split())

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")


def mark_random_weights(folder: str | Path) -> None:
    """Tag a folder of demo weights; `is_random_weights` lets galleries and reports warn about it."""
    (Path(folder) / RANDOM_WEIGHTS_MARKER).write_text(
        "Random-initialised weights written by the EVA demo. Their outputs are meaningless.\n"
    )


def is_random_weights(source: str) -> bool:
    """True when a model source (`local-dir:` name, folder or file) is one of the demo's random models."""
    path = Path(source.removeprefix(LOCAL_DIR))
    folder = path if path.is_dir() else path.parent
    return (folder / RANDOM_WEIGHTS_MARKER).is_file()


# Written by the `pretrain` stage next to the demo's pretrained models, with their held-out scores.
DEMO_PRETRAINED_MARKER = "DEMO_PRETRAINED.json"


def demo_pretrained_scores(source: str) -> dict | None:
    """Held-out scores of a model the demo's `pretrain` stage wrote; None for any other model source."""
    path = Path(source.removeprefix(LOCAL_DIR))
    marker = (path if path.is_dir() else path.parent) / DEMO_PRETRAINED_MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None


@dataclass(frozen=True)
class TinyCaptionerSpec:
    image_size: int = 64
    patch_size: int = 16
    width: int = 64
    layers: int = 2
    heads: int = 2
    max_positions: int = 64


def build_tiny_captioner(
    folder: str | Path, words: list[str], spec: TinyCaptionerSpec = TinyCaptionerSpec(), seed: int = 0
):
    """A random BLIP captioner + processor for `spec`; the processor's vocabulary file is written to `folder`.

    The tokenizer is a BERT WordPiece over the words of `words` plus the special tokens (no subword
    pieces: every caption word is one token). Returns `(model, processor)`, neither saved yet.
    """
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = sorted({w for phrase in words for w in phrase.lower().split()} - set(_SPECIAL_TOKENS))
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join([*_SPECIAL_TOKENS, *vocab]) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file), bos_token="[DEC]", model_max_length=spec.max_positions)
    image_processor = BlipImageProcessor(size={"height": spec.image_size, "width": spec.image_size})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        vision_config={
            "hidden_size": spec.width,
            "intermediate_size": 2 * spec.width,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "projection_dim": spec.width,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.width,
            "encoder_hidden_size": spec.width,
            "intermediate_size": 2 * spec.width,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "max_position_embeddings": spec.max_positions,
            "projection_dim": spec.width,
            "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        projection_dim=spec.width,
    )
    torch.manual_seed(seed)
    return BlipForConditionalGeneration(config), processor


def save_tiny_captioner(
    folder: str | Path, words: list[str], spec: TinyCaptionerSpec = TinyCaptionerSpec(), seed: int = 0
) -> Path:
    """Write a random BLIP captioner + processor that the transformers Auto classes load like a hub one.

    The vocabulary is `words` (object nouns) plus `CAPTION_WORDS`. Special tokens are masked out of
    the output bias and the decoder's cross-attention is given large random weights, so the
    meaningless captions are at least non-empty and differ between images.
    """
    folder = Path(folder)
    model, processor = build_tiny_captioner(folder, [*words, *CAPTION_WORDS], spec, seed)
    model.eval()
    special_ids = processor.tokenizer.convert_tokens_to_ids(list(_SPECIAL_TOKENS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[special_ids] = -1e4
        for name, weight in model.text_decoder.named_parameters():
            if "crossattention" in name and weight.ndim == 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    mark_random_weights(folder)
    return folder
