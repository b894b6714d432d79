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
