"""Tiny random-initialised stand-ins for real weights (demo and tests).

They are written in the libraries' own on-disk formats so that the very same loading code
(`eva.models.loading`) that reads real checkpoints reads them. Their outputs are meaningless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file


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

    def model_cfg(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": self.vision_width // self.heads,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.heads,
                "layers": self.text_layers,
            },
        }


def save_tiny_open_clip(folder: str | Path, spec: TinyClipSpec = TinyClipSpec(), seed: int = 0) -> str:
    """Write `open_clip_config.json` + `open_clip_model.safetensors`; return the `local-dir:` model name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": spec.model_cfg(),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config["model_cfg"])
    # Random weights with a few non-trivial statistics, so layers differ from one another.
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return f"local-dir:{folder}"
