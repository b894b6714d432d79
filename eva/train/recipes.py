"""Per-method optimisation recipes: they live in the method registry (`eva.methods`).

Each `Recipe` is one entry `train.recipes.<method>` of recipes.yaml, beside params.yaml (settable with
`-S recipes.yaml:train.recipes.full.backbone_lr=...`); `PUBLISHED_RECIPES` holds the published values
with their sources, which recipes.yaml mirrors (a test keeps the two equal). Re-exported here for the
trainer's callers.
"""

from __future__ import annotations

from eva.methods import OPTIMIZERS, PUBLISHED_RECIPES, PublishedRecipe, Recipe

__all__ = ["OPTIMIZERS", "PUBLISHED_RECIPES", "PublishedRecipe", "Recipe"]
