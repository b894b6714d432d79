"""Per-layer extra tokens: EVA attribute tokens and VPT deep prompts, inserted the same way.

At backbone layer i every frame's sequence is `[CLS, patches, E_i]` on open_clip (`[E_i, tokens]`
on VideoMAE); the k tokens E_i are per video (shared by its T frames), are dropped after the block,
and fresh ones enter layer i+1.
A provider only says what E_i is (`forward(layer, batch_size, attributes) -> [B, k, D]`);
`insert_tokens` / `drop_tokens` are the one insertion mechanism both providers go through.

How the block's attention reads the tokens is the provider's `gate(layer)`. Without a gate (VPT,
and EVA with `model.eva.attribute_attention: joint`, as in the paper) they join the softmax of the
frame's own tokens. With one they get a softmax of their own whose output is scaled by tanh(g),
g zero-initialised: LLaMA-Adapter's zero-init attention (Zhang et al. 2023). `gated` (the default
for EVA) has one g per layer and head, as LLaMA-Adapter; `gated_per_token` one per layer, head and
token, which scales each token's value, so that each attribute opens on its own. Either way a fresh
EVA model computes exactly the frozen backbone, as a fresh adapter does, instead of having each
token draw attention from the start (on the demo's backbone, patches gave 43-49% of their attention
to the six stage-2 tokens at initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from eva.config import invalid


def insert_tokens(x: torch.Tensor, tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """`[B*T, 1+N, D]` frame tokens + `[B, k, D]` video tokens -> `[B*T, 1+N+k, D]` (appended).

    Appended rather than put after CLS: attention is permutation-equivariant and the blocks add no
    position embedding, so where the tokens sit changes nothing but the order of the softmax's sum
    (docs/performance.md); at the end, dropping them is a view and their keys / the frame's own keys
    are views too, where after CLS each was a copy of the layer's activations.
    """
    per_frame = tokens.to(x.dtype).repeat_interleave(frames, dim=0)  # [B*T, k, D], rows ordered (b t)
    return torch.cat([x, per_frame], dim=1)  # [B*T, 1+N+k, D]


def drop_tokens(x: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """`[B*T, 1+N+k, D]` -> `[B*T, 1+N, D]`: remove the k appended tokens (a view)."""
    if num_tokens == 0:
        return x
    return x[:, : x.shape[1] - num_tokens]  # [B*T, 1+N, D]


def own_keys(t: torch.Tensor, extra: slice) -> torch.Tensor:
    """`[S, h, L, e]` without the positions at `extra`: a view when they are at either end, else a copy."""
    if extra.start == 0:
        return t[:, :, extra.stop :]
    if extra.stop == t.shape[2]:
        return t[:, :, : extra.start]
    return torch.cat([t[:, :, : extra.start], t[:, :, extra.stop :]], dim=2)


def token_gated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    extra: slice,
    gate: torch.Tensor | None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention of `[S, h, L, e]` q/k/v whose keys at `extra` are the extra tokens.

    `gate` None: one softmax over all L keys (plain SDPA). Otherwise the frame's own keys and the
    extra tokens' keys are softmaxed apart and the tokens' part is added through the gate: `[h]`
    scales it by tanh(gate[h]) in head h; `[h, k]` (k = the extra tokens) scales token j's value by
    tanh(gate[h, j]) in head h (equal across tokens, that is the `[h]` gate). A zero gate gives
    exactly the attention without the tokens.
    """
    if gate is None or extra.start == extra.stop:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    heads, num_extra = q.shape[1], extra.stop - extra.start
    if tuple(gate.shape) not in ((heads,), (heads, num_extra)):
        raise ValueError(
            f"gate must be [heads] = [{heads}] or [heads, tokens] = [{heads}, {num_extra}]; got {list(gate.shape)}"
        )
    keys, values = own_keys(k, extra), own_keys(v, extra)  # [S, h, L-k, e]
    own = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout_p)  # [S, h, L, e]
    scale = torch.tanh(gate).to(q.dtype)
    if gate.ndim == 2:  # per head and token: on the values, before the tokens' softmax mixes them
        gated_values = v[:, :, extra] * scale[None, :, :, None]  # [S, h, k, e]
        return own + F.scaled_dot_product_attention(q, k[:, :, extra], gated_values, dropout_p=dropout_p)
    tokens = F.scaled_dot_product_attention(q, k[:, :, extra], v[:, :, extra], dropout_p=dropout_p)
    return own + scale.view(1, -1, 1, 1) * tokens  # [S, h, L, e]


def aligned_encoder_layer(layer: int, encoder_layers: int, backbone_layers: int) -> int:
    """Encoder layer whose depth matches backbone layer `layer` (0-based).

    round((i+1) * L_enc / L_bb) - 1 (half rounds up), clamped to [0, L_enc-1]: the last backbone
    layer reads the encoder's final output, shallow layers read shallow attribute features.
    """
    aligned = math.floor((layer + 1) * encoder_layers / backbone_layers + 0.5) - 1
    return min(max(aligned, 0), encoder_layers - 1)


ATTRIBUTE_ATTENTIONS = ("gated", "gated_per_token", "joint")


class LayerTokens(nn.Module):
    """A provider of k extra tokens per backbone layer, and of the attention gate (if any) they are read through."""

    num_tokens: int
    gates: nn.Parameter | None  # [L, heads] or [L, heads, num_tokens], zero-init, for `token_gated_attention`

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("gates", None)

    def forward(self, layer: int, batch_size: int, attributes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def gate(self, layer: int) -> torch.Tensor | None:
        """Layer `layer`'s gate (`[heads]` or `[heads, num_tokens]`), or None when the tokens join the block's softmax."""
        return None if self.gates is None else self.gates[layer]


class DeepPrompts(LayerTokens):
    """VPT-deep: `length` learnable tokens per layer, the same for every video.

    `dropout` > 0 (`model.vpt.dropout`) drops prompt elements in training, drawn per video (and
    shared by its frames), as VPT's `prompt_dropout` on the batch-expanded prompts (src/models/
    vit_prompt/vit.py; `MODEL.PROMPT.DROPOUT`, 0.0 by default, 0.1 in its demo runs).
    """

    def __init__(self, layers: int, length: int, width: int, patch_area: int, dropout: float = 0.0) -> None:
        super().__init__()
        if length < 1:
            raise invalid("model.vpt.length", "an integer >= 1 for model.method=vpt", length)
        if not 0.0 <= dropout < 1.0:
            raise invalid("model.vpt.dropout", "a number in 0..1 (1 excluded)", dropout)
        self.num_tokens = length
        self.tokens = nn.Parameter(torch.empty(layers, length, width))
        # VPT's initialisation: Xavier-uniform bound for a patch embedding of fan-in 3 * patch area.
        bound = math.sqrt(6.0 / float(3 * patch_area + width))
        nn.init.uniform_(self.tokens, -bound, bound)
        # none at 0: the module tree (and so the default model) stays as without the option
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, layer: int, batch_size: int, attributes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.tokens[layer].unsqueeze(0).expand(batch_size, -1, -1)  # [B, k, D]
        return self.dropout(tokens) if self.dropout is not None else tokens


class AttributeLayerTokens(LayerTokens):
    """Tokens made from the attributes' summary features at the encoder layer aligned with each backbone layer."""

    def __init__(
        self,
        names: tuple[str, ...],
        encoder_layers: Mapping[str, int],
        encoder_dim: int,
        backbone_layers: int,
        *,
        num_tokens: int,
        heads: int,
        attention: str = "gated",
    ) -> None:
        super().__init__()
        if attention not in ATTRIBUTE_ATTENTIONS:
            raise invalid(
                "model.eva.attribute_attention", f"one of {', '.join(ATTRIBUTE_ATTENTIONS)}", attention
            )
        self.num_tokens = num_tokens
        if attention == "gated":
            self.gates = nn.Parameter(torch.zeros(backbone_layers, heads))
        elif attention == "gated_per_token":
            self.gates = nn.Parameter(torch.zeros(backbone_layers, heads, num_tokens))
        self.names = tuple(names)
        self.encoder_layers = {name: int(encoder_layers[name]) for name in self.names}
        self.encoder_dim = encoder_dim
        # Which encoder layer feeds backbone layer i, per attribute.
        self.layer_map = {
            name: [aligned_encoder_layer(i, n, backbone_layers) for i in range(backbone_layers)]
            for name, n in self.encoder_layers.items()
        }

    def aligned(self, layer: int, attributes: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per attribute in `names` order, its feature `[B, D_enc]` at the encoder layer aligned with `layer`."""
        return [attributes[name][:, self.layer_map[name][layer]] for name in self.names]


class AttributeTokens(AttributeLayerTokens):
    """EVA hierarchical attribute tokens: one token per active attribute at every layer.

    The token of attribute a at layer i is `W_a @ A_a[l(i)] + b_a + o_{i,a}`: the attribute's
    summary feature at the aligned encoder layer l(i), mapped by one Linear per attribute shared
    across layers, plus a learned per-layer offset (zero-init) that lets each layer place the token
    differently. One projection per attribute instead of one per (layer, attribute) keeps the count
    at n_attr * (D_enc*D + D) + L*n_attr*D rather than L times the projection.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        encoder_layers: Mapping[str, int],
        encoder_dim: int,
        backbone_layers: int,
        width: int,
        *,
        heads: int,
        attention: str = "gated",
    ) -> None:
        super().__init__(
            names,
            encoder_layers,
            encoder_dim,
            backbone_layers,
            num_tokens=len(names),
            heads=heads,
            attention=attention,
        )
        self.projections = nn.ModuleDict({name: nn.Linear(encoder_dim, width) for name in self.names})
        self.offsets = nn.Parameter(torch.zeros(backbone_layers, self.num_tokens, width))

    def forward(self, layer: int, batch_size: int, attributes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = self.aligned(layer, attributes)  # n x [B, D_enc]
        tokens = [
            self.projections[name](f) for name, f in zip(self.names, features, strict=True)
        ]  # n x [B, D]
        return torch.stack(tokens, dim=1) + self.offsets[layer]  # [B, k, D]


class ConcatAttributeTokens(AttributeLayerTokens):
    """Projection-free attribute tokens (`model.eva.attribute_projection: none`), the EVA authors' mapping.

    The authors' code does not project attribute features: it concatenates the features of the
    attributes and reshapes the concatenation into backbone-width tokens (three 512-d CLIP features
    as `cat(...).reshape(2, 768)`). Here, per backbone layer i, the active attributes'
    features at their aligned encoder layers are concatenated in `names` order, `[B, n*D_enc]`,
    zero-padded to a multiple of the backbone width D and cut into `ceil(n*D_enc / D)` tokens.
    No scale matching is needed: the tokens only act through the block's attention, whose `ln_1`
    normalises each token, and they are dropped after the block. The only parameters are the attention
    gates (`model.eva.attribute_attention: gated`); with `joint` there are none.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        encoder_layers: Mapping[str, int],
        encoder_dim: int,
        backbone_layers: int,
        width: int,
        *,
        heads: int,
        attention: str = "gated",
    ) -> None:
        super().__init__(
            names,
            encoder_layers,
            encoder_dim,
            backbone_layers,
            num_tokens=math.ceil(len(names) * encoder_dim / width),
            heads=heads,
            attention=attention,
        )
        self.width = width

    def forward(self, layer: int, batch_size: int, attributes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        flat = torch.cat(self.aligned(layer, attributes), dim=1)  # [B, n*D_enc]
        pad = self.num_tokens * self.width - flat.shape[1]
        flat = torch.nn.functional.pad(flat, (0, pad))  # [B, k*D]
        return flat.view(batch_size, self.num_tokens, self.width)  # [B, k, D]
