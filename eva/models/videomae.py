"""VideoMAE ViT-B as a frozen space-time backbone, and the EVA authors' adapted VideoMAE block.

VideoMAE embeds a clip `[B, T, 3, H, W]` as N = (T / tubelet) * (H / p) * (W / p) space-time tokens
(tubelet 2, patch 16: 1568 tokens for 16 x 224^2) plus a FIXED sinusoidal position table, runs plain
pre-norm ViT blocks with joint space-time attention, and reads out the mean of the tokens. There
is no CLS token. The position table is sized for the configured frame count and image size, so
the backbone takes exactly `frames` frames of `image_size` pixels.

`VideoMAEBackbone` exposes the parts of each block (`ln_1`, `attention`, `ln_2`, `mlp`) and the
extra-token mechanism as tensor functions, so adapters, prompts, attribute tokens and LoRA can sit
beside the frozen weights instead of being injected into them. Attention is computed here with
`F.linear` + `F.scaled_dot_product_attention` from the layer's own weights, so it does not depend
on which attention implementation transformers picked, and so LoRA deltas can be added to the
q/k/v/out projections without replacing modules.

Readout and `fc_norm`: HF `VideoMAEModel` ends in a LayerNorm only when `use_mean_pooling` is off
(the pre-training checkpoints such as `MCG-NJU/videomae-base`); `readout` applies it when present,
so it always equals `last_hidden_state.mean(1)`; `model.backbone.final_norm: identity` removes it, as
the EVA authors' VideoMAE (Rxn666/APT promptmae.py: `norm = nn.Identity()` with mean pooling) and
VideoMAE's own fine-tuning do (the `-finetuned-` checkpoints have none). The `fc_norm` LayerNorm that VideoMAE's
fine-tuning puts between the mean pool and the head is NOT part of the backbone: it belongs to the
classifier and is tunable (the EVA authors count it: 2 * D parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import VideoMAEImageProcessor, VideoMAEModel
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from eva.config import invalid
from eva.models.backbone import FINAL_NORMS, READOUTS
from eva.models.blocks import BlockAdapters
from eva.models.lora import AttentionLoRA
from eva.models.tokens import token_gated_attention
from eva.weights_io import from_pretrained, missing_weights

log = logging.getLogger(__name__)

# What VideoMAE was trained with (and what its pre-training target normalisation uses). Note that
# `VideoMAEImageProcessor()`'s own class defaults are 0.5 / 0.5, so they are not a safe fallback.
VIDEOMAE_MEAN: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_MEAN)  # type: ignore[assignment]
VIDEOMAE_STD: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_STD)  # type: ignore[assignment]


class VideoMAEBackbone(nn.Module):
    """A frozen HF `VideoMAEModel` seen as embed -> blocks (with extra tokens) -> readout.

    Attributes: `width` (D), `num_layers` (L), `num_heads`, `frames` (T), `tubelet`, `patch_size`,
    `image_size`, `num_tokens` (N space-time tokens), `feature_dim` (width of `readout`), `mean` and
    `std` (the pixel normalisation the data pipeline must apply, RGB in [0, 1]).
    """

    def __init__(
        self,
        model: VideoMAEModel,
        mean: tuple[float, float, float] = VIDEOMAE_MEAN,
        std: tuple[float, float, float] = VIDEOMAE_STD,
    ) -> None:
        super().__init__()
        cfg = model.config
        image_size = _square(cfg.image_size, "image_size")
        self.model = model
        self.width = int(cfg.hidden_size)
        self.num_layers = int(cfg.num_hidden_layers)
        self.num_heads = int(cfg.num_attention_heads)
        self.frames = int(cfg.num_frames)
        self.tubelet = int(cfg.tubelet_size)
        self.patch_size = _square(cfg.patch_size, "patch_size")
        self.image_size = image_size
        self.num_tokens = (self.frames // self.tubelet) * (image_size // self.patch_size) ** 2
        self.feature_dim = self.width
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.attention_dropout = float(cfg.attention_probs_dropout_prob)
        self.hidden_dropout = float(cfg.hidden_dropout_prob)
        # HF keeps the sinusoidal table as a plain tensor attribute; a buffer follows `.to(device)`.
        table = model.embeddings.position_embeddings.detach().clone()  # [1, N, D]
        self.register_buffer("position_embeddings", table, persistent=False)
        # the protocol's unit of `model.time_embedding_init`, as on CLIP (no time embedding is added here)
        self.position_rms = float(table.float().pow(2).mean().sqrt())
        self.layers = model.encoder.layer
        self.patch_area = self.tubelet * self.patch_size**2
        self.rows_per_video = 1  # one row of space-time tokens per video

    time_embedding = False  # the space-time position table already encodes time (APT adds none)
    head_norm = True  # VideoMAE's fine-tuning `fc_norm`, tunable, between the mean pool and the head

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embeddings.patch_embeddings.projection.weight.dtype

    # -- embedding ---------------------------------------------------------------------------

    def embed(self, video: torch.Tensor, time_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised `[B, T, 3, H, W]` -> `[B, N, D]`: tubelet patch embedding + the fixed position table."""
        if time_embedding is not None:
            raise ValueError("VideoMAE takes no extra time embedding: its position table is space-time")
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be [B, T, 3, H, W]; got shape {tuple(video.shape)}")
        if video.shape[1] != self.frames:
            raise ValueError(
                f"video has {video.shape[1]} frames but this VideoMAE backbone takes exactly {self.frames} "
                f"(its position table is fixed): set `model.frames` to {self.frames}"
            )
        if tuple(video.shape[3:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"frames are {tuple(video.shape[3:])} but this VideoMAE backbone takes "
                f"{self.image_size}x{self.image_size}: set `model.image_size` to {self.image_size}"
            )
        proj = self.model.embeddings.patch_embeddings.projection
        x = proj(video.permute(0, 2, 1, 3, 4))  # [B, D, T/tubelet, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D], tokens ordered (t h w)
        return x + self.position_embeddings.to(x.dtype)  # [B, N, D]

    # -- block parts (all frozen) ------------------------------------------------------------

    def ln_1(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[i].layernorm_before(x)

    def ln_2(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[i].layernorm_after(x)

    def attention(
        self,
        i: int,
        x: torch.Tensor,
        lora: AttentionLoRA | None = None,
        num_extra: int = 0,
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Joint self-attention of layer i over all tokens of a normalised `[B, S, D]` (no residual).

        The same math as HF's `VideoMAEAttention` (query and value with bias, key without), written
        with `F.linear` so `lora` can add its low-rank deltas to the frozen projections' outputs.
        """
        attn = self.layers[i].attention
        q_lin, k_lin, v_lin = attn.attention.query, attn.attention.key, attn.attention.value
        q = F.linear(x, q_lin.weight, q_lin.bias)  # [B, S, D]
        k = F.linear(x, k_lin.weight, k_lin.bias)  # [B, S, D] (key has no bias)
        v = F.linear(x, v_lin.weight, v_lin.bias)  # [B, S, D]
        if lora is not None:
            q, k, v = lora.add("q", x, q), lora.add("k", x, k), lora.add("v", x, v)
        # [B, S, D] -> [B, h, S, D/h] each
        q, k, v = (rearrange(t, "b s (h e) -> b h s e", h=self.num_heads) for t in (q, k, v))
        dropout = self.attention_dropout if self.training else 0.0
        # the k extra tokens are prepended (`insert_tokens`)
        out = token_gated_attention(
            q, k, v, slice(0, num_extra), token_gate, dropout_p=dropout
        )  # [B, h, S, D/h]
        out = rearrange(out, "b h s e -> b s (h e)")  # [B, S, D]
        dense = attn.output.dense
        y = F.linear(out, dense.weight, dense.bias)  # [B, S, D]
        if lora is not None:
            y = lora.add("out", out, y)
        return F.dropout(y, self.hidden_dropout, self.training)

    def temporal_attention(
        self,
        i: int,
        h: torch.Tensor,
        num_extra: int,
        post: Callable[[torch.Tensor], torch.Tensor],
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AIM's temporal pass on VideoMAE: `post` of the layer's joint attention (the authors' `AIMBlock`).

        The attention is already over space and time, so every token, extra tokens included, takes part.
        """
        return post(self.attention(i, h, num_extra=num_extra, token_gate=token_gate))

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i's feed-forward on a normalised `[B, S, D]` (no residual)."""
        layer = self.layers[i]
        h = layer.intermediate(x)  # [B, S, 4D], dense + activation
        return F.dropout(layer.output.dense(h), self.hidden_dropout, self.training)  # [B, S, D]

    def frozen_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i's own computation on `[B, S, D]` (S = k + N with extra tokens)."""
        x = x + self.attention(i, self.ln_1(i, x))
        return x + self.mlp(i, self.ln_2(i, x))

    # -- extra tokens and readout ------------------------------------------------------------

    @staticmethod
    def insert_tokens(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, N, D]` + `[B, k, D]` -> `[B, k+N, D]`: prepended, as the EVA authors do on VideoMAE."""
        return torch.cat([tokens.to(x.dtype), x], dim=1)  # [B, k+N, D]

    @staticmethod
    def drop_tokens(x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """`[B, k+N, D]` -> `[B, N, D]`: remove the k prepended tokens."""
        return x[:, num_tokens:]  # [B, N, D]

    def configure_readout(self, readout: str, final_norm: str) -> None:
        """`model.readout`: either value reads the token mean at the width (no projection here).
        `model.backbone.final_norm: identity` drops the checkpoint's final LayerNorm (when it has one),
        as HF's `use_mean_pooling` checkpoints and the EVA authors' VideoMAE do."""
        if readout not in READOUTS:
            raise invalid("model.readout", f"one of {', '.join(READOUTS)}", readout)
        if final_norm not in FINAL_NORMS:
            raise invalid("model.backbone.final_norm", f"one of {', '.join(FINAL_NORMS)}", final_norm)
        if final_norm == "identity":
            self.model.layernorm = None  # unregisters it: neither applied nor counted

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, N, D]` space-time tokens (extra tokens dropped) -> `[B, D]`: `last_hidden_state.mean(1)`.

        The classifier puts its own tunable `fc_norm` LayerNorm and head after this.
        """
        if self.model.layernorm is not None:  # pre-training checkpoints (use_mean_pooling: false)
            x = self.model.layernorm(x)
        return x.mean(dim=1)  # [B, D]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, N, D]` -> `[B, 1, D]`: one feature for the whole clip (the classifier's interface)."""
        return self.readout(x)[:, None]  # [B, 1, D]


def _square(size: int | list[int] | tuple[int, int], name: str) -> int:
    if isinstance(size, int):
        return size
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"only square VideoMAE inputs are supported; config.{name} is {size}")
    return int(size[0])


# -- the EVA authors' adapted VideoMAE block ---------------------------------------------------


# The adapters of one VideoMAE layer, placed as in the EVA authors' `AIMBlock` (Rxn666/APT): VideoMAE's
# attention is already joint over space and time, so the "temporal" and the spatial pass both run
# the layer's frozen joint attention; only the adapters around them differ:
#
#     x = x + T(attn(G(ln_1(x))))                   "temporal" pass (G: gate, skip; T: no skip)
#     x = x + S(attn(ln_1(x)))                      spatial pass (S: skip)
#     x = x + mlp(ln_2(x)) + s * J(ln_2(x))         joint adapter parallel to the MLP (no skip)
#
# It is the same module as on open_clip (`eva.models.blocks.BlockAdapters`); the backbone's
# `temporal_attention` makes the difference. Parameters per adapter: 2 * D * h + h + D, h = int(D * ratio).
VideoMAEBlockAdapters = BlockAdapters


def encode(
    backbone: VideoMAEBackbone,
    video: torch.Tensor,
    adapters: nn.ModuleList | None = None,
    layer_tokens: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pooled features `[B, D]` of a normalised `[B, T, 3, H, W]`.

    `adapters[i]` (a `VideoMAEBlockAdapters`) replaces layer i's frozen computation when given;
    `layer_tokens[i]` (`[B, k, D]`, e.g. attribute tokens or prompts) is prepended before layer i
    and dropped after it. The classifier applies its `fc_norm` and head to the result.
    """
    x = backbone.embed(video)  # [B, N, D]
    for i in range(backbone.num_layers):
        k = 0
        if layer_tokens is not None:
            k = layer_tokens[i].shape[1]
            x = backbone.insert_tokens(x, layer_tokens[i])  # [B, k+N, D]
        x = adapters[i](backbone, i, x) if adapters is not None else backbone.frozen_block(i, x)
        x = backbone.drop_tokens(x, k)  # [B, N, D]
    return backbone.readout(x)  # [B, D]


# -- loading -----------------------------------------------------------------------------------


def load_videomae(source: str, *, param: str, device: str | torch.device = "cpu") -> VideoMAEBackbone:
    """A frozen, eval-mode VideoMAE backbone from a hub name or a `save_pretrained` folder.

    `param` is the params.yaml key that holds `source`, named in every loading error. Weights the
    checkpoint lacks fail here instead of being silently random-initialised by transformers. The
    pixel normalisation is the folder's `VideoMAEImageProcessor` (`preprocessor_config.json`) when
    there is one, else VideoMAE's ImageNet mean / std.
    """
    [(model, info)] = from_pretrained(
        source,
        param=param,
        what="the VideoMAE backbone",
        example="MCG-NJU/videomae-base in the local cache",
        classes=(VideoMAEModel,),
        dtype=torch.float32,
        output_loading_info=True,
    )
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise missing_weights(
            param,
            f"Could not load the VideoMAE backbone '{source}': the checkpoint lacks {len(missing)} "
            f"weights, e.g. {missing[:4]}",
        )
    try:  # the same folder or hub name, found as from_pretrained found the model
        processor = VideoMAEImageProcessor.from_pretrained(source, local_files_only=Path(source).exists())
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except OSError:
        log.info("no preprocessor_config.json for '%s': using VideoMAE's ImageNet mean/std", source)
        mean, std = VIDEOMAE_MEAN, VIDEOMAE_STD
    model.eval().requires_grad_(False)
    # Move the wrapper, not the model: HF's position table is a plain attribute `.to()` skips.
    backbone = VideoMAEBackbone(model, mean, std).to(device)  # type: ignore[arg-type]
    log.info(
        "VideoMAE '%s': width %d, %d layers, %d frames (tubelet %d), %d px, %d tokens",
        source,
        backbone.width,
        backbone.num_layers,
        backbone.frames,
        backbone.tubelet,
        backbone.image_size,
        backbone.num_tokens,
    )
    return backbone
