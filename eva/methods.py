"""The adaptation methods as data: one registry entry per `model.method`.

An entry says what the method adds to a frozen backbone, what trains, and how its authors
optimise it. Everything that used to test `method == "..."` (the classifier, the trainer,
evaluation, the model card, the results table) reads these fields instead, so a new method is a
new entry plus, at most, a new layer kind in `eva.models.classifier.LAYER_KINDS`.

    layer        what runs in every backbone block: frozen | aim (AIM/EVA adapters) | adaptformer | lora
    tokens       extra tokens entering every block: none | prompts (VPT-deep) | attributes (EVA)
    trains_backbone  the pretrained weights train too (`full`; at the recipe's `backbone_lr`)
    layouts      the adapter layout per backbone family (gate adapter, joint-adapter scale), for
                 layer == aim: what `model.adapter.gate: auto` / `.scale: auto` mean
    recipe       the published optimisation recipe, mirrored by recipes.yaml `train.recipes.<name>`

Recipes are those of the sources' own global batches (AIM 64, VPT 64-128, EVA 5-8 per GPU,
AdaptFormer 0.1 per 256 videos); scale them with `train.batch_size` if yours differs much. The
schedule (warmup, cosine, epochs) is shared by all methods and lives in `train.*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from eva.config import check_fields, derived, invalid, number, one_of, section_values, setting

OPTIMIZERS = ("adamw", "sgd")
LAYER_KINDS = ("frozen", "aim", "adaptformer", "lora")
TOKEN_KINDS = ("none", "prompts", "attributes")


@dataclass(frozen=True)
class Recipe:
    """How one method is optimised: the new parameters at `lr`, pretrained backbone weights at `backbone_lr`."""

    name: str = derived(default="default")  # the method it belongs to (`train.recipes.<name>`)
    optimizer: str = setting(default="adamw", rule=one_of(*OPTIMIZERS))  # adamw | sgd (momentum `momentum`)
    lr: float = setting(default=1e-3, rule=number(above=0))  # adapters, prompts, attribute projections, head
    # pretrained backbone weights; only methods that train the backbone use it
    backbone_lr: float = setting(default=0.0, rule=number(0))
    # on weight matrices only (biases, norms, embeddings, prompts: none; prompts too with train.decay_prompts)
    weight_decay: float = setting(default=0.05, rule=number(0))
    momentum: float = setting(default=0.9, rule=number(0))  # sgd only
    eps: float = setting(default=1e-8, rule=number(above=0))  # adamw only: the denominator's epsilon

    def __post_init__(self) -> None:
        check_fields(self, f"train.recipes.{self.name}")
        for name in ("lr", "backbone_lr", "weight_decay", "momentum", "eps"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], method: str) -> Recipe:
        """`train.recipes.<method>` of the whole params dict (`eva.config.load_params`); unknown keys name themselves."""
        entry = get_method(method)  # an unknown `model.method` is named before the recipe it selects
        recipe = cls(name=method, **section_values(cls, params, f"train.recipes.{method}"))
        if entry.trains_backbone and not recipe.backbone_lr > 0:
            raise invalid(
                f"train.recipes.{method}.backbone_lr",
                f"> 0: model.method={method} trains the backbone",
                recipe.backbone_lr,
            )
        return recipe

    def scaled(self, factor: float) -> Recipe:
        """This recipe with `lr` and `backbone_lr` multiplied by `factor` (`train.lr_scale`)."""
        return replace(self, lr=self.lr * factor, backbone_lr=self.backbone_lr * factor)

    def as_params(self) -> dict[str, Any]:
        """The params.yaml entry (without the name, which is the entry's key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


@dataclass(frozen=True)
class PublishedRecipe:
    recipe: Recipe
    source: str


@dataclass(frozen=True)
class AdapterLayout:
    """A method's published adapter layout: what `model.adapter.gate: auto` / `.scale: auto` mean."""

    gate: bool  # the gate adapter (AIM's T_Adapter_in) before the temporal attention
    scale: float  # s, the joint adapter's weight next to the MLP
    source: str


@dataclass(frozen=True)
class Method:
    """One `model.method`: what it adds, what trains, how it is optimised (see the module docstring)."""

    name: str
    summary: str  # one line for the model card and README
    layer: str = "frozen"  # LAYER_KINDS
    tokens: str = "none"  # TOKEN_KINDS
    trains_backbone: bool = False
    layouts: Mapping[str, AdapterLayout] = field(default_factory=dict)  # backbone family -> layout
    recipe: PublishedRecipe | None = None

    def __post_init__(self) -> None:
        if self.layer not in LAYER_KINDS or self.tokens not in TOKEN_KINDS:
            raise ValueError(f"method entry {self.name!r}: layer {self.layer!r}, tokens {self.tokens!r}")

    @property
    def uses_attributes(self) -> bool:
        """Reads the attributes stage's output (so `stage` selects its attributes)."""
        return self.tokens == "attributes"

    def layout(self, family: str) -> AdapterLayout:
        """The adapter layout on backbone `family` (the default entry when the family has none of its own)."""
        if family in self.layouts:
            return self.layouts[family]
        return self.layouts["default"]


_AIM_LAYOUT = AdapterLayout(
    gate=False,
    scale=0.5,
    source="AIM ViT-B/16 K400 config (vitclip_base_k400.py: adapter_scale=0.5, one temporal adapter); "
    "AIM uses the gate only for SSv2, with scale 1",
)
_EVA_LAYOUT = AdapterLayout(
    gate=True,
    scale=1.0,
    source="EVA paper Fig. 1e (temporal + gate adapter); the authors' blocks (Rxn666/APT "
    "PromptAIMblock.py / promptmae.py) default to num_tadapter=2, scale=1 (on CLIP and on VideoMAE)",
)

_ENTRIES = (
    Method(
        name="linear",
        summary="linear probe: frozen backbone, trained head",
        recipe=PublishedRecipe(
            Recipe(name="linear", optimizer="sgd", lr=0.1, weight_decay=1e-4),
            "VPT's linear-probe baseline (KMnP/vpt configs/base-linear.yaml: SGD, momentum 0.9, weight "
            "decay 1e-4; lr from its grid, 0.1 for CUB)",
        ),
    ),
    Method(
        name="vpt",
        summary="VPT-deep: learnable prompt tokens entering every frozen block",
        tokens="prompts",
        recipe=PublishedRecipe(
            Recipe(name="vpt", optimizer="sgd", lr=0.1, weight_decay=1e-4),
            "VPT paper Sec. 4 / KMnP/vpt configs/base-prompt.yaml: SGD, momentum 0.9, weight decay 1e-4, "
            "lr from a grid (configs/prompt/cub.yaml: 0.1)",
        ),
    ),
    Method(
        name="aim",
        summary="AIM: temporal, spatial and joint adapters around the frozen attention and MLP",
        layer="aim",
        layouts={"default": _AIM_LAYOUT},
        recipe=PublishedRecipe(
            Recipe(name="aim", optimizer="adamw", lr=3e-4, weight_decay=0.05),
            "AIM configs/recognition/vit/vitclip_base_k400.py: AdamW, lr 3e-4, weight decay 0.05, batch 64",
        ),
    ),
    Method(
        name="eva",
        summary="EVA: AIM adapters plus hierarchical video-attribute tokens in every block",
        layer="aim",
        tokens="attributes",
        layouts={"default": _EVA_LAYOUT},
        recipe=PublishedRecipe(
            Recipe(name="eva", optimizer="adamw", lr=3e-4, weight_decay=0.05),
            "EVA trains the AIM block with attribute tokens: AIM's AdamW recipe (lr 3e-4, wd 0.05); the "
            "authors' released config (Rxn666/APT code/config_mae.yaml) uses AdamW 2e-4, wd 1e-3 at batch 5",
        ),
    ),
    Method(
        name="full",
        summary="full fine-tuning: every backbone weight trains (on CLIP frame-level: AIM Table 1, space only)",
        trains_backbone=True,
        recipe=PublishedRecipe(
            Recipe(name="full", optimizer="adamw", lr=1e-3, backbone_lr=1e-5, weight_decay=0.05),
            "CLIP video fine-tuning practice: backbone weights at ~1e-5 (X-CLIP 8e-6 with 10x for new "
            "modules; FLYP / WiSE-FT 1e-5..3e-5, AdamW), the new head at the adapters' 1e-3",
        ),
    ),
    Method(
        name="adaptformer",
        summary="AdaptFormer: a scaled bottleneck branch parallel to every frozen MLP",
        layer="adaptformer",
        recipe=PublishedRecipe(
            Recipe(name="adaptformer", optimizer="sgd", lr=0.1, weight_decay=0.0),
            "AdaptFormer README / main_video.py (ShoufaChen/AdaptFormer): SGD, momentum 0.9, weight decay 0, "
            "base lr 0.1 per 256 videos (lr = blr * batch / 256; 0.4 at their global batch 1024)",
        ),
    ),
    Method(
        name="lora",
        summary="LoRA: low-rank deltas on the frozen attention projections",
        layer="lora",
        recipe=PublishedRecipe(
            Recipe(name="lora", optimizer="adamw", lr=3e-4, weight_decay=0.05),
            "no published video recipe for LoRA on these backbones: AdamW at AIM's rate and decay, inside "
            "the LoRA paper's AdamW range (Hu et al. 2021, App. D: lr 2e-4..5e-4)",
        ),
    ),
)

METHODS: dict[str, Method] = {entry.name: entry for entry in _ENTRIES}


def get_method(name: str) -> Method:
    """The registry entry of `model.method`; an unknown name is a user error naming the param."""
    if name not in METHODS:
        raise invalid("model.method", f"one of {', '.join(METHODS)}", name)
    return METHODS[name]


PUBLISHED_RECIPES: dict[str, PublishedRecipe] = {
    name: entry.recipe for name, entry in METHODS.items() if entry.recipe is not None
}
