"""All of the params (params.yaml and its side files), and the input paths they name, checked at once:
what the `check` stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a typo found by the train stage
has already cost the last good model. The `check` stage runs first (every other stage depends on a
file it writes) and fails before any output is touched. It checks each section through its own config
class, the one path from the params to a config (`eva.config`: unknown keys rejected, every message
names its key), and that every local path the params name exists.

A path inside a folder the pipeline itself writes (`data/demo`, `pretrain.out`) is checked only once
that folder exists: on a fresh clone the stages that make it have not run yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eva import weights_io
from eva.config import check, invalid, value_at

SECTIONS = ("stage", "dataset", "demo", "pretrain", "extract", "attributes", "model", "train", "evaluate")


def config_sections(params: Mapping[str, Any]) -> list[tuple[type, str]]:
    """Every config class with the params section it reads: what `check_params` builds, one section each
    (`train.recipes.<method>` for every recipe). Each field carries its key's default and rule."""
    from eva.attributes.pipeline import AttributeConfig
    from eva.data.extract import ExtractConfig
    from eva.data.index import DatasetConfig
    from eva.demo.data import DemoConfig
    from eva.demo.pretrain.run import (
        CaptionerPretrainConfig,
        ClipPretrainConfig,
        PretrainConfig,
        VideoMAEStandInConfig,
    )
    from eva.evaluate import EvaluateConfig
    from eva.methods import Recipe
    from eva.models import ModelConfig
    from eva.train.config import TrainConfig

    recipes = [(Recipe, f"train.recipes.{name}") for name in value_at(params, "train.recipes")]
    return [
        (DatasetConfig, "dataset"),
        (DemoConfig, "demo"),
        (PretrainConfig, "pretrain"),
        (ClipPretrainConfig, "pretrain.clip"),
        (CaptionerPretrainConfig, "pretrain.captioner"),
        (VideoMAEStandInConfig, "pretrain.videomae"),
        (ExtractConfig, "extract"),
        (AttributeConfig, "attributes"),
        (ModelConfig, "model"),
        (TrainConfig, "train"),
        *recipes,
        (EvaluateConfig, "evaluate"),
    ]


def check_params(params: Mapping[str, Any]) -> None:
    """Every section through its config class; raises ValueError / KeyError naming the key."""
    from eva.attributes.pipeline import AttributeConfig
    from eva.data.attribute_store import STAGE
    from eva.data.extract import ExtractConfig
    from eva.data.index import DatasetConfig
    from eva.demo.data import DemoConfig
    from eva.demo.pretrain.run import PretrainConfig
    from eva.evaluate import EvaluateConfig
    from eva.methods import Recipe
    from eva.models import ModelConfig
    from eva.train.config import TrainConfig

    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ValueError(
            f"unknown top-level keys {unknown} in params.yaml; expected some of {list(SECTIONS)}"
        )
    check("stage", value_at(params, "stage"), STAGE)
    DatasetConfig.from_params(params)  # the official split too, for ucf101 / hmdb51
    DemoConfig.from_params(params)
    PretrainConfig.from_params(params)
    extract = ExtractConfig.from_params(params)
    AttributeConfig.from_params(params)
    model = ModelConfig.from_params(params, num_classes=1)  # the class count comes from the data
    model.validate()
    TrainConfig.from_params(params)
    for method in value_at(params, "train.recipes"):  # every recipe, not only the one training reads now
        Recipe.from_params(params, method)
    EvaluateConfig.from_params(params)
    check_sampling(model, extract)


def check_sampling(model: Any, extract: Any) -> None:
    """Dense sampling reads frames stored at a stride (`extract.frame_stride`) that divides its interval."""
    if model.sampling != "dense":
        return
    stride = extract.frame_stride
    if stride < 1:
        raise invalid(
            "extract.frame_stride",
            "a stride >= 1 for model.sampling=dense (segment centres have no constant interval)",
            stride,
        )
    if model.frame_interval % stride:
        raise invalid(
            "model.frame_interval",
            f"a multiple of extract.frame_stride ({stride}) for model.sampling=dense",
            model.frame_interval,
        )


def _made_by_pipeline(path: Path, produced: Iterable[Path]) -> bool:
    """Whether `path` lies in a folder a stage writes that does not exist yet."""
    resolved = path.resolve()
    return any(
        not folder.exists() and resolved.is_relative_to(folder.resolve()) for folder in map(Path, produced)
    )


def _must_exist(key: str, value: str, produced: Iterable[Path], *, kind: str = "path") -> None:
    path = Path(value).expanduser()
    if path.exists() or _made_by_pipeline(path, produced):
        return
    raise FileNotFoundError(f"`{key}`: {kind} '{value}' does not exist (dvc exp run -S {key}=...)")


def check_inputs(params: Mapping[str, Any], produced: Iterable[Path] = ()) -> None:
    """The dataset root and annotation files (read, not just listed) and the vocabulary; the weights
    are `check_weights`, which the check stage runs first (it needs no model code).

    Raises FileNotFoundError naming the key. `produced`: folders the pipeline writes (see module doc).
    """
    from eva.data.index import DatasetConfig, build_index

    produced = [Path(p) for p in produced]
    dataset = DatasetConfig.from_params(params)
    _must_exist("dataset.root", dataset.root, produced, kind="folder")
    if dataset.annotations:
        _must_exist("dataset.annotations", dataset.annotations, produced, kind="folder")
    if dataset.class_list:
        _must_exist("dataset.class_list", dataset.class_list, produced, kind="file")
    ready = not any(
        _made_by_pipeline(Path(p), produced) for p in (dataset.root, dataset.annotations or dataset.root)
    )
    if ready:  # the annotation files parse and name at least one clip (no video is opened)
        build_index(
            dataset.name,
            dataset.root,
            dataset.annotations or "",
            dataset.split,
            dataset.class_list,
            val_fraction=dataset.val_fraction,
            check_exists=False,
        )
    _must_exist(
        "attributes.label.vocabulary", value_at(params, "attributes.label.vocabulary"), produced, kind="file"
    )


def check_weights(params: Mapping[str, Any], produced: Iterable[Path] = ()) -> None:
    """Every model source the params name is here (`eva.weights_io.missing`: local paths always, hub
    names when offline, as the stages run), else the message names the key and the fetch command.

    Needs no torch: the check stage runs it first, so a missing weight is reported in seconds.
    """
    problems = weights_io.missing(params, skip=tuple(p for p in map(Path, produced) if not p.exists()))
    if problems:
        raise FileNotFoundError("\n".join(problems))
