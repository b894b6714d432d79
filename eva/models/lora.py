"""LoRA on a frozen backbone's attention projections, held beside the backbone (not injected into it).

For a frozen projection `y = W x + b` LoRA adds a low-rank delta, `y + (alpha / r) * B(A(x))`, with
A `[r, D_in]` (Kaiming-uniform) and B `[D_out, r]` zero-initialised, so an adapted model starts as
exactly the frozen one. Here the delta is a module of its own that the attention code adds to the
frozen projection's OUTPUT: the frozen weights are never replaced, merged or wrapped, so the
backbone stays registered once and trainability follows from module identity, as for the adapters.

Both backbones call it the same way, `lora.add(name, x, y)` for name in q / k / v / out:
VideoMAE has separate q/k/v Linear layers (`VideoMAEBackbone.attention`), open_clip packs q/k/v in
one `[3D, D]` `in_proj_weight` (`attend_with_lora` splits the packed output into q, k, v first).

Why not `peft`: its LoRA (`inject_adapter_in_model` / `get_peft_model`) replaces each targeted
module in the frozen model with a `lora.Linear` wrapper (`setattr(parent, name, wrapper)`) and
decides trainability by the substring "lora_" in parameter names; the frozen model is mutated and
its state-dict keys change (`...query.base_layer.weight`). Its `nn.MultiheadAttention` support
(open_clip) works by merging the LoRA weights into `in_proj_weight` before the module's forward and
unmerging after, and only for in_proj and out_proj together. Our attention code calls `F.linear` on
the frozen weights directly (it must, see `eva.models.blocks.attend`), so a peft wrapper's forward
would never run. A delta module beside the backbone is ~40 lines and fits both backbones.

Parameters per targeted projection: r * (D_in + D_out) = 2 * D * r (no biases).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from eva.config import Rule, check, invalid

LORA_TARGETS = ("q", "k", "v", "out")
# `model.lora.targets`: the rule on ModelConfig's field, and this module's own guard
TARGETS_RULE = Rule(
    f"a non-empty list of distinct names from {list(LORA_TARGETS)}",
    lambda v: isinstance(v, list | tuple) and 0 < len(set(v)) == len(v) and all(t in LORA_TARGETS for t in v),
)


class LowRankDelta(nn.Module):
    """`(alpha / rank) * up(down(dropout(x)))`, `up` zero-initialised: 0 at init."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.up(self.down(self.dropout(x)))

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}"


class AttentionLoRA(nn.Module):
    """The LoRA deltas of one attention layer, for the projections named in `targets`."""

    def __init__(
        self,
        width: int,
        rank: int,
        alpha: float,
        targets: tuple[str, ...] = ("q", "v"),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise invalid("model.lora.rank", "an integer >= 1", rank)
        if alpha <= 0:
            raise invalid("model.lora.alpha", "a number > 0", alpha)
        check("model.lora.targets", list(targets), TARGETS_RULE)
        if not 0.0 <= dropout < 1.0:
            raise invalid("model.lora.dropout", "a number >= 0 and < 1", dropout)
        self.targets = tuple(targets)
        self.deltas = nn.ModuleDict(
            {name: LowRankDelta(width, width, rank, alpha, dropout) for name in self.targets}
        )

    def add(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y` (the frozen projection `name` applied to `x`) plus this layer's delta for it, if any."""
        if name not in self.deltas:
            return y
        return y + self.deltas[name](x).to(y.dtype)

    @staticmethod
    def count(width: int, rank: int, num_targets: int) -> int:
        """Tunable parameters of one layer: 2 * D * r per targeted projection."""
        return num_targets * 2 * width * rank


def attend_with_lora(
    attn: nn.MultiheadAttention, x: torch.Tensor, lora: AttentionLoRA | None
) -> torch.Tensor:
    """`eva.models.blocks.attend` (batch-first `[S, L, D]`, frozen packed weights) with LoRA deltas.

    The packed `[S, L, 3D]` projection is split into q, k, v so each gets its own delta; with
    `lora=None` this is `attend` itself.
    """
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [S, L, 3D]
    q, k, v = qkv.chunk(3, dim=-1)  # 3 x [S, L, D]
    if lora is not None:
        q, k, v = lora.add("q", x, q), lora.add("k", x, k), lora.add("v", x, v)
    q, k, v = (rearrange(t, "s l (h e) -> s h l e", h=attn.num_heads) for t in (q, k, v))  # [S, h, L, D/h]
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0)
    out = rearrange(out, "s h l e -> s l (h e)")  # [S, L, D]
    y = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)  # [S, L, D]
    return lora.add("out", out, y) if lora is not None else y
