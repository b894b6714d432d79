"""Folder datasets: a stratified, deterministic train/val split, and DVC seeing videos come and go."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eva.config import SIDE_FILES
from eva.data.index import build_index, stratified_split

REPO = Path(__file__).resolve().parents[1]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(path.name.encode())  # distinct bytes: DVC hashes content
    return path


def make_folder(root: Path, per_class: dict[str, int]) -> Path:
    for cls, n in per_class.items():
        for i in range(n):
            touch(root / cls / f"{cls}_{i:02d}.avi")
    return root


def split_counts(result) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in result.table.to_pylist():
        counts.setdefault(row["label_name"], {"train": 0, "val": 0})[row["split"]] += 1
    return counts


def test_every_class_gets_train_and_val_videos(tmp_path: Path) -> None:
    """10 clips in 3 classes (the case a per-file hash got wrong): each class is in both splits."""
    root = make_folder(tmp_path / "videos", {"jump": 4, "run": 4, "wave": 2})
    result = build_index("folder", root, "", val_fraction=0.2)
    assert split_counts(result) == {
        "jump": {"train": 3, "val": 1},  # round(4 * 0.2) = 1
        "run": {"train": 3, "val": 1},
        "wave": {"train": 1, "val": 1},  # round(0.4) = 0, raised to 1: a class needs a val video
    }
    assert result.metrics()["classes_without"] == {
        "train": {"count": 0, "classes": []},
        "val": {"count": 0, "classes": []},
    }


def test_val_fraction_sets_exact_counts_per_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "videos", {"a": 10, "b": 20, "c": 7})
    counts = split_counts(build_index("folder", root, "", val_fraction=0.3))
    assert {c: v["val"] for c, v in counts.items()} == {"a": 3, "b": 6, "c": 2}
    assert {c: v["train"] for c, v in counts.items()} == {"a": 7, "b": 14, "c": 5}


def test_split_is_deterministic_and_moves_one_video_at_most_when_one_is_added() -> None:
    rels = [f"cls/v{i:03d}.mp4" for i in range(40)]
    split = stratified_split(rels, 0.25)
    assert split == stratified_split(list(reversed(rels)), 0.25)  # listing order does not matter
    assert sum(s == "val" for s in split.values()) == 10
    grown = stratified_split([*rels, "cls/v999.mp4"], 0.25)
    moved = [r for r in rels if grown[r] != split[r]]
    assert len(moved) <= 1


def test_class_without_val_is_a_warning_and_a_metric(tmp_path: Path, caplog) -> None:
    root = make_folder(tmp_path / "videos", {"jump": 5, "solo": 1})
    with caplog.at_level(logging.WARNING, logger="eva.data.index"):
        result = build_index("folder", root, "", val_fraction=0.2)
    assert result.metrics()["classes_without"]["val"] == {"count": 1, "classes": ["solo"]}
    assert result.metrics()["classes_without"]["train"] == {"count": 0, "classes": []}
    assert any("no val video" in r.getMessage() and "solo" in r.getMessage() for r in caplog.records)


def test_split_lists_win_and_their_gaps_are_reported(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "videos", {"jump": 2, "run": 2})
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("jump/jump_00.avi\nrun/run_00.avi\nrun/run_01.avi\n")
    (lists / "val.txt").write_text("jump/jump_01.avi\n")
    result = build_index("folder", root, lists, val_fraction=0.5)
    assert split_counts(result) == {"jump": {"train": 1, "val": 1}, "run": {"train": 2, "val": 0}}
    assert result.metrics()["classes_without"]["val"] == {"count": 1, "classes": ["run"]}


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.2", True])
def test_bad_val_fraction_names_the_param(tmp_path: Path, bad: object) -> None:
    root = make_folder(tmp_path / "videos", {"a": 2})
    with pytest.raises(ValueError, match=r"dataset\.val_fraction"):
        build_index("folder", root, "", val_fraction=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dvc


def _dvc(project: Path, *args: str) -> str:
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "DVC_NO_ANALYTICS": "1",
    }
    proc = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_dvc_sees_videos_added_and_removed_with_empty_annotations(tmp_path: Path) -> None:
    """The real dvc.yaml on folder data with `dataset.annotations: ""`: repro works, status tracks videos."""
    project = tmp_path / "project"
    for package in ("stages", "eva"):  # the check stage depends on both, and lists the index stage's code
        shutil.copytree(REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in ("dvc.yaml", "params.yaml", *SIDE_FILES):
        shutil.copy2(REPO / rel, project / rel)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset"].update(name="folder", root="videos", annotations="")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    make_folder(project / "videos", {"jump": 3, "run": 3})
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    _dvc(project, "init", "-q")

    _dvc(project, "repro", "index")
    assert (project / "data/index/videos.parquet").is_file()
    assert "up to date" in _dvc(project, "status", "index")

    touch(project / "videos" / "run" / "run_99.avi")
    status = _dvc(project, "status", "index")
    assert "index:" in status and "modified:" in status and "videos" in status
    _dvc(project, "repro", "index")
    assert "up to date" in _dvc(project, "status", "index")

    (project / "videos" / "jump" / "jump_00.avi").unlink()
    status = _dvc(project, "status", "index")
    assert "index:" in status and "modified:" in status and "videos" in status
