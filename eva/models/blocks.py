"""AIM-style adaptation of a frozen open_clip `ResidualAttentionBlock` (Fig. 1e of AIM / EVA).

The adapters are held apart from the frozen block (which stays registered once, inside the
backbone) and the block is passed to `BlockAdapters.forward`. Per layer:

    x = x + dp(T(attn(G(ln_1(x_t)))))                 temporal: over the T frames of each token position
    x = x + ls_1(S(attn(ln_1(x))))                    spatial: over the tokens of each frame
    x = x + ls_2(mlp(ln_2(x))) + dp(s * J(ln_2(x)))   joint adapter parallel to the MLP

with the frozen `ln_1`, `attn`, `ls_1`, `ln_2`, `mlp`, `ls_2`. G (gate, AIM's "T-Adapter in",
optional: `model.adapter.gate`) and S are skip adapters, T and J are not; all up-projections
start at zero, so an adapted block starts as exactly the frozen block. `dp` is drop-path
(stochastic depth) on the two branches AIM applies it to, per video, identity in eval mode. Only CLS and patch tokens take part in temporal attention:
the extra tokens after CLS are per video, identical in every frame, so attending over time would
only mix a token with copies of itself; their temporal update is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from eva.models.adapters import Adapter


def check_attention(attn: nn.MultiheadAttention) -> str | None:
    """Why `attend` cannot reproduce `attn`, or None when it can."""
    if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
        return "attention with separate q/k/v projections"
    if attn.bias_k is not None or attn.add_zero_attn:
        return "attention with bias_k/bias_v or add_zero_attn"
    return None


def attend(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention with `attn`'s (frozen) weights over the middle axis of a batch-first `[S, L, D]`.

    Computed here rather than by calling `attn`: nn.MultiheadAttention hands a transposed, strided
    view to its input projection, and with frozen weights autograd then runs that projection as a
    broadcast bmm that made a CPU training step twice as slow. This also makes the result
    independent of the module's `batch_first`.
    """
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [S, L, 3D]
    q, k, v = rearrange(qkv, "s l (three h e) -> three s h l e", three=3, h=attn.num_heads)  # [S, h, L, D/h]
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0)
    out = rearrange(out, "s h l e -> s l (h e)")  # [S, L, D]
    return attn.out_proj(out)


def frozen_block_forward(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """`block`'s own computation (no adapters) on a batch-first `[S, L, D]`."""
    x = x + block.ls_1(attend(block.attn, block.ln_1(x)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drop it for a whole video with probability `p`.

    Rows of `[B*T, L, D]` are ordered (b t); one draw per video is shared by its T frames, so a
    dropped branch is dropped for the clip, as stochastic depth drops it for a sample. Kept
    branches are scaled by 1/(1-p) so the expectation matches evaluation, where this is identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"`model.drop_path` must be in [0, 1); got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        videos = x.shape[0] // frames
        mask = torch.empty(videos, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep  # [B]
        return x * mask.repeat_interleave(frames).view(-1, *([1] * (x.ndim - 1)))  # [B*T, 1, 1]

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BlockAdapters(nn.Module):
    """The adapters of one layer and the adapted forward through that layer's frozen block."""

    def __init__(self, width: int, ratio: float, scale: float, *, gate: bool, drop_path: float = 0.0) -> None:
        super().__init__()
        self.gate = Adapter(width, ratio, skip=True) if gate else None
        self.temporal = Adapter(width, ratio, skip=False)
        self.spatial = Adapter(width, ratio, skip=True)
        self.joint = Adapter(width, ratio, skip=False)
        self.scale = scale
        self.drop_path = DropPath(drop_path)

    def forward(
        self, block: ResidualAttentionBlock, x: torch.Tensor, *, frames: int, num_extra: int
    ) -> torch.Tensor:
        """`x`: `[B*T, 1+k+N, D]` (rows ordered (b t), k = `num_extra` tokens after CLS) -> same shape."""
        k = num_extra
        frame_tokens = torch.cat([x[:, :1], x[:, 1 + k :]], dim=1)  # [B*T, 1+N, D]
        n = frame_tokens.shape[1]
        xt = rearrange(frame_tokens, "(b t) n d -> (b n) t d", t=frames)  # [B*(1+N), T, D]
        xt = block.ln_1(xt)
        if self.gate is not None:
            xt = self.gate(xt)
        xt = self.temporal(attend(block.attn, xt))  # [B*(1+N), T, D]
        xt = rearrange(xt, "(b n) t d -> (b t) n d", n=n)  # [B*T, 1+N, D]
        xt = self.drop_path(xt, frames)
        x = torch.cat(
            [x[:, :1] + xt[:, :1], x[:, 1 : 1 + k], x[:, 1 + k :] + xt[:, 1:]], dim=1
        )  # [B*T, 1+k+N, D]

        x = x + block.ls_1(self.spatial(attend(block.attn, block.ln_1(x))))
        xn = block.ln_2(x)
        return x + block.ls_2(block.mlp(xn)) + self.drop_path(self.scale * self.joint(xn), frames)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gate={self.gate is not None}"
