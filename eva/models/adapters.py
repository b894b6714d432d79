"""Bottleneck adapter (AIM): D -> D*ratio -> D with GELU, up-projection zero-initialised.

The zero up-projection is what makes a freshly adapted backbone compute exactly the frozen
backbone: a non-skip adapter outputs 0, a skip adapter is the identity, until training moves it.
"""

from __future__ import annotations

import torch
from torch import nn

from eva.config import invalid


def adapter_hidden(width: int, ratio: float) -> int:
    """Bottleneck width for a `width`-wide adapter (`model.adapter.ratio`); at least 1."""
    if ratio <= 0:
        raise invalid("model.adapter.ratio", "a number > 0", ratio)
    return max(1, int(width * ratio))


class Adapter(nn.Module):
    """`x + up(gelu(down(x)))` when `skip`, else `up(gelu(down(x)))`."""

    def __init__(self, width: int, ratio: float, *, skip: bool) -> None:
        super().__init__()
        hidden = adapter_hidden(width, ratio)
        self.skip = skip
        self.down = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x)))
        return x + y if self.skip else y

    def extra_repr(self) -> str:
        return f"skip={self.skip}"
