"""params.yaml sections -> configs: one mechanism, unknown keys rejected, every message names the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from eva.models import ModelConfig
from eva.params import load_params
from eva.train.loop import TrainConfig

PARAMS = load_params(Path(__file__).parents[1] / "params.yaml")


def test_the_shipped_params_build_both_configs() -> None:
    model = ModelConfig.from_params(PARAMS, num_classes=7)
    assert (model.method, model.num_classes, model.backbone_family) == ("eva", 7, "open_clip")
    assert model.lora_targets == tuple(PARAMS["model"]["lora"]["targets"])
    assert model.adaptformer_bottleneck == PARAMS["model"]["adaptformer"]["bottleneck"]
    train = TrainConfig.from_params(PARAMS)
    assert train.epochs == PARAMS["train"]["epochs"] and train.recipe.name == "eva"


@pytest.mark.parametrize(
    ("section", "path", "value", "named"),
    [
        ("model", ("adaptr", "ratio"), 0.5, "model.adaptr.ratio"),  # a typo in a nested key
        ("model", ("lora", "ranks"), 4, "model.lora.ranks"),
        ("train", ("lr",), 0.1, "train.lr"),  # lr lives in train.recipes.<method>
    ],
)
def test_an_unknown_key_is_an_error_naming_it(section: str, path: tuple, value: object, named: str) -> None:
    params = copy.deepcopy(PARAMS)
    node = params[section]
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    build = (
        (lambda: ModelConfig.from_params(params, num_classes=3))
        if section == "model"
        else (lambda: TrainConfig.from_params(params))
    )
    with pytest.raises(ValueError, match=rf"unknown keys \['{named}'\]"):
        build()


def test_a_missing_key_names_itself() -> None:
    params = copy.deepcopy(PARAMS)
    del params["model"]["backbone"]["family"]
    with pytest.raises(KeyError, match=r"model\.backbone\.family"):
        ModelConfig.from_params(params, num_classes=3)
