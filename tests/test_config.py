"""params.yaml sections -> configs: one mechanism, unknown keys rejected, every message names the key."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from eva.attributes.pipeline import AttributeConfig
from eva.config import SIDE_FILES, load_params, params_file, value_at
from eva.data.extract import ExtractConfig
from eva.data.index import DatasetConfig
from eva.demo.data import DemoConfig
from eva.demo.pretrain.run import PretrainConfig
from eva.evaluate import EvaluateConfig
from eva.methods import Recipe
from eva.models import ModelConfig
from eva.params import check_params, config_sections
from eva.train.config import TrainConfig

PARAMS = load_params(Path(__file__).parents[1] / "params.yaml")

# section -> how its stage builds the config from the whole params dict
BUILDERS: dict[str, Callable[[dict], Any]] = {
    "dataset": DatasetConfig.from_params,
    "demo": DemoConfig.from_params,
    "pretrain": PretrainConfig.from_params,
    "extract": ExtractConfig.from_params,
    "attributes": AttributeConfig.from_params,
    "model": lambda p: ModelConfig.from_params(p, num_classes=3),
    "train": TrainConfig.from_params,
    "evaluate": EvaluateConfig.from_params,
}


def _set(params: dict, dotted: str, value: object) -> dict:
    params = copy.deepcopy(params)
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return params


def test_every_section_of_params_yaml_has_a_config() -> None:
    assert set(PARAMS) - {"stage"} == set(BUILDERS)
    for section, build in BUILDERS.items():
        assert build(PARAMS) is not None, section


def test_the_shipped_params_build_the_configs() -> None:
    model = ModelConfig.from_params(PARAMS, num_classes=7)
    assert (model.method, model.num_classes, model.backbone_family) == ("eva", 7, "open_clip")
    assert model.lora_targets == tuple(PARAMS["model"]["lora"]["targets"])
    assert model.adaptformer_bottleneck == PARAMS["model"]["adaptformer"]["bottleneck"]
    train = TrainConfig.from_params(PARAMS)
    assert train.epochs == PARAMS["train"]["epochs"] and train.recipe.name == "eva"
    extract = ExtractConfig.from_params(PARAMS)
    assert extract.frames_per_video == PARAMS["extract"]["frames_per_video"]
    attributes = AttributeConfig.from_params(PARAMS)
    assert attributes.clip_model == PARAMS["attributes"]["clip"]["model"]
    assert attributes.mask_method == PARAMS["attributes"]["mask"]["method"]
    pretrain = PretrainConfig.from_params(PARAMS)
    videomae = PARAMS["pretrain"]["videomae"]
    assert pretrain.clip.vision_width == PARAMS["pretrain"]["clip"]["width"]
    assert (pretrain.videomae.frames, pretrain.videomae.image_size) == (
        videomae["frames"],
        PARAMS["pretrain"]["image_size"],
    )
    assert pretrain.max_new_tokens == PARAMS["attributes"]["caption"]["max_new_tokens"]


@pytest.mark.parametrize(
    "key",
    [
        "dataset.nmae",
        "demo.train_per_clas",
        "pretrain.held_outt",
        "pretrain.clip.stepz",  # nested sections reject typos too
        "pretrain.captioner.lrr",
        "pretrain.videomae.frame",
        "extract.frames_per_vido",
        "attributes.clip.modle",
        "attributes.keyframe",
        "model.adaptr.ratio",
        "model.lora.ranks",
        "train.lr",  # lr lives in train.recipes.<method>
        "train.recipes.eva.betas",
        "train.lr_scale.adam",
        "evaluate.clip",
    ],
)
def test_an_unknown_key_is_an_error_naming_it(key: str) -> None:
    """... and the file it is in: model.lora.ranks is a methods.yaml typo, train.recipes.* recipes.yaml's."""
    file = params_file(key)
    assert file == {"model.lora.ranks": "methods.yaml", "train.recipes.eva.betas": "recipes.yaml"}.get(
        key, {"demo": "demo.yaml", "pretrain": "pretrain.yaml"}.get(key.split(".")[0], "params.yaml")
    )
    with pytest.raises(ValueError, match=rf"unknown keys \['{re.escape(key)}'\] in {re.escape(file)} "):
        BUILDERS[key.split(".")[0]](_set(PARAMS, key, 1))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("dataset.name", "kinetics", "one of demo, ucf101"),
        ("dataset.val_fraction", 1.0, "a number >= 0 and < 1"),
        ("demo.frames", 3, "an integer >= 4"),
        ("demo.size", 63, "even"),
        ("pretrain.seed", -1, "an integer >= 0"),
        ("pretrain.clip.steps", 0, "an integer >= 1"),
        ("pretrain.captioner.lr", 0.0, "a number > 0"),
        ("pretrain.videomae.frames", 7, "a multiple of `pretrain.videomae.tubelet` (2)"),
        ("extract.jpeg_quality", 101, "an integer in 1..100"),
        ("extract.keep_truncated", "yes", "true or false"),
        ("attributes.keyframes", 0, "an integer >= 1"),
        ("attributes.mask.method", "blur", "one of median, center"),
        ("model.frames", 0, "an integer >= 1"),
        ("model.drop_path", 1.0, "a number >= 0 and < 1"),
        ("model.method", "adapters", "one of linear"),
        ("train.epochs", 0, "an integer >= 1"),
        ("train.crop_scale", [0.9, 0.5], "[min, max] area fractions"),
        ("train.recipes.eva.optimizer", "adam", "one of adamw, sgd"),
        ("train.lr_scale.adamw", 0, "a number > 0"),
        ("evaluate.crops", 0, "an integer >= 1"),
        ("evaluate.workers", -1, "an integer >= 0 (DataLoader worker processes per rank)"),
        ("train.decode", "gpu", "one of cpu, device"),
        ("evaluate.decode", "cuda", "one of cpu, device"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_key(key: str, value: object, expected: str) -> None:
    params = _set(PARAMS, key, value)

    def build() -> Any:
        config = BUILDERS[key.split(".")[0]](params)
        if isinstance(config, ModelConfig):
            config.validate()  # the train stage validates the model before building it
        return config

    with pytest.raises(
        ValueError,
        match=rf"^`{re.escape(key)}` must be {re.escape(expected)}.*; got {re.escape(repr(value))}$",
    ):
        build()


def test_a_missing_key_names_itself() -> None:
    params = copy.deepcopy(PARAMS)
    del params["model"]["backbone"]["family"]
    with pytest.raises(KeyError, match=r"`model\.backbone\.family`"):
        ModelConfig.from_params(params, num_classes=3)
    del params["train"]["recipes"]["eva"]
    with pytest.raises(KeyError, match=r"`train\.recipes\.eva`"):
        TrainConfig.from_params(params)
    params = copy.deepcopy(PARAMS)
    del params["pretrain"]["videomae"]["tubelet"]
    with pytest.raises(KeyError, match=r"`pretrain\.videomae\.tubelet`"):
        PretrainConfig.from_params(params)


def test_a_recipe_keeps_its_method_name_in_messages() -> None:
    with pytest.raises(ValueError, match=r"^`train\.recipes\.full\.lr` must be a number > 0; got 0$"):
        Recipe(name="full", lr=0)


@pytest.mark.parametrize(("method", "optimizer"), [("eva", "adamw"), ("linear", "sgd"), ("full", "adamw")])
def test_lr_scale_multiplies_the_recipe_of_its_optimiser_only(method: str, optimizer: str) -> None:
    params = _set(
        _set(_set(PARAMS, "model.method", method), "train.lr_scale.adamw", 10.0), "train.lr_scale.sgd", 0.5
    )
    train = TrainConfig.from_params(params)
    published = params["train"]["recipes"][method]
    factor = {"adamw": 10.0, "sgd": 0.5}[optimizer]
    assert train.recipe.lr == published["lr"]  # the record keeps the recipe as written
    assert train.scaled_recipe.lr == pytest.approx(published["lr"] * factor)
    assert train.scaled_recipe.backbone_lr == pytest.approx(published["backbone_lr"] * factor)
    assert train.scaled_recipe.optimizer == optimizer


@pytest.mark.parametrize("name", ["params.yaml", *SIDE_FILES])
def test_params_files_are_written_as_dvc_writes_them_back(name: str) -> None:
    """`dvc exp run -S k=v` (or `-S recipes.yaml:k=v`) rewrites a params file through DVC's YAML round
    trip: with an unchanged value the file must stay byte-identical (no quoting, wrapping or list-style
    churn in `git diff`)."""
    import shutil
    import tempfile

    import yaml
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls

    from eva.preset import leaves

    source = Path(__file__).resolve().parents[1] / name
    key, value = next(leaves(yaml.safe_load(source.read_text(encoding="utf-8"))))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / name
        shutil.copy(source, copy)
        apply_overrides(copy, [f"{key}={value}"])
        assert copy.read_bytes() == source.read_bytes()


def test_params_read_exponent_floats_as_dvc_writes_them() -> None:
    # `dvc exp run -S train.recipes.eva.eps=1e-6` stores `1e-06`: YAML 1.1 (plain PyYAML) reads a string.
    from eva.config import read_yaml

    assert read_yaml("a: 1e-06\nb: 1.0e-08\nc: -2E+3\nd: 1e3x\ne: 12\n") == {
        "a": 1e-06, "b": 1e-08, "c": -2000.0, "d": "1e3x", "e": 12,
    }  # fmt: skip


def _default(f: Any) -> Any:
    value = f.default if f.default is not MISSING else f.default_factory()
    return list(value) if isinstance(value, tuple) else value


def _ruled_keys(params: dict) -> list[tuple[str, Any]]:
    """(dotted key, rule) of every params key whose config field carries a rule."""
    out = []
    for cls, section in config_sections(params):
        for f in fields(cls):
            if f.metadata.get("derived") or "rule" not in f.metadata:
                continue
            out.append((f"{section}.{f.metadata.get('key', f.name)}", f.metadata["rule"]))
    return out


def test_each_key_has_one_default_the_params_files_value() -> None:
    """A config field's default is the value params.yaml (or its side file) holds: one value per key.

    A recipe's values come from the method registry (eva.methods.PUBLISHED_RECIPES, which
    recipes.yaml mirrors: tests/test_train.py checks each recipe against it), not from Recipe's defaults.
    """
    params = copy.deepcopy(PARAMS)
    differ = []
    for cls, section in config_sections(params):
        if cls is Recipe:
            continue
        for f in fields(cls):
            if f.metadata.get("derived") or (f.default is MISSING and f.default_factory is MISSING):
                continue
            key = f"{section}.{f.metadata.get('key', f.name)}"
            if _default(f) != value_at(params, key):
                differ.append(f"{key}: field {_default(f)!r}, params {value_at(params, key)!r}")
    assert differ == []


BAD_VALUES = ([], "bogus", -(10**9), 10**9, 0.5, True, None)


def test_every_ruled_key_stops_the_check_stage_naming_itself() -> None:
    """For each key with a rule: a value its rule refuses fails `check_params` (the check stage, before
    DVC removes any output) with the key's name; tests/test_pipeline.py does a few through `dvc exp run`."""
    params = copy.deepcopy(PARAMS)
    ruled = _ruled_keys(params)
    assert len(ruled) > 90 and "model.lora.targets" in dict(ruled) and "model.method" in dict(ruled)
    for key, rule in ruled:
        bad = next(v for v in BAD_VALUES if not rule.ok(v))
        broken = copy.deepcopy(params)
        *parents, last = key.split(".")
        node = broken
        for part in parents:
            node = node[part]
        node[last] = bad
        with pytest.raises((ValueError, KeyError), match=re.escape(f"`{key}`")):
            check_params(broken)
