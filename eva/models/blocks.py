"""AIM-style adaptation of a frozen open_clip `ResidualAttentionBlock` (Fig. 1e of AIM / EVA).

The adapters are held apart from the frozen block (which stays registered once, inside the
backbone) and the block is passed to `BlockAdapters.forward`. Per layer:

    x = x + T(attn(G(ln_1(x_t))))                 temporal: over the T frames of each token position
    x = x + ls_1(S(attn(ln_1(x))))                spatial: over the tokens of each frame
    x = x + ls_2(mlp(ln_2(x))) + s * J(ln_2(x))   joint adapter parallel to the MLP

with the frozen `ln_1`, `attn`, `ls_1`, `ln_2`, `mlp`, `ls_2`. G (gate, AIM's "T-Adapter in") and
S are skip adapters, T and J are not; all up-projections start at zero, so an adapted block
starts as exactly the frozen block. Only CLS and patch tokens take part in temporal attention:
the extra tokens after CLS are per video, identical in every frame, so attending over time would
only mix a token with copies of itself; their temporal update is zero.
"""

from __future__ import annotations

import torch
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from eva.models.adapters import Adapter


def attend(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention over the middle axis of a batch-first `[S, L, D]`, whatever the module's layout."""
    if attn.batch_first:
        return attn(x, x, x, need_weights=False)[0]
    xl = x.transpose(0, 1)  # [L, S, D]
    return attn(xl, xl, xl, need_weights=False)[0].transpose(0, 1)  # [S, L, D]


def run_frozen_block(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The unmodified block on a batch-first `[S, L, D]` (open_clip may run its stack sequence-first)."""
    if block.attn.batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)  # [S, L, D]


class BlockAdapters(nn.Module):
    """The four adapters of one layer and the adapted forward through that layer's frozen block."""

    def __init__(self, width: int, ratio: float, scale: float) -> None:
        super().__init__()
        self.gate = Adapter(width, ratio, skip=True)
        self.temporal = Adapter(width, ratio, skip=False)
        self.spatial = Adapter(width, ratio, skip=True)
        self.joint = Adapter(width, ratio, skip=False)
        self.scale = scale

    def forward(
        self, block: ResidualAttentionBlock, x: torch.Tensor, *, frames: int, num_extra: int
    ) -> torch.Tensor:
        """`x`: `[B*T, 1+k+N, D]` (rows ordered (b t), k = `num_extra` tokens after CLS) -> same shape."""
        k = num_extra
        frame_tokens = torch.cat([x[:, :1], x[:, 1 + k :]], dim=1)  # [B*T, 1+N, D]
        n = frame_tokens.shape[1]
        xt = rearrange(frame_tokens, "(b t) n d -> (b n) t d", t=frames)  # [B*(1+N), T, D]
        xt = self.temporal(attend(block.attn, self.gate(block.ln_1(xt))))  # [B*(1+N), T, D]
        xt = rearrange(xt, "(b n) t d -> (b t) n d", n=n)  # [B*T, 1+N, D]
        x = torch.cat(
            [x[:, :1] + xt[:, :1], x[:, 1 : 1 + k], x[:, 1 + k :] + xt[:, 1:]], dim=1
        )  # [B*T, 1+k+N, D]

        x = x + block.ls_1(self.spatial(attend(block.attn, block.ln_1(x))))
        xn = block.ln_2(x)
        return x + block.ls_2(block.mlp(xn)) + self.scale * self.joint(xn)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
