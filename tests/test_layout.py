"""dvc.yaml and the stages name the same artifact paths (stages/_layout.py), none of them per dataset."""

from __future__ import annotations

from pathlib import Path

import yaml

from stages._layout import ATTRIBUTES, CLASSES, INDEX, MODEL, MODEL_CARD, SHARDS

REPO = Path(__file__).resolve().parents[1]


def _paths(entries: list) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def test_dvc_yaml_writes_and_reads_the_layout_paths() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    outs = {name: _paths(stage.get("outs", [])) for name, stage in stages.items()}
    deps = {name: _paths(stage.get("deps", [])) for name, stage in stages.items()}
    written_by = {
        INDEX: "index",
        CLASSES: "index",
        SHARDS: "extract",
        ATTRIBUTES: "attributes",
        MODEL: "train",
        MODEL_CARD: "evaluate",
    }
    for path, stage in written_by.items():
        assert str(path) in outs[stage], (path, stage)
    read_by = {
        INDEX: ["extract"],
        CLASSES: ["train"],
        SHARDS: ["attributes", "train", "evaluate"],
        ATTRIBUTES: ["train", "evaluate"],
        MODEL: ["evaluate"],
    }
    for path, readers in read_by.items():
        assert [stage for stage in readers if str(path) in deps[stage]] == readers, path


def test_no_output_path_depends_on_the_dataset() -> None:
    """DVC checks out every output the lock records before an experiment runs: a path templated on
    `dataset.name` has no lock entry after `-S dataset.name=...`, and DVC warned "No file hash info
    found" for each (tests/test_pipeline.py runs the switch)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    declared = [
        path
        for stage in stages.values()
        for key in ("outs", "metrics", "plots")
        for path in _paths(stage.get(key, []))
    ]
    assert declared and not [path for path in declared if "dataset" in path]


def test_train_depends_on_every_model_key_it_reads_and_on_no_other_methods_section() -> None:
    """Every ModelConfig key is under a `model.*` entry the train stage lists, or under the method's own
    section `model.<method>` in methods.yaml (listed as `model.${model.method}`): a change to another
    method's keys, e.g. `-S methods.yaml:model.lora.targets=[q]` while training eva, re-runs nothing."""
    from eva.config import METHOD_SECTIONS, SIDE_FILES, section_keys
    from eva.methods import METHODS
    from eva.models import ModelConfig

    assert set(METHOD_SECTIONS) == set(METHODS)
    assert set(SIDE_FILES["methods.yaml"]) == {f"model.{m}" for m in METHODS}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    entries = stages["train"]["params"]
    listed = {p for p in entries if isinstance(p, str)}
    side = {name: keys for p in entries if isinstance(p, dict) for name, keys in p.items()}
    assert "model" not in listed and side["methods.yaml"] == ["model.${model.method}"]
    for key in section_keys(ModelConfig).values():
        top = key.split(".")[0]
        assert f"model.{top}" in listed or top in METHODS, f"the train stage does not depend on model.{key}"
    assert not any(p.split(".")[1] in METHODS for p in listed if p.startswith("model."))
