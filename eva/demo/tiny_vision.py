"""Random-weight OWLv2 detectors and CLIPSeg mask models, written as `save_pretrained` folders.

For the tests (tiny) and the real-size benchmark (the published models' sizes); the outputs of such
a model are meaningless. Their processors need a CLIP tokenizer, whose real vocabulary cannot be
downloaded here: `clip_tokenizer` builds a byte-level BPE one offline (the 512 byte tokens, as
words' last or inner pieces, then filler up to `vocab_size`, then the two special tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from eva.demo.tiny import mark_random_weights


def clip_tokenizer(vocab_size: int = 514, model_max_length: int = 16) -> Any:
    """A CLIP tokenizer without merges: every byte is a token; `<|startoftext|>` and `<|endoftext|>`
    are the last two ids (as in CLIP's 49408), `!` (id 0 here too) pads, as OWL expects."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += [f"filler{i}</w>" for i in range(vocab_size - 2 - len(tokens))]
    vocab = {t: i for i, t in enumerate([*tokens, "<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=model_max_length)


def _text_config(tokenizer: Any, **sizes: Any) -> dict[str, Any]:
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    return {**sizes, **ids}


TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 32}  # fmt: skip
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 64, "patch_size": 16}  # fmt: skip


def _save_random(folder: Path, model_class: Any, config: Any, processor: Any, seed: int) -> Path:
    """A seeded random `model_class(config)` and its processor as one `save_pretrained` folder."""
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    mark_random_weights(folder)
    return folder


def save_random_owlv2(folder: str | Path, *, real_size: bool = False, seed: int = 0) -> Path:
    """`Owlv2ForObjectDetection` + `Owlv2Processor`: tiny (64 px, 2 layers of width 32), or the size of
    google/owlv2-base-patch16-ensemble (ViT-B/16 at 960 px, 12 + 12 layers, CLIP's 49408 tokens)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder = Path(folder)
    tokenizer = clip_tokenizer(49408 if real_size else 514, model_max_length=16 if real_size else 32)
    if real_size:
        text, vision = _text_config(tokenizer), {"image_size": 960, "patch_size": 16}
    else:
        text, vision = _text_config(tokenizer, **TINY_TEXT), TINY_VISION
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=512 if real_size else 32)
    side = vision["image_size"]
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": side, "width": side}), tokenizer=tokenizer
    )
    return _save_random(folder, Owlv2ForObjectDetection, config, processor, seed)


def save_random_clipseg(folder: str | Path, *, real_size: bool = False, seed: int = 0) -> Path:
    """`CLIPSegForImageSegmentation` + `CLIPSegProcessor`: tiny, or the size of CIDAS/clipseg-rd64-refined
    (CLIP ViT-B/16 at 352 px, decoder width 64 reading layers 3, 6, 9)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    folder = Path(folder)
    tokenizer = clip_tokenizer(49408 if real_size else 514, model_max_length=77 if real_size else 32)
    if real_size:
        config = CLIPSegConfig(
            text_config=_text_config(tokenizer),
            vision_config={"image_size": 352, "patch_size": 16},
            reduce_dim=64,
            extract_layers=[3, 6, 9],
            use_complex_transposed_convolution=True,
        )
    else:
        config = CLIPSegConfig(
            text_config=_text_config(tokenizer, **TINY_TEXT),
            vision_config=TINY_VISION,
            projection_dim=32,
            reduce_dim=16,
            extract_layers=[0, 1],
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )
    side = config.vision_config.image_size
    processor = CLIPSegProcessor(
        image_processor=ViTImageProcessor(size={"height": side, "width": side}), tokenizer=tokenizer
    )
    return _save_random(folder, CLIPSegForImageSegmentation, config, processor, seed)
