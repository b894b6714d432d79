"""Per-method optimisation recipes, as data: what each method's own paper trains it with.

A fair comparison trains every method the way its authors did. The one that matters most is
`full`: fine-tuning all of CLIP at the adapters' rate (1e-3) wrecks the pretrained features, so
its backbone weights get their own, much smaller `backbone_lr`. Each `Recipe` is one params.yaml
entry `train.recipes.<method>` (settable with `-S train.recipes.full.backbone_lr=...`);
`PUBLISHED_RECIPES` holds the published values with their sources, which params.yaml mirrors
(a test keeps the two equal). A recipe is plain data so that it can move into a method registry
entry unchanged.

Rates are those of the sources' own global batches (AIM 64, VPT 64-128, EVA 5-8 per GPU); scale
them with `train.batch_size` if yours differs much. The schedule (warmup, cosine, epochs) is shared
by all methods and lives in `train.*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class Recipe:
    """How one method is optimised: the new parameters at `lr`, pretrained backbone weights at `backbone_lr`."""

    name: str = "default"  # the method it belongs to (`train.recipes.<name>`)
    optimizer: str = "adamw"  # adamw | sgd (momentum `momentum`)
    lr: float = 1e-3  # adapters, prompts, attribute projections, time embedding, head
    backbone_lr: float = 0.0  # pretrained backbone weights; only `full` trains them
    weight_decay: float = 0.05  # on weight matrices only (biases, norms, embeddings, prompts: none)
    momentum: float = 0.9  # sgd only

    def __post_init__(self) -> None:
        key = f"train.recipes.{self.name}"
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"`{key}.optimizer` must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}"
            )
        for name in ("lr", "backbone_lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{key}.{name}` must be a number >= 0; got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.lr > 0:
            raise ValueError(f"`{key}.lr` must be > 0; got {self.lr}")
        if self.name == "full" and not self.backbone_lr > 0:
            raise ValueError(f"`{key}.backbone_lr` must be > 0: model.method=full trains the backbone")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], method: str) -> Recipe:
        """`train.recipes.<method>` of the whole params.yaml dict; unknown keys name themselves."""
        recipes = (params.get("train") or {}).get("recipes")
        if not isinstance(recipes, Mapping) or method not in recipes:
            raise KeyError(
                f"params.yaml has no key 'train.recipes.{method}' (the recipe of model.method={method})"
            )
        entry = dict(recipes[method] or {})
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(
                f"unknown keys {unknown} in `train.recipes.{method}`; expected some of {sorted(known)}"
            )
        return cls(name=method, **entry)

    def as_params(self) -> dict[str, Any]:
        """The params.yaml entry (without the name, which is the entry's key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


@dataclass(frozen=True)
class PublishedRecipe:
    recipe: Recipe
    source: str


PUBLISHED_RECIPES: dict[str, PublishedRecipe] = {
    "linear": PublishedRecipe(
        Recipe(name="linear", optimizer="sgd", lr=0.1, weight_decay=1e-4),
        "VPT's linear-probe baseline (KMnP/vpt configs/base-linear.yaml: SGD, momentum 0.9, weight decay "
        "1e-4; lr from its grid, 0.1 for CUB)",
    ),
    "vpt": PublishedRecipe(
        Recipe(name="vpt", optimizer="sgd", lr=0.1, weight_decay=1e-4),
        "VPT paper Sec. 4 / KMnP/vpt configs/base-prompt.yaml: SGD, momentum 0.9, weight decay 1e-4, "
        "lr from a grid (configs/prompt/cub.yaml: 0.1)",
    ),
    "aim": PublishedRecipe(
        Recipe(name="aim", optimizer="adamw", lr=3e-4, weight_decay=0.05),
        "AIM configs/recognition/vit/vitclip_base_k400.py: AdamW, lr 3e-4, weight decay 0.05, batch 64",
    ),
    "eva": PublishedRecipe(
        Recipe(name="eva", optimizer="adamw", lr=3e-4, weight_decay=0.05),
        "EVA trains the AIM block with attribute tokens: AIM's AdamW recipe (lr 3e-4, wd 0.05); the "
        "authors' released config (Rxn666/APT code/config_mae.yaml) uses AdamW 2e-4, wd 1e-3 at batch 5",
    ),
    "full": PublishedRecipe(
        Recipe(name="full", optimizer="adamw", lr=1e-3, backbone_lr=1e-5, weight_decay=0.05),
        "CLIP video fine-tuning practice: backbone weights at ~1e-5 (X-CLIP 8e-6 with 10x for new "
        "modules; FLYP / WiSE-FT 1e-5..3e-5, AdamW), the new head at the adapters' 1e-3",
    ),
}
