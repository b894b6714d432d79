"""Transitional: the recipes live in the method registry, `eva.methods` (`Recipe`, `PUBLISHED_RECIPES`,
`OPTIMIZERS`, `PublishedRecipe`). Only the committed eva/train/loop.py still imports `Recipe` from here;
delete this file once its import of `eva.methods` is committed."""

from __future__ import annotations

from eva.methods import OPTIMIZERS, PUBLISHED_RECIPES, PublishedRecipe, Recipe

__all__ = ["OPTIMIZERS", "PUBLISHED_RECIPES", "PublishedRecipe", "Recipe"]
