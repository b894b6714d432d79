"""Hierarchical CLIP encoding: the summary token at every layer, mapped into the joint space.

For each transformer layer l the summary token (CLS for images, EOT for text) goes through the
tower's own final LayerNorm and projection, so layer L-1 is exactly `encode_image` / `encode_text`
and earlier layers live in the same D-dim space. One forward per batch, through open_clip's
`forward_intermediates`; the extra cost is a LayerNorm and a matmul on `[B, L, W]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool

from eva.weights_io import OpenClipBundle


class HierarchicalEncoder:
    """Per-layer summary-token embeddings `[B, L, D]` from a frozen open_clip model."""

    def __init__(
        self, bundle: OpenClipBundle, device: torch.device, *, param: str = "attributes.clip"
    ) -> None:
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.device = device
        visual = self.model.visual
        if (
            not isinstance(visual, VisionTransformer)
            or visual.attn_pool is not None
            or visual.pool_type != "tok"
        ):
            raise ValueError(
                f"`{param}.model` must be an open_clip ViT pooled by its CLS token (got "
                f"{type(visual).__name__}); per-layer attributes need a summary token at every layer"
            )
        # CLIP keeps the text tower's parts on the model itself; CustomTextCLIP wraps them in `.text`.
        text = getattr(self.model, "text", None)
        if isinstance(text, TextTransformer):
            if text.cls_emb is not None:
                raise ValueError(f"`{param}.model`: text towers with an appended CLS token are not supported")
            self._text_forward = text.forward_intermediates
            self._ln_final, self._text_proj = text.ln_final, text.text_projection
            self._pool_type, self._eos_id = text.pool_type, getattr(text, "eos_id", None)
            self.text_layers = len(text.transformer.resblocks)
        else:
            self._text_forward = None
            self._ln_final, self._text_proj = self.model.ln_final, self.model.text_projection
            self._pool_type, self._eos_id = (
                self.model.text_pool_type,
                getattr(self.model, "text_eos_id", None),
            )
            self.text_layers = len(self.model.transformer.resblocks)
        self.image_layers = len(visual.transformer.resblocks)
        self.dim = int(visual.output_dim)
        self.image_size = bundle.image_size
        self._mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)

    # ---- images -------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 `[3, H, W]` images of any size -> normalised float `[B, 3, S, S]` on the device.

        Same recipe as open_clip's eval transform (bicubic resize of the short side, centre crop),
        done on tensors so a batch never goes through PIL.
        """
        size = self.image_size
        out = []
        for image in images:
            x = image.to(self.device, non_blocking=True).float().unsqueeze(0) / 255.0  # [1, 3, H, W]
            h, w = x.shape[-2:]
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            top, left = (nh - size) // 2, (nw - size) // 2
            out.append(x[..., top : top + size, left : left + size].clamp_(0, 1))
        x = torch.cat(out)  # [B, 3, S, S]
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised `[B, 3, S, S]` -> float32 `[B, Lv, D]` (CLS token of every block)."""
        visual = self.model.visual
        out = visual.forward_intermediates(
            pixels, output_fmt="NLC", output_extra_tokens=True, intermediates_only=True
        )
        cls = torch.cat(out["image_intermediates_prefix"], dim=1)  # [B, Lv, W] (one prefix token per block)
        pooled = visual.ln_post(cls)  # per-token LN: same as the tower's LN before/after 'tok' pooling
        if visual.proj is not None:
            pooled = pooled @ visual.proj  # [B, Lv, D]
        return pooled.float()

    # ---- text ---------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.bundle.tokenizer(list(texts)).to(self.device)  # [B, n_ctx]

    @torch.inference_mode()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids `[B, n_ctx]` -> float32 `[B, Lt, D]` (EOT token of every block)."""
        if self._text_forward is not None:
            hidden = self._text_forward(tokens, intermediates_only=True)["text_intermediates"]
        else:
            hidden = self.model.forward_intermediates(text=tokens, intermediates_only=True)[
                "text_intermediates"
            ]
        # Pool each layer's tokens exactly like the tower pools its output.
        summary = torch.stack(
            [text_global_pool(h, tokens, self._pool_type, eos_token_id=self._eos_id) for h in hidden], dim=1
        )  # [B, Lt, W]
        summary = self._ln_final(summary)
        if isinstance(self._text_proj, torch.nn.Linear):
            summary = self._text_proj(summary)
        elif self._text_proj is not None:
            summary = summary @ self._text_proj  # [B, Lt, D]
        return summary.float()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(texts))

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().clamp(max=100))
