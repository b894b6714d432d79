"""Bottleneck adapter (AIM): D -> D*ratio -> D with GELU, up-projection zero-initialised.

The zero up-projection is what makes a freshly adapted backbone compute exactly the frozen
backbone: a non-skip adapter outputs 0, a skip adapter is the identity, until training moves it.
The down-projection starts as PyTorch's `nn.Linear` does (`model.adapter.init: default`) or as
AIM's `init_weights` leaves it (`aim`: truncated normal, std 0.02, zero bias; vit_clip.py).
"""

from __future__ import annotations

import torch
from torch import nn

from eva.config import invalid

ADAPTER_INITS = ("default", "aim")  # `model.adapter.init`


def adapter_hidden(width: int, ratio: float) -> int:
    """Bottleneck width for a `width`-wide adapter (`model.adapter.ratio`); at least 1."""
    if ratio <= 0:
        raise invalid("model.adapter.ratio", "a number > 0", ratio)
    return max(1, int(width * ratio))


class Adapter(nn.Module):
    """`x + up(gelu(down(x)))` when `skip`, else `up(gelu(down(x)))`."""

    def __init__(self, width: int, ratio: float, *, skip: bool, init: str = "default") -> None:
        super().__init__()
        if init not in ADAPTER_INITS:
            raise invalid("model.adapter.init", f"one of {', '.join(ADAPTER_INITS)}", init)
        hidden = adapter_hidden(width, ratio)
        self.skip = skip
        self.down = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, width)
        if init == "aim":  # AIM applies timm's trunc_normal_(std=.02) and a zero bias to every Linear
            nn.init.trunc_normal_(self.down.weight, std=0.02)
            nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x)))
        return x + y if self.skip else y

    def extra_repr(self) -> str:
        return f"skip={self.skip}"
