"""Video classifier on a frozen backbone: every `model.method` (eva.methods) on every backbone family.

A method is data (`eva.methods.Method`): the kind of layer that runs in each block, the extra
tokens entering each block, and whether the backbone trains. The layer kinds, written once against
the `BlockBackbone` interface (eva.models.backbone) so that they run on open_clip and VideoMAE alike:

    kind         module per block (held in `adapters`)           block computation
    frozen       -                                               the backbone's frozen block
    aim          AIM/EVA adapters (eva.models.blocks)            temporal + spatial passes, joint adapter
    adaptformer  AdaptFormer branch (eva.models.adaptformer)     bottleneck parallel to the MLP
    lora         LoRA deltas (eva.models.lora)                   low-rank deltas on q/k/v/out

and the token kinds: `prompts` (VPT-deep) and `attributes` (EVA), both through the backbone's
`insert_tokens` / `drop_tokens`. The adapter layout of `aim` layers (gate adapter or not,
joint-adapter scale) defaults to the method's published layout for the backbone family;
`model.adapter.gate` / `.scale` override it. On a frame-level backbone (open_clip) aim layers also
add a learnable time embedding, zero-initialised as in AIM or at a small random scale
(`model.time_embedding_init`); VideoMAE's position table is space-time already.

The read-out is the backbone's (`ln_post(CLS) @ proj` per frame on CLIP, or `ln_post(CLS)` at the
width as in AIM with `model.readout: width`; the token mean on VideoMAE), averaged over frames; the
head is `[fc_norm] -> dropout -> Linear` on the read-out's width, with VideoMAE's tunable `fc_norm`.
The model does not normalise pixels: the data pipeline does, with the `mean` / `std` buffers
exposed here. What is trainable follows from the module structure: the backbone is
frozen by `freeze()` unless the method trains it, and every other submodule is tunable.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from eva.config import (
    OPTIONAL_TEXT,
    TEXT,
    Rule,
    check,
    check_fields,
    derived,
    integer,
    invalid,
    number,
    one_of,
    params_file,
    section_values,
    setting,
    value_at,
)
from eva.data.attribute_store import AttributeMeta, attributes_for_stage
from eva.data.segments import SAMPLING
from eva.methods import METHODS, get_method
from eva.models.adapters import ADAPTER_INITS
from eva.models.adaptformer import AdaptFormerAdapter, adaptformer_block
from eva.models.backbone import FINAL_NORMS, READOUTS, BlockBackbone, lora_block
from eva.models.blocks import DROP_PATH_MODES, BlockAdapters
from eva.models.families import get_family
from eva.models.lora import TARGETS_RULE, AttentionLoRA
from eva.models.summary import format_groups, group_tensors
from eva.models.tokens import (
    ATTRIBUTE_ATTENTIONS,
    AttributeTokens,
    ConcatAttributeTokens,
    DeepPrompts,
    LayerTokens,
)

log = logging.getLogger(__name__)

ATTRIBUTE_PROJECTIONS = ("linear", "none")
DEFAULT_ATTRIBUTE_PROJECTION = "linear"


def resolve_adapter_layout(
    method: str, gate: bool | str, scale: float | str, family: str = "open_clip"
) -> tuple[bool, float]:
    """`model.adapter.gate` / `.scale` (a value or `auto`) -> the values `method` runs with on `family`."""
    entry = METHODS.get(method)
    default_gate, default_scale = False, 0.5
    if entry is not None and entry.layouts:
        layout = entry.layout(family)
        default_gate, default_scale = layout.gate, layout.scale
    if gate == "auto":
        gate = default_gate
    check("model.adapter.gate", gate, Rule("true, false or auto", lambda v: isinstance(v, bool)))
    if scale == "auto":
        scale = default_scale
    check("model.adapter.scale", scale, Rule("a number or auto", number().ok))
    return gate, float(scale)


def attribute_fields(method: str, stage: int, meta: AttributeMeta | None) -> dict[str, Any]:
    """ModelConfig's attribute fields for `stage`: names (store order), encoder depth and width from `meta`."""
    if not get_method(method).uses_attributes:
        return {}
    names = attributes_for_stage(stage)
    if meta is None:
        raise FileNotFoundError(f"model.method={method} needs the attributes stage's output (attributes/)")
    missing = [n for n in names if n not in meta.attributes]
    if missing:
        raise ValueError(
            f"`stage`={stage} needs attributes {missing} that the attribute file does not "
            f"hold (it has {list(meta.attributes)}); re-run the attributes stage"
        )
    return {
        "attributes": names,
        "attribute_layers": {n: meta.layers(n) for n in names},
        "attribute_dim": meta.dim,
    }


# ModelConfig fields added to select a reference's behaviour; `ModelConfig.record` omits them at their default.
REFERENCE_OPTIONS = (
    "readout",
    "final_norm",
    "drop_path_mode",
    "adapter_init",
    "prompt_dropout",
    "sampling",
    "frame_interval",
    "head_init_std",
)


@dataclass(frozen=True)
class ModelConfig:
    """The `model` section of params.yaml plus what the data decides; saved in the checkpoint (`asdict`)."""

    method: str = setting(rule=one_of(*METHODS))  # a key of eva.methods.METHODS
    num_classes: int = derived()  # the dataset's class list
    backbone: str = setting("backbone.name", default="local-dir:models/pretrained/clip", rule=TEXT)
    pretrained: str = setting("backbone.pretrained", default="", rule=OPTIONAL_TEXT)
    backbone_family: str = setting("backbone.family", default="open_clip", rule=TEXT)
    frames: int = setting(default=4, rule=integer(1))  # T
    image_size: int = setting(default=64, rule=integer(1))
    # how the T frames are picked from the stored ones (eva.data.clips): segments (TSN) | dense (SampleFrames)
    sampling: str = setting(default="segments", rule=SAMPLING)
    # dense: source frames between a clip's frames (a multiple of extract.frame_stride)
    frame_interval: int = setting(default=1, rule=integer(1, what="(source frames)"))
    adapter_ratio: float = setting("adapter.ratio", default=0.25, rule=number(above=0))
    # `auto`: the method's layout on this backbone family
    adapter_scale: float | str = setting("adapter.scale", default="auto")
    adapter_gate: bool | str = setting("adapter.gate", default="auto")
    # stochastic depth of the deepest adapted block
    drop_path: float = setting(default=0.0, rule=number(0, below=1))
    # std of the time embedding's initial values, in units of the RMS of the backbone's position
    # embedding; 0 is AIM's zero init (the model starts as the frozen backbone)
    time_embedding_init: float = setting(default=0.15, rule=number(0))
    attribute_projection: str = setting(
        "eva.attribute_projection", default=DEFAULT_ATTRIBUTE_PROJECTION, rule=one_of(*ATTRIBUTE_PROJECTIONS)
    )
    # eva: gated | gated_per_token (LLaMA-Adapter's zero-init gated attention to the tokens) | joint (the EVA paper)
    attribute_attention: str = setting(
        "eva.attribute_attention", default="gated", rule=one_of(*ATTRIBUTE_ATTENTIONS)
    )
    prompt_length: int = setting("vpt.length", default=8, rule=integer(1))
    adaptformer_bottleneck: int = setting("adaptformer.bottleneck", default=64, rule=integer(1))
    adaptformer_scale: float = setting("adaptformer.scale", default=0.1, rule=number())
    lora_rank: int = setting("lora.rank", default=8, rule=integer(1))
    lora_alpha: float = setting("lora.alpha", default=8.0, rule=number(above=0))
    lora_targets: tuple[str, ...] = setting("lora.targets", default=("q", "v"), rule=TARGETS_RULE)
    lora_dropout: float = setting("lora.dropout", default=0.0, rule=number(0, below=1))
    # Options that select a reference's behaviour (docs/reference-deviations.md); left out of the
    # checkpoint's record while at their default (`record`), so a default run saves what it did before.
    # proj: CLIP's `ln_post(CLS) @ proj` | width: `ln_post(CLS)`, proj removed (AIM)
    readout: str = setting(default="proj", rule=one_of(*READOUTS))
    # keep | identity: no final LayerNorm before the mean pool (VideoMAE; the EVA authors' code)
    final_norm: str = setting("backbone.final_norm", default="keep", rule=one_of(*FINAL_NORMS))
    # video: drop-path draws per video | aim: per token position across the batch (AIM's code)
    drop_path_mode: str = setting(default="video", rule=one_of(*DROP_PATH_MODES))
    # default: PyTorch's Linear init of the adapter down-projections | aim: trunc normal std 0.02, zero bias
    adapter_init: str = setting("adapter.init", default="default", rule=one_of(*ADAPTER_INITS))
    # vpt: dropout on the prompt tokens in training (VPT's MODEL.PROMPT.DROPOUT)
    prompt_dropout: float = setting("vpt.dropout", default=0.0, rule=number(0, below=1))
    # eva: active attribute names (from `stage`, store order), their encoder depth and width
    attributes: tuple[str, ...] = derived(default=())
    attribute_layers: dict[str, int] = derived(default_factory=dict)
    attribute_dim: int = derived(default=0)
    head_dropout: float = setting("head.dropout", default=0.5, rule=number(0, below=1))  # AIM's I3D head: 0.5
    # std of the classifier's normal init (AIM's I3D head, the EVA authors' head: 0.01)
    head_init_std: float = setting("head.init_std", default=0.02, rule=number(above=0))

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any],
        *,
        stage: int | None = None,
        attribute_meta: AttributeMeta | None = None,
        **derived_fields: Any,
    ) -> ModelConfig:
        """From the `model` section (unknown keys rejected) plus the derived fields (`num_classes`...).

        With `stage` (read once, by the train stage) an attribute method gets the attributes it selects
        from `attribute_meta` (the attribute file's metadata).
        """
        values = section_values(cls, params, "model")
        sections = value_at(params, "model")
        for name in METHODS:  # the train stage depends on `model.<model.method>`: each method has its section
            if not isinstance(sections.get(name), Mapping):
                raise KeyError(
                    f"{params_file(f'model.{name}')} has no section `model.{name}` (`{{}}` for a method without settings)"
                )
        values["pretrained"] = "" if values["pretrained"] is None else values["pretrained"]
        values["lora_targets"] = tuple(values["lora_targets"] or ())
        if stage is not None:
            derived_fields = attribute_fields(values["method"], stage, attribute_meta) | derived_fields
        return cls(**values, **derived_fields)

    def record(self) -> dict[str, Any]:
        """The checkpoint's record (`asdict`), without the reference options that are at their default.

        `ModelConfig(**record)` gives this config back (an absent option takes its default).
        """
        defaults = {f.name: f.default for f in fields(self) if f.name in REFERENCE_OPTIONS}
        return {k: v for k, v in asdict(self).items() if not (k in defaults and v == defaults[k])}

    def __post_init__(self) -> None:
        check_fields(self, "model")  # each key's rule, before anything reads the values
        # Accept the JSON round trip of a checkpoint (lists, string keys).
        set_field = object.__setattr__  # frozen: normalised once, here
        set_field(self, "attributes", tuple(self.attributes))
        set_field(self, "lora_targets", tuple(self.lora_targets))
        set_field(self, "attribute_layers", {str(k): int(v) for k, v in self.attribute_layers.items()})
        gate, scale = resolve_adapter_layout(
            self.method, self.adapter_gate, self.adapter_scale, self.backbone_family
        )
        set_field(self, "adapter_gate", gate)
        set_field(self, "adapter_scale", scale)

    def validate(self) -> None:
        """Raise ValueError naming the params.yaml key of the first inconsistent field."""
        get_method(self.method)
        get_family(self.backbone_family)
        check_fields(self, "model")
        check(
            "num_classes", self.num_classes, Rule("an integer >= 1 (the dataset's class list)", integer(1).ok)
        )
        if self.final_norm != "keep" and self.backbone_family == "open_clip":
            raise invalid(
                "model.backbone.final_norm",
                "keep for model.backbone.family=open_clip (ln_post is CLIP's read-out norm; AIM keeps it)",
                self.final_norm,
            )
        if get_method(self.method).uses_attributes:
            if len(set(self.attributes)) != len(self.attributes):
                raise invalid("stage", "a stage whose attribute names are distinct", self.attributes)
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


@dataclass(frozen=True)
class LayerKind:
    """How one `Method.layer` kind builds its per-block module and runs a block with it."""

    # (config, backbone, drop-path rate of this block) -> the block's module
    make: Callable[[ModelConfig, BlockBackbone, float], nn.Module] | None
    # (backbone, block index, tokens, module or None, number of extra tokens, their attention gate) -> tokens
    run: Callable[
        [BlockBackbone, int, torch.Tensor, nn.Module | None, int, torch.Tensor | None], torch.Tensor
    ]
    time_embedding: bool = False  # models time: add a time embedding where the backbone wants one


LAYER_KINDS: dict[str, LayerKind] = {
    "frozen": LayerKind(make=None, run=lambda bb, i, x, m, k, g: bb.frozen_block(i, x)),
    "aim": LayerKind(
        make=lambda cfg, bb, rate: BlockAdapters(
            bb.width,
            cfg.adapter_ratio,
            cfg.adapter_scale,
            gate=cfg.adapter_gate,
            drop_path=rate,
            drop_path_mode=cfg.drop_path_mode,
            init=cfg.adapter_init,
        ),
        run=lambda bb, i, x, m, k, g: m(bb, i, x, num_extra=k, token_gate=g),
        time_embedding=True,
    ),
    "adaptformer": LayerKind(
        make=lambda cfg, bb, rate: AdaptFormerAdapter(
            bb.width, cfg.adaptformer_bottleneck, cfg.adaptformer_scale
        ),
        run=lambda bb, i, x, m, k, g: adaptformer_block(bb, i, x, m),
    ),
    "lora": LayerKind(
        make=lambda cfg, bb, rate: AttentionLoRA(
            bb.width, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.lora_dropout
        ),
        run=lambda bb, i, x, m, k, g: lora_block(bb, i, x, m),
    ),
}


class VideoClassifier(nn.Module):
    """Logits `[B, num_classes]` for normalised videos `[B, T, 3, H, W]` (+ attribute features for eva)."""

    def __init__(self, config: ModelConfig, backbone: BlockBackbone) -> None:
        super().__init__()
        config.validate()
        if backbone.image_size != config.image_size:
            raise ValueError(
                f"`model.image_size`={config.image_size} but the backbone was built for {backbone.image_size}"
            )
        if backbone.frames != config.frames:
            raise ValueError(
                f"`model.frames`={config.frames} but the backbone takes exactly {backbone.frames} frames"
            )
        backbone.configure_readout(config.readout, config.final_norm)  # before its features' width is read
        self.config = config
        self.method = get_method(config.method)
        self.layer_kind = LAYER_KINDS[self.method.layer]
        self.frozen_backbone = not self.method.trains_backbone
        # Activation checkpointing per backbone layer (a run-time choice, not part of the model): trades
        # one more forward of each layer in backward for keeping only the layers' inputs (docs/performance.md).
        self.checkpointing = False
        self.backbone = freeze(backbone) if self.frozen_backbone else backbone.requires_grad_(True)
        self.register_buffer(
            "mean", torch.tensor(backbone.mean, dtype=torch.float32), persistent=False
        )  # [3]
        self.register_buffer("std", torch.tensor(backbone.std, dtype=torch.float32), persistent=False)  # [3]

        width, layers = backbone.width, backbone.num_layers
        # Learnable position in time. At zero (AIM) the adapted model starts as the frozen one, and every
        # time-reversed pair of videos gets the same features until it grows: a near-saddle that a short
        # run escapes late or not at all. A small random start breaks that symmetry from the first step.
        wants_time = self.layer_kind.time_embedding and backbone.time_embedding
        self.temporal_embedding = (
            nn.Parameter(self._time_embedding_init(config, backbone)) if wants_time else None
        )
        # AIM's stochastic-depth rule: the rate grows linearly from 0 (first block) to drop_path (last).
        rates = torch.linspace(0.0, config.drop_path, layers).tolist()
        make = self.layer_kind.make
        self.adapters = nn.ModuleList(make(config, backbone, rate) for rate in rates) if make else None
        self.prompts = (
            DeepPrompts(layers, config.prompt_length, width, backbone.patch_area, config.prompt_dropout)
            if self.method.tokens == "prompts"
            else None
        )
        tokens_class = AttributeTokens if config.attribute_projection == "linear" else ConcatAttributeTokens
        self.attribute_tokens: AttributeTokens | ConcatAttributeTokens | None = (
            tokens_class(
                config.attributes,
                config.attribute_layers,
                config.attribute_dim,
                layers,
                width,
                heads=backbone.num_heads,
                attention=config.attribute_attention,
            )
            if self.method.uses_attributes and config.attributes
            else None
        )
        feature_dim = backbone.feature_dim
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if backbone.head_norm:
            head["norm"] = nn.LayerNorm(feature_dim)  # VideoMAE's fc_norm
        head["dropout"] = nn.Dropout(config.head_dropout)
        head["fc"] = nn.Linear(feature_dim, config.num_classes)
        self.head = nn.Sequential(head)
        nn.init.normal_(self.head.fc.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.fc.bias)

        tunable, total = self.parameter_counts()
        log.info(
            "model %s on %s (%s): %d tunable of %d parameters (%.2f%%)",
            config.method,
            config.backbone,
            config.backbone_family,
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
        dtype = self.backbone.dtype
        checked = {}
        for name in tokens.names:
            if name not in attributes:
                raise ValueError(
                    f"attribute '{name}' missing: model.method={self.config.method} with the attributes of `stage` needs "
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

    def frame_features(
        self, video: torch.Tensor, attributes: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Backbone features `[B, F, D_out]` (F = T frames on CLIP, 1 on VideoMAE); the frozen backbone's at init."""
        self._check_video(video)
        batch = video.shape[0]
        checked = self._check_attributes(attributes, batch)
        bb = self.backbone
        x = bb.embed(video, self.temporal_embedding)  # CLIP [B*T, 1+N, D]; VideoMAE [B, N, D]
        recompute = self.checkpointing and torch.is_grad_enabled()
        for i in range(bb.num_layers):
            if recompute:  # keep only each layer's input; its activations are recomputed in backward
                x = checkpoint(self._layer, i, x, batch, checked, use_reentrant=False)
            else:
                x = self._layer(i, x, batch, checked)
        return bb.features(x)  # [B, F, D_out]

    def _layer(
        self, i: int, x: torch.Tensor, batch: int, checked: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Backbone layer i with the method's module and extra tokens: tokens in, block, tokens out."""
        bb, provider = self.backbone, self.extra_tokens
        k, gate = 0, None
        if provider is not None:
            k = provider.num_tokens
            x = bb.insert_tokens(x, provider(i, batch, checked))  # k extra tokens in
            gate = provider.gate(i)
        x = self.layer_kind.run(bb, i, x, self.adapters[i] if self.adapters is not None else None, k, gate)
        return bb.drop_tokens(x, k)  # and out again

    @staticmethod
    def _time_embedding_init(config: ModelConfig, backbone: BlockBackbone) -> torch.Tensor:
        """`[T, D]`: zeros, or N(0, std) with std = `time_embedding_init` x the backbone's position RMS."""
        std = config.time_embedding_init * backbone.position_rms
        shape = (config.frames, backbone.width)
        return torch.randn(shape) * std if std > 0 else torch.zeros(shape)

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
            raise ValueError(f"attributes {missing} missing: model.method={self.config.method} needs {names}")
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
    family = get_family(cfg.backbone_family)
    return VideoClassifier(cfg, family.load(cfg.backbone, cfg.pretrained, cfg.frames, cfg.image_size))
