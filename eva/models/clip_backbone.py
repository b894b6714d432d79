"""The open_clip ViT as a `BlockBackbone`: per-frame tokens, CLS read-out, attention over time per position.

A frame-level ViT sees a clip `[B, T, 3, H, W]` as B*T images: tokens are `[B*T, 1+N, D]` (rows
ordered (b t)), extra tokens are appended after the patches and shared by the T frames of a video, and the
read-out is what `clip.visual` returns per frame, `ln_post(CLS) @ proj` (`model.readout: proj`), or
`ln_post(CLS)` at the width without `proj`, as AIM reads it (`width`). AIM's temporal pass runs
the frozen attention across the T frames of each token position; the extra tokens, identical in
every frame, take no part in it (attending over time would only mix a token with copies of itself),
so their temporal update is zero.

The block parts are the open_clip block's own modules, LayerScale folded into `attention` / `mlp`;
attention is `eva.models.blocks.attend` (with LoRA deltas: `eva.models.lora.attend_with_lora`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from eva.config import invalid
from eva.models.backbone import FINAL_NORMS, READOUTS
from eva.models.blocks import attend, check_attention
from eva.models.lora import AttentionLoRA, attend_with_lora
from eva.models.tokens import drop_tokens, insert_tokens


def check_open_clip_vit(visual: nn.Module) -> None:
    """The block-parts forward re-implements the standard CLIP ViT; refuse variants it would get wrong."""
    problems = []
    if not isinstance(visual, VisionTransformer):
        problems.append(f"not an open_clip VisionTransformer ({type(visual).__name__})")
    else:
        if visual.attn_pool is not None or visual.pool_type != "tok":
            problems.append("pooling is not the CLS token")
        if not isinstance(visual.patch_dropout, nn.Identity):
            problems.append("patch dropout is on")
        for block in visual.transformer.resblocks:
            if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
                problems.append(f"block type {type(block).__name__} is not a plain ResidualAttentionBlock")
                break
            if (why := check_attention(block.attn)) is not None:
                problems.append(why)
                break
    if problems:
        raise ValueError(f"unsupported vision tower for `model.backbone.name`: {'; '.join(problems)}")


class OpenClipBackbone(nn.Module):
    """A frozen-or-not open_clip `VisionTransformer` seen as embed -> blocks (with extra tokens) -> read-out."""

    time_embedding = True  # frame-level: adapters that model time add a learnable time embedding
    head_norm = False  # `ln_post` is part of the read-out already

    def __init__(
        self,
        visual: VisionTransformer,
        frames: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        check_open_clip_vit(visual)
        self.visual = visual
        self.blocks = visual.transformer.resblocks
        self.width = int(visual.transformer.width)
        self.num_layers = len(self.blocks)
        self.num_heads = int(self.blocks[0].attn.num_heads)
        self.frames = int(frames)
        self.rows_per_video = self.frames  # DropPath draws once per video over its T rows
        self.image_size = int(visual.image_size[0])
        self.patch_area = int(visual.patch_size[0] * visual.patch_size[1])
        self.feature_dim = int(visual.proj.shape[1]) if visual.proj is not None else self.width
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.position_rms = float(visual.positional_embedding.detach().float().pow(2).mean().sqrt())

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def embed(self, video: torch.Tensor, time_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, T, 3, H, W]` -> `[B*T, 1+N, D]`, as `clip.visual` embeds, plus `time_embedding` `[T, D]`."""
        v = self.visual
        x = v.conv1(video.flatten(0, 1))  # [B*T, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B*T, N, D]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B*T, 1, D]
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # [B*T, 1+N, D]
        if time_embedding is not None:
            x = rearrange(x, "(b t) n d -> b t n d", t=self.frames)
            x = x + time_embedding.to(x.dtype)[:, None]  # [B, T, 1+N, D]
            x = rearrange(x, "b t n d -> (b t) n d")  # [B*T, 1+N, D]
        return v.ln_pre(x)

    # -- block parts -------------------------------------------------------------------------

    def ln_1(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i].ln_1(x)

    def attention(
        self,
        i: int,
        x: torch.Tensor,
        lora: AttentionLoRA | None = None,
        num_extra: int = 0,
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Layer i's attention over the tokens of each frame of a normalised `[B*T, S, D]` (no residual)."""
        block = self.blocks[i]
        if lora is not None:
            if token_gate is not None:
                raise ValueError("LoRA attention takes no gated extra tokens")
            return block.ls_1(attend_with_lora(block.attn, x, lora))
        length = x.shape[1]
        return block.ls_1(attend(block.attn, x, slice(length - num_extra, length), token_gate))  # appended

    def temporal_attention(
        self,
        i: int,
        h: torch.Tensor,
        num_extra: int,
        post: Callable[[torch.Tensor], torch.Tensor],
        token_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Layer i's attention across the T frames of each CLS/patch position of a normalised `[B*T, 1+N+k, D]`.

        `post` (a token-wise adapter) is applied to the attention output; the k extra tokens get 0
        (they take no part, so `token_gate` has nothing to gate here).
        """
        k = num_extra
        frame_tokens = h[:, : h.shape[1] - k]  # [B*T, 1+N, D], a view (the tokens are appended)
        n = frame_tokens.shape[1]
        # One copy into (b n) t order: the input projection is then one matrix product. On the strided
        # view, with frozen weights, autograd ran it as a broadcast bmm per position, forward and
        # backward: 17% of an EVA step on CPU (docs/performance.md).
        ht = rearrange(frame_tokens, "(b t) n d -> (b n) t d", t=self.frames).contiguous()  # [B*(1+N), T, D]
        yt = post(attend(self.blocks[i].attn, ht))  # [B*(1+N), T, D]
        y = rearrange(yt, "(b n) t d -> (b t) n d", n=n)  # [B*T, 1+N, D]
        if not k:
            return y
        return F.pad(y, (0, 0, 0, k))  # [B*T, 1+N+k, D], zeros for the tokens

    def ln_2(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i].ln_2(x)

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[i]
        return block.ls_2(block.mlp(x))

    def frozen_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i's own computation on `[B*T, S, D]`."""
        x = x + self.attention(i, self.ln_1(i, x))
        return x + self.mlp(i, self.ln_2(i, x))

    def configure_readout(self, readout: str, final_norm: str) -> None:
        """`model.readout`: `proj` keeps `ln_post(CLS) @ proj`; `width` removes `proj` from the model, as
        AIM deletes it from the CLIP state dict (vit_clip.py `init_weights`), so the features are
        `ln_post(CLS)` at the width, and the unused tensor is neither counted nor trained.

        `model.backbone.final_norm` must be `keep`: `ln_post` is the read-out norm, and AIM keeps it.
        """
        if readout not in READOUTS:
            raise invalid("model.readout", f"one of {', '.join(READOUTS)}", readout)
        if final_norm != FINAL_NORMS[0]:
            raise invalid(
                "model.backbone.final_norm",
                "keep for model.backbone.family=open_clip (ln_post is CLIP's read-out norm; AIM keeps it)",
                final_norm,
            )
        if readout == "width" and self.visual.proj is not None:
            self.visual.proj = None  # unregisters the parameter
            self.feature_dim = self.width

    # -- extra tokens and read-out -----------------------------------------------------------

    def insert_tokens(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`[B*T, 1+N, D]` + video tokens `[B, k, D]` -> `[B*T, 1+N+k, D]` (appended, in every frame)."""
        return insert_tokens(x, tokens, self.frames)

    @staticmethod
    def drop_tokens(x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        return drop_tokens(x, num_tokens)  # [B*T, 1+N, D]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`[B*T, 1+N, D]` -> per-frame features `[B, T, D_out]`: `ln_post(CLS) @ proj`, as `clip.visual`
        (`ln_post(CLS)` with `model.readout: width`)."""
        cls = self.visual.ln_post(x[:, 0])  # [B*T, D]
        if self.visual.proj is not None:
            cls = cls @ self.visual.proj  # [B*T, D_out]
        return cls.view(-1, self.frames, cls.shape[-1])  # [B, T, D_out]
