"""Presets: each sets every key the demo changes, to the published setup's values, and applying one
writes params.yaml the way `dvc exp run -S` does (a preset then `demo` gives back the same bytes)."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest

from eva import preset
from eva.config import SIDE_FILES, load_params, params_file
from eva.params import check_params

REPO = Path(__file__).resolve().parents[1]
REAL = [n for n in preset.names() if n != "demo"]
CLIP_PRESETS = ("ucf101", "hmdb51", "ssv2", "k400")
VIDEOMAE_PRESETS = ("ucf101-videomae", "hmdb51-videomae")


def keys(name: str) -> set[str]:
    return {k for k, _ in preset.leaves(preset.resolve(name))}


def values(name: str) -> dict[str, object]:
    return dict(preset.leaves(preset.resolve(name)))


def test_the_published_setups_are_there() -> None:
    assert set(CLIP_PRESETS + VIDEOMAE_PRESETS) <= set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_each_preset_sets_exactly_the_keys_the_demo_sets(name: str) -> None:
    """So `python -m eva.preset demo` undoes any preset, and no demo setting leaks into a real run."""
    assert keys(name) == keys("demo")


def test_the_demo_preset_is_the_committed_params() -> None:
    assert preset.changes(load_params(REPO / "params.yaml"), preset.resolve("demo")) == []


@pytest.mark.parametrize("name", CLIP_PRESETS)
def test_clip_presets_follow_aim(name: str) -> None:
    v = values(name)
    assert v["model.backbone.family"] == "open_clip"
    assert (
        v["model.backbone.name"]
        == v["attributes.clip.model"]
        == "local-dir:weights/open_clip/ViT-B-16/openai"
    )
    assert (v["model.frames"], v["model.image_size"], v["model.drop_path"]) == (8, 224, 0.2)
    assert v["model.time_embedding_init"] == 0.0  # AIM's zero init
    assert v["train.lr_scale.adamw"] == v["train.lr_scale.sgd"] == 1.0
    assert (v["train.batch_size"], v["train.warmup_epochs"]) == (64, 2.5)
    assert v["train.label_smoothing"] == (0.1 if name == "ssv2" else 0.0)  # AIM: smoothing on SSv2 only
    assert (v["evaluate.clips"], v["evaluate.crops"]) == ((1, 3) if name == "ssv2" else (3, 1))
    assert v["attributes.label.vocabulary"] != "eva/resources/demo_shapes.txt"
    assert v["train.flip"] is (name != "ssv2")  # left/right is SSv2's label
    assert v["dataset.name"] == name


@pytest.mark.parametrize("name", REAL)
def test_extraction_stores_more_frames_than_the_model_takes(name: str) -> None:
    """Training clips jitter in time and the evaluation clips differ only when stored frames > T."""
    v = values(name)
    assert v["extract.frames_per_video"] >= 3 * v["model.frames"]


@pytest.mark.parametrize("name", VIDEOMAE_PRESETS)
def test_videomae_presets_are_the_eva_authors_configuration(name: str) -> None:
    v = values(name)
    assert v["model.backbone.family"] == "videomae" and v["model.frames"] == 16
    assert (v["model.eva.attribute_projection"], v["model.eva.attribute_attention"]) == ("none", "joint")


# ----------------------------------------------------------------------------- the reference table


def test_every_preset_is_checked_against_one_published_setup() -> None:
    table = preset.reference_table()
    covered = [
        n for setup in table["setups"].values() for n in (*setup["presets"], *setup.get("derived", ()))
    ]
    assert sorted(covered) == sorted(REAL)  # each real preset once
    for setup in table["setups"].values():
        assert setup["source"] in table["sources"] and setup["values"]
        for row in (*setup["values"], *setup.get("missing", ())):
            assert row.get("source", setup["source"]) in table["sources"]
            assert (
                "lines" in row or "reference" in row
            )  # where the value is, or what the reference does instead


def test_every_preset_holds_its_reference_values() -> None:
    """A preset drifting from its row in presets/reference/table.yaml fails here, naming the row."""
    params = load_params(REPO / "params.yaml")
    checks = list(preset.reference_checks(preset.reference_table(), params))
    assert len(checks) > 80
    drift = [
        f"{name}: {key} = {actual!r}, the table ({setup}) says {expected!r}"
        for setup, name, key, expected, actual in checks
        if actual != expected or type(actual) is bool is not type(expected)
    ]
    assert drift == []


def test_a_drifted_preset_is_caught(tmp_path: Path) -> None:
    folder = tmp_path / "presets"
    shutil.copytree(preset.PRESETS, folder)
    ssv2 = folder / "ssv2.yaml"
    ssv2.write_text(ssv2.read_text().replace("label_smoothing: 0.1", "label_smoothing: 0.0"))
    params = load_params(REPO / "params.yaml")
    checks = preset.reference_checks(preset.reference_table(), params, folder)
    drift = [(name, key) for _, name, key, expected, actual in checks if actual != expected]
    assert drift == [("ssv2", "train.label_smoothing")]


def test_a_deliberate_difference_must_say_what_it_departs_from(tmp_path: Path) -> None:
    table = tmp_path / "table.yaml"
    text = (preset.REFERENCE_TABLE).read_text()
    table.write_text(text.replace('reference: "adapter_scale=0.5",', ""))
    with pytest.raises(ValueError, match="model.adapter.scale: a `why` needs the `reference`"):
        preset.reference_table(table)


def test_the_reference_doc_shows_the_table() -> None:
    """docs/reference-deviations.md's generated block is the table (`python -m eva.preset --reference-table`)."""
    assert preset.reference_doc_block() == preset.reference_markdown(preset.reference_table()) + "\n"


def test_videomae_hmdb51_has_the_authors_parameter_count() -> None:
    """14,242,611 tunable of 100,468,275 at HMDB51's 51 classes (the EVA authors' promptmae.py)."""
    counts = runpy.run_path(str(REPO / "scripts" / "param_counts.py"))["preset_counts"]
    assert counts("hmdb51-videomae", 2) == (14_242_611, 100_468_275)


PARAMS_FILES = ("params.yaml", *SIDE_FILES)


def _copy_params(folder: Path) -> Path:
    """params.yaml and its side files in `folder`; the params.yaml path."""
    for file in PARAMS_FILES:
        shutil.copyfile(REPO / file, folder / file)
    return folder / "params.yaml"


def _unchanged(folder: Path, file: str) -> bool:
    return (folder / file).read_bytes() == (REPO / file).read_bytes()


@pytest.mark.parametrize("name", REAL)
def test_apply_then_demo_gives_back_the_same_bytes(name: str, tmp_path: Path) -> None:
    params = _copy_params(tmp_path)
    diff = preset.apply(name, params)
    applied = load_params(params)
    check_params(applied)
    assert diff and dict(preset.leaves(applied)) | values(name) == dict(preset.leaves(applied))
    written = {file for key, _, _ in diff for file in [params_file(key)]}
    assert all(_unchanged(tmp_path, file) == (file not in written) for file in PARAMS_FILES)
    preset.apply("demo", params)
    assert all(_unchanged(tmp_path, file) for file in PARAMS_FILES)


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = _copy_params(tmp_path)
    assert preset.main(["ucf101", "--dry-run", "--params", str(params)]) == 0
    assert "dataset.name: 'demo' -> 'ucf101'" in capsys.readouterr().out
    assert all(_unchanged(tmp_path, file) for file in PARAMS_FILES)


def test_bad_presets_fail_and_leave_params_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "typo.yaml").write_text("model:\n  frame: 8\n")
    (folder / "loop.yaml").write_text("extends: loop2\n")
    (folder / "loop2.yaml").write_text("extends: loop\n")
    (folder / "invalid.yaml").write_text("model:\n  frames: 0\n")
    params = _copy_params(tmp_path)
    with pytest.raises(KeyError, match=r"`model\.frame`"):
        preset.apply("typo", params, folder)
    with pytest.raises(ValueError, match="extends itself"):
        preset.apply("loop", params, folder)
    with pytest.raises(ValueError, match=r"model\.frames"):
        preset.apply("invalid", params, folder)
    with pytest.raises(KeyError, match="no preset 'nonsense'"):
        preset.apply("nonsense", params, folder)
    assert all(_unchanged(tmp_path, file) for file in PARAMS_FILES)
    assert preset.main(["nonsense", "--params", str(params)]) == 2
    assert "no preset 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("nproc", [1, 2, 4, 8])
def test_every_preset_runs_on_1_2_4_and_8_processes(name: str, nproc: int, tmp_path: Path) -> None:
    """Each process takes an equal share; a batch they do not divide (VideoMAE's 5) is rounded up to the
    next multiple and the lr scaled alike (the linear scaling rule)."""
    from eva.train.config import TrainConfig
    from eva.utils.trees import merge

    params = merge(load_params(_copy_params(tmp_path)), preset.resolve(name))
    params = merge(params, {"train": {"nproc": nproc}})
    check_params(params)
    train = TrainConfig.from_params(params)
    batch = values(name)["train.batch_size"]
    assert train.global_batch % nproc == 0 and batch <= train.global_batch < batch + nproc
    assert train.scaled_recipe.lr == pytest.approx(train.recipe.lr * train.global_batch / batch)
    if batch % nproc == 0:
        assert train.global_batch == batch and train.scaled_recipe.lr == train.recipe.lr
    if name in VIDEOMAE_PRESETS:
        assert train.global_batch == {1: 5, 2: 6, 4: 8, 8: 8}[nproc]
