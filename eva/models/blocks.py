"""AIM-style adaptation of a frozen backbone block (Fig. 1e of AIM / EVA), and open_clip attention.

The adapters are held apart from the frozen block (which stays registered once, inside the
backbone) and the backbone is passed to `BlockAdapters.forward`. Per layer:

    x = x + dp(T(attn_t(G(ln_1(x)))))              temporal: over the T frames of each token position
    x = x + S(attn(ln_1(x)))                       spatial: over the tokens of each frame
    x = x + mlp(ln_2(x)) + dp(s * J(ln_2(x)))      joint adapter parallel to the MLP

with the backbone's frozen `ln_1`, `attention` (attn; attn_t: `temporal_attention`), `ln_2`, `mlp`. G (gate, AIM's "T-Adapter in",
optional: `model.adapter.gate`) and S are skip adapters, T and J are not; all up-projections
start at zero, so an adapted block starts as exactly the frozen block. `dp` is drop-path
(stochastic depth) on the two branches AIM applies it to, identity in eval mode: per video
(`model.drop_path_mode: video`), or per token position across the whole batch as AIM's code does
(`aim`, see `DropPath`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from eva.models.adapters import Adapter
from eva.models.backbone import BlockBackbone
from eva.models.tokens import token_gated_attention


def check_attention(attn: nn.MultiheadAttention) -> str | None:
    """Why `attend` cannot reproduce `attn`, or None when it can."""
    if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
        return "attention with separate q/k/v projections"
    if attn.bias_k is not None or attn.add_zero_attn:
        return "attention with bias_k/bias_v or add_zero_attn"
    return None


def attend(
    attn: nn.MultiheadAttention,
    x: torch.Tensor,
    extra: slice = slice(0, 0),
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-attention with `attn`'s (frozen) weights over the middle axis of a batch-first `[S, L, D]`.

    The tokens at `extra` (of L) are read through `gate` (`eva.models.tokens.token_gated_attention`).

    Computed here rather than by calling `attn`: nn.MultiheadAttention hands a transposed, strided
    view to its input projection, and with frozen weights autograd then runs that projection as a
    broadcast bmm that made a CPU training step twice as slow. This also makes the result
    independent of the module's `batch_first`.
    """
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [S, L, 3D]
    q, k, v = rearrange(qkv, "s l (three h e) -> three s h l e", three=3, h=attn.num_heads)  # [S, h, L, D/h]
    out = token_gated_attention(q, k, v, extra, gate, dropout_p=attn.dropout if attn.training else 0.0)
    out = rearrange(out, "s h l e -> s l (h e)")  # [S, L, D]
    return attn.out_proj(out)


DROP_PATH_MODES = ("video", "aim")  # `model.drop_path_mode`


class DropPath(nn.Module):
    """Stochastic depth on a residual branch `[rows, L, D]`, kept branches scaled by 1/(1-p).

    `video` (default): rows are ordered (b t), `frames` rows per video; one draw per video is shared
    by its frames, so a dropped branch is dropped for the clip, as stochastic depth drops it for a
    sample. `aim`: one draw per token position l, shared by every row of the batch (all videos and
    frames), which is what AIM's code does: it applies timm's `DropPath` (one draw per index of dim
    0) to its sequence-first `[L, B*T, D]` tensors (vit_clip.py). Identity in evaluation either way.
    """

    def __init__(self, p: float, mode: str = "video") -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"`model.drop_path` must be in [0, 1); got {p}")
        if mode not in DROP_PATH_MODES:
            raise ValueError(
                f"`model.drop_path_mode` must be one of {', '.join(DROP_PATH_MODES)}; got {mode!r}"
            )
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        if self.mode == "aim":
            shape = (1, x.shape[1], *([1] * (x.ndim - 2)))  # [1, L, 1]: per token position
            return x * (torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep)
        videos = x.shape[0] // frames
        mask = torch.empty(videos, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep  # [B]
        return x * mask.repeat_interleave(frames).view(-1, *([1] * (x.ndim - 1)))  # [B*T, 1, 1]

    def extra_repr(self) -> str:
        return f"p={self.p}" if self.mode == "video" else f"p={self.p}, mode={self.mode}"


class BlockAdapters(nn.Module):
    """The AIM/EVA adapters of one layer and the adapted forward through that layer of any `BlockBackbone`.

    The backbone supplies the frozen parts; on open_clip the temporal pass attends across frames per
    token position, on VideoMAE it is the layer's joint attention again (the EVA authors' `AIMBlock`).
    """

    def __init__(
        self,
        width: int,
        ratio: float,
        scale: float,
        *,
        gate: bool = True,
        drop_path: float = 0.0,
        drop_path_mode: str = "video",
        init: str = "default",
    ) -> None:
        super().__init__()
        self.gate = Adapter(width, ratio, skip=True, init=init) if gate else None
        self.temporal = Adapter(width, ratio, skip=False, init=init)
        self.spatial = Adapter(width, ratio, skip=True, init=init)
        self.joint = Adapter(width, ratio, skip=False, init=init)
        self.scale = scale
        self.drop_path = DropPath(drop_path, drop_path_mode)

    def forward(
        self,
        backbone: BlockBackbone,
        i: int,
        x: torch.Tensor,
        num_extra: int = 0,
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`x`: layer i's input tokens (k = `num_extra` extra tokens included, read through
        `token_gate` when given) -> the same shape."""
        rows = backbone.rows_per_video
        h = backbone.ln_1(i, x)
        if self.gate is not None:
            h = self.gate(h)
        temporal = backbone.temporal_attention(i, h, num_extra, self.temporal, token_gate=token_gate)
        x = x + self.drop_path(temporal, rows)
        x = x + self.spatial(
            backbone.attention(i, backbone.ln_1(i, x), num_extra=num_extra, token_gate=token_gate)
        )
        xn = backbone.ln_2(i, x)
        return x + backbone.mlp(i, xn) + self.drop_path(self.scale * self.joint(xn), rows)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gate={self.gate is not None}"
