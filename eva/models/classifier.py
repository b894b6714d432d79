"""Video classifier on a frozen open_clip ViT: linear probe, VPT, AIM, EVA and full fine-tuning.

All five methods share the frame embedding, the per-frame CLS read-out and the head, so they
differ only in what runs inside the transformer and in what is trainable:

    method  blocks                         extra tokens / layer        trainable
    linear  frozen                         -                           head
    vpt     frozen                         `prompt_length` prompts     prompts, head
    aim     adapted (+ temporal attention) -                           adapters, time embedding, head
    eva     adapted (+ temporal attention) attribute tokens            + attribute projections (linear)
    full    plain (as linear)              -                           everything, backbone included

The adapter layout of `aim` and `eva` (gate adapter or not, joint-adapter scale) defaults to each
method's published layout, `ADAPTER_LAYOUTS`; `model.adapter.gate` / `.scale` override it.

`full` is the frame-level CLIP fine-tuning baseline (AIM Table 1, "full fine-tuned, space only"):
the linear probe's network with every weight trainable, so the baselines add nothing untrained.

Per frame the read-out is what `clip.visual` returns, `ln_post(CLS) @ proj`; the head (dropout +
Linear) sees the mean of it over the T frames. The model does not normalise pixels: the data
pipeline does, with the `mean` / `std` buffers exposed here. What is trainable follows from the
module structure: the backbone is frozen by `freeze()` unless the method is `full`, and every
other submodule (adapters, time embedding, prompts, attribute tokens, head) is tunable.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from eva.models.blocks import BlockAdapters, check_attention, frozen_block_forward
from eva.models.loading import load_open_clip
from eva.models.summary import format_groups, group_tensors
from eva.models.tokens import (
    AttributeTokens,
    ConcatAttributeTokens,
    DeepPrompts,
    LayerTokens,
    drop_tokens,
    insert_tokens,
)

log = logging.getLogger(__name__)

METHODS = ("linear", "vpt", "aim", "eva", "full")
ADAPTED_METHODS = ("aim", "eva")
ATTRIBUTE_PROJECTIONS = ("linear", "none")


@dataclass(frozen=True)
class AdapterLayout:
    """A method's published adapter layout: what `model.adapter.gate: auto` / `.scale: auto` mean."""

    gate: bool  # the gate adapter (AIM's T_Adapter_in) before the temporal attention
    scale: float  # s, the joint adapter's weight next to the MLP
    source: str


ADAPTER_LAYOUTS = {
    "aim": AdapterLayout(
        gate=False,
        scale=0.5,
        source="AIM ViT-B/16 K400 config (vitclip_base_k400.py: adapter_scale=0.5, one temporal adapter); "
        "AIM uses the gate only for SSv2, with scale 1",
    ),
    "eva": AdapterLayout(
        gate=True,
        scale=1.0,
        source="EVA paper Fig. 1e (temporal + gate adapter); the authors' blocks (Rxn666/APT "
        "PromptAIMblock.py / promptmae.py) default to num_tadapter=2, scale=1",
    ),
}


def resolve_adapter_layout(method: str, gate: bool | str, scale: float | str) -> tuple[bool, float]:
    """`model.adapter.gate` / `.scale` (a value or `auto`) -> the values `method` runs with."""
    layout = ADAPTER_LAYOUTS.get(method, AdapterLayout(gate=False, scale=0.5, source=""))
    if gate == "auto":
        gate = layout.gate
    if not isinstance(gate, bool):
        raise ValueError(f"`model.adapter.gate` must be true, false or auto; got {gate!r}")
    if scale == "auto":
        scale = layout.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"`model.adapter.scale` must be a number or auto; got {scale!r}")
    return gate, float(scale)


@dataclass
class ModelConfig:
    """Everything that determines the network; saved in the checkpoint (`dataclasses.asdict`)."""

    method: str  # model.method: linear | vpt | aim | eva | full
    num_classes: int
    backbone: str  # model.backbone.name
    pretrained: str = ""  # model.backbone.pretrained
    frames: int = 8  # model.frames (T)
    image_size: int = 224  # model.image_size
    adapter_ratio: float = 0.25  # model.adapter.ratio
    adapter_scale: float | str = "auto"  # model.adapter.scale; `auto` resolves to ADAPTER_LAYOUTS
    adapter_gate: bool | str = "auto"  # model.adapter.gate; `auto` resolves to ADAPTER_LAYOUTS
    drop_path: float = 0.0  # model.drop_path: stochastic depth of the deepest adapted block
    attribute_projection: str = "linear"  # model.attribute_projection: linear | none
    prompt_length: int = 8  # model.prompt.length (vpt)
    attributes: tuple[str, ...] = ()  # eva: active attribute names (from `stage`), store order
    attribute_layers: dict[str, int] = field(default_factory=dict)  # encoder layers per attribute
    attribute_dim: int = 0  # encoder width D_enc
    head_dropout: float = 0.5  # dropout before the linear head (AIM's I3D head uses 0.5)

    def __post_init__(self) -> None:
        # Accept the JSON round trip of a checkpoint (lists, string keys).
        self.attributes = tuple(self.attributes)
        self.attribute_layers = {str(k): int(v) for k, v in self.attribute_layers.items()}
        self.adapter_gate, self.adapter_scale = resolve_adapter_layout(
            self.method, self.adapter_gate, self.adapter_scale
        )

    def validate(self) -> None:
        """Raise ValueError naming the params.yaml key of the first inconsistent field."""
        if self.method not in METHODS:
            raise ValueError(f"`model.method` must be one of {', '.join(METHODS)}; got '{self.method}'")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (the dataset's class list); got {self.num_classes}")
        if self.frames < 1:
            raise ValueError(f"`model.frames` must be >= 1; got {self.frames}")
        if self.adapter_ratio <= 0:
            raise ValueError(f"`model.adapter.ratio` must be > 0; got {self.adapter_ratio}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"`model.drop_path` must be in [0, 1); got {self.drop_path}")
        if self.attribute_projection not in ATTRIBUTE_PROJECTIONS:
            raise ValueError(
                f"`model.attribute_projection` must be one of {', '.join(ATTRIBUTE_PROJECTIONS)}; "
                f"got '{self.attribute_projection}'"
            )
        if self.method == "vpt" and self.prompt_length < 1:
            raise ValueError(
                f"`model.prompt.length` must be >= 1 for model.method=vpt; got {self.prompt_length}"
            )
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1); got {self.head_dropout}")
        if self.method == "eva":
            if len(set(self.attributes)) != len(self.attributes):
                raise ValueError(f"duplicate attribute names (set from `stage`): {self.attributes}")
            if self.attributes and self.attribute_dim < 1:
                raise ValueError(
                    "attribute_dim (encoder width, from the attribute store's metadata) must be >= 1"
                )
            for name in self.attributes:
                if self.attribute_layers.get(name, 0) < 1:
                    raise ValueError(
                        f"no encoder layer count for attribute '{name}' (set from `stage`): "
                        f"attribute_layers={self.attribute_layers} must come from the attribute store's metadata"
                    )


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode (no dropout, fixed statistics) for `module`; returns it."""
    module.requires_grad_(False)
    return module.eval()


def _check_backbone(backbone: VisionTransformer) -> None:
    """The adapted forward re-implements the standard CLIP ViT; refuse variants it would get wrong."""
    problems = []
    if not isinstance(backbone, VisionTransformer):
        problems.append(f"not an open_clip VisionTransformer ({type(backbone).__name__})")
    else:
        if backbone.attn_pool is not None or backbone.pool_type != "tok":
            problems.append("pooling is not the CLS token")
        if not isinstance(backbone.patch_dropout, nn.Identity):
            problems.append("patch dropout is on")
        for block in backbone.transformer.resblocks:
            if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
                problems.append(f"block type {type(block).__name__} is not a plain ResidualAttentionBlock")
                break
            if (why := check_attention(block.attn)) is not None:
                problems.append(why)
                break
    if problems:
        raise ValueError(f"unsupported vision tower for `model.backbone.name`: {'; '.join(problems)}")


class VideoClassifier(nn.Module):
    """Logits `[B, num_classes]` for normalised videos `[B, T, 3, H, W]` (+ attribute features for eva)."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: VisionTransformer,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        config.validate()
        _check_backbone(backbone)
        if tuple(backbone.image_size) != (config.image_size, config.image_size):
            raise ValueError(
                f"`model.image_size`={config.image_size} but the backbone was built for {backbone.image_size}"
            )
        self.config = config
        self.frozen_backbone = config.method != "full"
        self.backbone = freeze(backbone) if self.frozen_backbone else backbone.requires_grad_(True)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)  # [3]
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)  # [3]

        blocks = backbone.transformer.resblocks
        width = backbone.transformer.width
        layers = len(blocks)
        adapted = config.method in ADAPTED_METHODS
        # Learnable position in time, zero-init so the adapted model starts as the frozen one.
        self.temporal_embedding = nn.Parameter(torch.zeros(config.frames, width)) if adapted else None
        # AIM's stochastic-depth rule: the rate grows linearly from 0 (first block) to drop_path (last).
        rates = torch.linspace(0.0, config.drop_path, layers).tolist()
        self.adapters = (
            nn.ModuleList(
                BlockAdapters(
                    width,
                    config.adapter_ratio,
                    config.adapter_scale,
                    gate=config.adapter_gate,
                    drop_path=rate,
                )
                for rate in rates
            )
            if adapted
            else None
        )
        self.prompts = (
            DeepPrompts(layers, config.prompt_length, width, backbone.patch_size[0] * backbone.patch_size[1])
            if config.method == "vpt"
            else None
        )
        tokens_class = AttributeTokens if config.attribute_projection == "linear" else ConcatAttributeTokens
        self.attribute_tokens: AttributeTokens | ConcatAttributeTokens | None = (
            tokens_class(config.attributes, config.attribute_layers, config.attribute_dim, layers, width)
            if config.method == "eva" and config.attributes
            else None
        )
        feature_dim = backbone.proj.shape[1] if backbone.proj is not None else width
        self.head = nn.Sequential(
            OrderedDict(
                dropout=nn.Dropout(config.head_dropout), fc=nn.Linear(feature_dim, config.num_classes)
            )
        )
        nn.init.normal_(self.head.fc.weight, std=0.02)
        nn.init.zeros_(self.head.fc.bias)

        tunable, total = self.parameter_counts()
        log.info(
            "model %s on %s: %d tunable of %d parameters (%.2f%%)",
            config.method,
            config.backbone,
            tunable,
            total,
            100.0 * tunable / total,
        )
        log.info("tunable by module: %s", format_groups(group_tensors(self.named_tunable_parameters())))
        log.debug("tunable tensors: %s", ", ".join(name for name, _ in self.named_tunable_parameters()))

    @property
    def extra_tokens(self) -> LayerTokens | None:
        """The per-layer token provider of this method (prompts or attribute tokens), if any."""
        return self.prompts if self.prompts is not None else self.attribute_tokens

    def train(self, mode: bool = True) -> VideoClassifier:
        """Train the tunable parts; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    # -- inputs ------------------------------------------------------------------------------

    def _check_video(self, video: torch.Tensor) -> None:
        cfg = self.config
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be [B, T, 3, H, W]; got shape {tuple(video.shape)}")
        if video.shape[1] != cfg.frames:
            raise ValueError(f"video has {video.shape[1]} frames but `model.frames`={cfg.frames}")
        if tuple(video.shape[3:]) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"frames are {tuple(video.shape[3:])} but `model.image_size`={cfg.image_size} (square crops)"
            )

    def _check_attributes(
        self, attributes: Mapping[str, torch.Tensor] | None, batch_size: int
    ) -> dict[str, torch.Tensor]:
        """The active attributes, cast to the projection's dtype; clear errors for missing or misshapen ones."""
        tokens = self.attribute_tokens
        if tokens is None:
            return {}
        attributes = attributes or {}
        dtype = self.backbone.conv1.weight.dtype
        checked = {}
        for name in tokens.names:
            if name not in attributes:
                raise ValueError(
                    f"attribute '{name}' missing: model.method=eva with the attributes of `stage` needs "
                    f"{list(tokens.names)}, got {sorted(attributes)}"
                )
            value = attributes[name]
            expected = (batch_size, tokens.encoder_layers[name], tokens.encoder_dim)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"attribute '{name}' must be [B, L_enc, D_enc] = {list(expected)} "
                    f"(one keyframe's features); got {list(value.shape)}"
                )
            checked[name] = value.to(dtype)
        return checked

    # -- forward -----------------------------------------------------------------------------

    def _embed(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B*T, 3, H, W]` -> `[B*T, 1+N, D]`, as `clip.visual` embeds, plus the time embedding."""
        v = self.backbone
        x = v.conv1(frames)  # [B*T, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B*T, N, D]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B*T, 1, D]
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # [B*T, 1+N, D]
        if self.temporal_embedding is not None:
            x = rearrange(x, "(b t) n d -> b t n d", t=self.config.frames)
            x = x + self.temporal_embedding.to(x.dtype)[:, None]  # [B, T, 1+N, D]
            x = rearrange(x, "b t n d -> (b t) n d")  # [B*T, 1+N, D]
        return v.ln_pre(x)

    def frame_features(
        self, video: torch.Tensor, attributes: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Per-frame CLS features `[B, T, D_out]`: what `clip.visual` returns per frame, when frozen at init."""
        self._check_video(video)
        batch, frames = video.shape[:2]
        checked = self._check_attributes(attributes, batch)
        x = self._embed(video.flatten(0, 1))  # [B*T, 1+N, D]
        provider = self.extra_tokens
        k = provider.num_tokens if provider is not None else 0
        for i, block in enumerate(self.backbone.transformer.resblocks):
            if provider is not None:
                x = insert_tokens(x, provider(i, batch, checked), frames)  # [B*T, 1+k+N, D]
            if self.adapters is not None:
                x = self.adapters[i](block, x, frames=frames, num_extra=k)
            else:
                x = frozen_block_forward(block, x)
            x = drop_tokens(x, k)  # [B*T, 1+N, D]
        cls = self.backbone.ln_post(x[:, 0])  # [B*T, D]
        if self.backbone.proj is not None:
            cls = cls @ self.backbone.proj  # [B*T, D_out]
        return cls.view(batch, frames, -1)  # [B, T, D_out]

    def forward(
        self, video: torch.Tensor, attributes: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """`video` float `[B, T, 3, H, W]` normalised with `mean`/`std`; `attributes` name -> `[B, L_enc, D_enc]`."""
        pooled = self.frame_features(video, attributes).mean(dim=1)  # [B, D_out]
        return self.head(pooled)  # [B, num_classes]

    def view_probabilities(
        self, video: torch.Tensor, attributes: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Softmax scores `[B, C]` averaged over every view of each video: V video views x K keyframes.

        `video`: `[B, V, T, 3, H, W]` (V clips x crops, or `[B, T, 3, H, W]` for one view);
        `attributes`: name -> `[B, K, L_enc, D_enc]`, all K keyframes of each video. Each keyframe
        is fed exactly as in training, one keyframe's features for every attribute at once, and
        counts as an extra view; the model never sees a keyframe mean it was not trained on.
        One forward per keyframe keeps the peak memory that of V views.
        """
        if video.ndim == 5:
            video = video[:, None]  # [B, 1, T, 3, H, W]
        batch, views = video.shape[:2]
        flat = video.flatten(0, 1)  # [B*V, T, 3, H, W], rows ordered (b v)
        names = list(self.attribute_tokens.names) if self.attribute_tokens is not None else []
        if not names:
            logits = self(flat)  # [B*V, C]
            return logits.float().softmax(dim=-1).view(batch, views, -1).mean(dim=1)  # [B, C]
        attributes = attributes or {}
        missing = [n for n in names if n not in attributes]
        if missing:
            raise ValueError(f"attributes {missing} missing: model.method=eva needs {names}")
        keyframes = {attributes[n].shape[1] for n in names}
        if len(keyframes) != 1 or any(attributes[n].ndim != 4 for n in names):
            raise ValueError(
                "evaluation attributes must be [B, K, L_enc, D_enc] with the same K for every attribute; got "
                f"{ {n: list(attributes[n].shape) for n in names} }"
            )
        count = keyframes.pop()
        total = torch.zeros(())
        for k in range(count):
            per_view = {
                n: attributes[n][:, k].repeat_interleave(views, dim=0) for n in names
            }  # [B*V, L, D], rows ordered (b v) like `flat`
            logits = self(flat, per_view)  # [B*V, C]
            total = total + logits.float().softmax(dim=-1).view(batch, views, -1).sum(dim=1)  # [B, C]
        return total / (views * count)  # mean over V*K views

    # -- tunable parameters ------------------------------------------------------------------

    def named_tunable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter outside the frozen backbone (all of them for `full`)."""
        frozen = {id(p) for p in self.backbone.parameters()} if self.frozen_backbone else set()
        for name, p in self.named_parameters():
            if id(p) not in frozen:
                yield name, p

    def tunable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_tunable_parameters()}

    def load_tunable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what `tunable_state_dict` saved; keys and shapes must match this config exactly."""
        params = dict(self.named_tunable_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(
                f"tunable weights do not fit model.method={self.config.method}: "
                f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        for name, p in params.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(
                    f"tunable tensor '{name}' has shape {list(state[name].shape)}, expected {list(p.shape)}"
                )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name])

    def parameter_counts(self) -> tuple[int, int]:
        """(tunable, total) parameter counts."""
        tunable = sum(p.numel() for _, p in self.named_tunable_parameters())
        total = sum(p.numel() for p in self.parameters())
        return tunable, total


def build_model(cfg: ModelConfig) -> VideoClassifier:
    """Load the backbone named by `model.backbone.*` (frozen) and wrap it for `cfg.method`."""
    cfg.validate()
    bundle = load_open_clip(cfg.backbone, cfg.pretrained, param="model.backbone", image_size=cfg.image_size)
    return VideoClassifier(cfg, bundle.model.visual, bundle.mean, bundle.std)
