"""AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck branch parallel to each frozen MLP.

    x' = x + attn(ln_1(x))
    x  = x' + mlp(ln_2(x')) + s * up(relu(down(x')))

Video settings of the reference code (ShoufaChen/AdaptFormer, `main_video.py`): bottleneck 64
(`--ffn_num`), scale s = 0.1 (`ffn_adapter_scalar`), ReLU, no LayerNorm of its own
(`ffn_adapter_layernorm_option="none"`), "lora" init (Kaiming-uniform down-projection, zero
up-projection and zero biases, so the branch outputs 0 and the block starts as the frozen one).

Input: the branch reads the post-attention residual x', NOT the MLP's normalised input. The
paper's Fig. 2b / Eq. 3 show LN(x'), but the authors answered that the code is correct and the
figure is wrong (ShoufaChen/AdaptFormer issues #9 and #10); the code produced the published
numbers. `adaptformer_block(..., normalised=True)` gives the figure's variant.

Parameters per layer: 2 * D * b + b + D (D = 768, b = 64: 99,136; 12 layers: 1,189,632).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eva.config import invalid
from eva.models.backbone import BlockBackbone

ADAPTFORMER_BOTTLENECK = 64
ADAPTFORMER_SCALE = 0.1


class AdaptFormerAdapter(nn.Module):
    """`s * up(dropout(relu(down(x))))`: the branch to add beside the MLP; 0 at init."""

    def __init__(
        self,
        width: int,
        bottleneck: int = ADAPTFORMER_BOTTLENECK,
        scale: float = ADAPTFORMER_SCALE,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if bottleneck < 1:
            raise invalid("model.adaptformer.bottleneck", "an integer >= 1", bottleneck)
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(bottleneck, width)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.dropout(self.act(self.down(x))))

    @staticmethod
    def count(width: int, bottleneck: int = ADAPTFORMER_BOTTLENECK) -> int:
        """Tunable parameters of one adapter: 2 * D * b + b + D."""
        return 2 * width * bottleneck + bottleneck + width

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def adaptformer_block(
    backbone: BlockBackbone,
    i: int,
    x: torch.Tensor,
    adapter: AdaptFormerAdapter,
    *,
    normalised: bool = False,
) -> torch.Tensor:
    """Layer i of `backbone` with `adapter` parallel to its MLP; `[B, S, D]` -> `[B, S, D]`.

    The adapter reads the residual x' (the released code); `normalised=True` feeds it `ln_2(x')`.
    """
    x = x + backbone.attention(i, backbone.ln_1(i, x))
    xn = backbone.ln_2(i, x)
    return x + backbone.mlp(i, xn) + adapter(xn if normalised else x)
