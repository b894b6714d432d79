"""The small interface every backbone family offers the methods: embed, block parts, extra tokens, readout.

A method (adapters, prompts, attribute tokens, AdaptFormer, LoRA) is written once against these
tensor functions and runs on every backbone that implements them: `OpenClipBackbone`
(`eva.models.clip_backbone`, per-frame tokens `[B*T, 1+N, D]`) and `VideoMAEBackbone`
(`eva.models.videomae`, space-time tokens `[B, N, D]`). The token layout is the backbone's own
business; methods only pass tokens between these functions.

All block parts are frozen and residual-free: `frozen_block(i, x)` is
`x + attention(i, ln_1(i, x))` then `x + mlp(i, ln_2(i, x))`. `temporal_attention` is what AIM's
temporal pass runs: attention across the frames of each token position on a frame-level ViT, the
joint space-time attention again on VideoMAE (the EVA authors' `AIMBlock`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from eva.models.lora import AttentionLoRA

# `model.readout`: proj, the backbone's own output (CLIP: `ln_post(CLS) @ proj`); width, the feature at the
# transformer's width (CLIP: `ln_post(CLS)`, AIM). VideoMAE's token mean is at the width either way.
READOUTS = ("proj", "width")
# `model.backbone.final_norm`: keep the checkpoint's final LayerNorm, or identity (APT / VideoMAE fine-tuning)
FINAL_NORMS = ("keep", "identity")


class BlockBackbone(Protocol):
    width: int  # D
    num_layers: int  # L
    num_heads: int  # attention heads per layer
    frames: int  # T the backbone takes
    image_size: int
    feature_dim: int  # width of `features`
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_area: int  # pixels per token and channel (VPT's prompt initialisation)
    rows_per_video: int  # token rows per video (T on a frame-level ViT, 1 on VideoMAE): drop-path draws
    time_embedding: bool  # adapters that model time add a learnable time embedding (frame-level ViTs)
    # where `time_embedding`: the RMS of the backbone's position embedding, the unit of `model.time_embedding_init`
    position_rms: float
    head_norm: bool  # the classifier puts a tunable LayerNorm (`fc_norm`) before its head

    @property
    def dtype(self) -> torch.dtype: ...

    # [B, T, 3, H, W] -> tokens; `time_embedding` [T, D] only where `time_embedding` is true
    def embed(self, video: torch.Tensor, time_embedding: torch.Tensor | None = None) -> torch.Tensor: ...

    def ln_1(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    # `num_extra` extra tokens in x are read through `token_gate` ([heads] or [heads, num_extra]) when given (eva.models.tokens)
    def attention(
        self,
        i: int,
        x: torch.Tensor,
        lora: AttentionLoRA | None = None,
        num_extra: int = 0,
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def temporal_attention(
        self,
        i: int,
        h: torch.Tensor,
        num_extra: int,
        post: Callable[[torch.Tensor], torch.Tensor],
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def ln_2(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def frozen_block(self, i: int, x: torch.Tensor) -> torch.Tensor: ...

    def insert_tokens(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor: ...

    def drop_tokens(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor: ...

    def features(self, x: torch.Tensor) -> torch.Tensor: ...  # tokens -> [B, F, D_out] (F frames or 1)

    # `model.readout` and `model.backbone.final_norm` (READOUTS, FINAL_NORMS): set `features` and
    # `feature_dim` once, before the classifier is built on the backbone; an unsupported value names its key
    def configure_readout(self, readout: str, final_norm: str) -> None: ...


def lora_block(backbone: BlockBackbone, i: int, x: torch.Tensor, lora: AttentionLoRA) -> torch.Tensor:
    """Layer i with LoRA deltas on its attention projections; the frozen block when they are zero."""
    x = x + backbone.attention(i, backbone.ln_1(i, x), lora)
    return x + backbone.mlp(i, backbone.ln_2(i, x))
