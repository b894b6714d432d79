"""The small interface every backbone family offers the methods: embed, block parts, extra tokens, readout.

A method (adapters, prompts, attribute tokens, AdaptFormer, LoRA) is written once against these
tensor functions and runs on every backbone that implements them. `VideoMAEBackbone` implements
it; the open_clip ViT is to implement the same (its `attention` computed by
`eva.models.lora.attend_with_lora`, its `ls_1` / `ls_2` folded into `attention` / `mlp`).

All block parts are frozen and residual-free: `frozen_block(i, x)` is
`x + attention(i, ln_1(i, x))` then `x + mlp(i, ln_2(i, x))`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from eva.models.lora import AttentionLoRA


class BlockBackbone(Protocol):
    width: int  # D
    num_layers: int  # L
    frames: int  # T the backbone takes
    image_size: int
    feature_dim: int  # width of `readout`
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def embed(self, video: torch.Tensor) -> torch.Tensor: ...  # [B, T, 3, H, W] -> tokens

    def ln_1(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def attention(self, i: int, x: torch.Tensor, lora: AttentionLoRA | None = None) -> torch.Tensor: ...

    def ln_2(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def frozen_block(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def insert_tokens(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor: ...

    def drop_tokens(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor: ...

    def readout(self, x: torch.Tensor) -> torch.Tensor: ...


def lora_block(backbone: BlockBackbone, i: int, x: torch.Tensor, lora: AttentionLoRA) -> torch.Tensor:
    """Layer i with LoRA deltas on its attention projections; the frozen block when they are zero."""
    x = x + backbone.attention(i, backbone.ln_1(i, x), lora)
    return x + backbone.mlp(i, backbone.ln_2(i, x))
