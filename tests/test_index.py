"""Index stage: official annotation files read with their exact counts, files on disk found or listed
as missing, and clear errors for bad params. Videos are empty files: the index never decodes them.

Every reader test runs on small files generated in the official formats (tests/official_annotations.py),
and again on the real files in ../shared/datasets-meta with their exact official counts where that
folder exists."""

from __future__ import annotations

import csv
import json
import os
import runpy
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from official_annotations import (
    K400_TRAIN,
    K400_VAL,
    OFFICIAL,
    Expected,
    k400_stem,
    ucf_video,
    write_k400,
    write_samples,
)

from eva.data import index as index_module
from eva.data.index import INDEX_SCHEMA, build_index, read_index

REPO = Path(__file__).resolve().parents[1]
META = Path(__file__).resolve().parents[2] / "shared" / "datasets-meta"


@dataclass(frozen=True)
class Meta:
    """A datasets-meta folder and what the index must find in it."""

    path: Path
    expected: Expected

    def __truediv__(self, name: str) -> Path:
        return self.path / name


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Meta:
    root = tmp_path_factory.mktemp("datasets-meta")
    return Meta(root, write_samples(root))


@pytest.fixture(scope="module", params=["generated", "official"])
def meta(request: pytest.FixtureRequest, generated: Meta) -> Meta:
    """The generated files always; the real ones too, with the official counts, where they exist."""
    if request.param == "generated":
        return generated
    if not META.is_dir():
        pytest.skip(f"official annotation files not found at {META} (shared/ must sit beside the repo)")
    return Meta(META, OFFICIAL)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def check_table(table: pa.Table) -> None:
    """The contract every index satisfies: schema, unique ids, sorted by (split, video_id)."""
    assert table.schema.equals(INDEX_SCHEMA)
    ids = table.column("video_id").to_pylist()
    assert len(set(ids)) == len(ids)
    keys = list(zip(table.column("split").to_pylist(), ids, strict=True))
    assert keys == sorted(keys)
    assert set(table.column("split").to_pylist()) <= {"train", "val"}


# --------------------------------------------------------------------------- UCF101


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_counts(meta: Meta, split: int) -> None:
    result = build_index("ucf101", "videos", meta / "ucf101", split, check_exists=False)
    train, val = meta.expected.ucf_counts[split]
    assert result.counts == {"train": train, "val": val}
    assert len(result.classes) == meta.expected.ucf_classes and result.classes[0] == "ApplyEyeMakeup"
    check_table(result.table)
    rows = result.table.to_pylist()
    assert len({r["video_id"] for r in rows}) == meta.expected.ucf_videos  # the splits partition all videos
    # Test lists carry no label: it comes from the class folder, also for the HandStandPushups quirk.
    quirk = next(r for r in rows if r["video_id"] == "v_HandStandPushups_g01_c01")
    assert quirk["split"] == ("val" if split == 1 else "train") and quirk["label_name"] == "HandstandPushups"
    assert quirk["label"] == result.classes.index("HandstandPushups")
    assert quirk["path"] == str(Path("videos/HandstandPushups/v_HandStandPushups_g01_c01.avi"))
    assert all(result.classes[r["label"]] == r["label_name"] for r in rows)
    assert all(r["start"] is None and r["end"] is None for r in rows)


def test_ucf101_present_and_missing_videos(generated: Meta, tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    present = [
        ucf_video("ApplyEyeMakeup", 3, 1),  # train, split 1
        ucf_video("HandstandPushups", 1, 1),  # val, file name spelled as in the archive (HandStand)
        ucf_video("YoYo", 1, 1),  # val
    ]
    for rel in present:
        touch(root / rel)
    touch(root / "Archery" / "v_ARCHERY_g03_c01.avi")  # capitalisation drifted: found case-insensitively

    result = build_index("ucf101", root, generated / "ucf101", 1)
    train, val = generated.expected.ucf_counts[1]
    total = generated.expected.ucf_videos
    assert result.counts == {"train": 2, "val": 2}
    assert result.annotated == {"train": train, "val": val}
    assert len(result.missing) == total - 4
    assert str(root / ucf_video("ApplyEyeMakeup", 3, 2)) in result.missing
    paths = result.table.column("path").to_pylist()
    assert {str(root / rel) for rel in present} < set(paths)
    assert str(root / "Archery" / "v_ARCHERY_g03_c01.avi") in paths
    metrics = result.metrics()
    assert metrics["missing"]["count"] == total - 4 and len(metrics["missing"]["videos"]) == 100
    assert metrics["counts"] == {"train": 2, "val": 2} and metrics["classes"] == 4 and metrics["split"] == 1


def test_ucf101_official_archive_subfolder(meta: Meta, tmp_path: Path) -> None:
    (tmp_path / "ucfTrainTestlist").symlink_to(meta / "ucf101", target_is_directory=True)
    result = build_index("ucf101", "videos", tmp_path, 2, check_exists=False)
    train, val = meta.expected.ucf_counts[2]
    assert result.counts == {"train": train, "val": val}


# --------------------------------------------------------------------------- HMDB51


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_counts(meta: Meta, split: int) -> None:
    result = build_index("hmdb51", "videos", meta / "hmdb51", split, check_exists=False)
    train, val, unused = meta.expected.hmdb_counts
    assert result.counts == {"train": train, "val": val}
    assert len(result.classes) == meta.expected.hmdb_classes and result.classes == sorted(result.classes)
    assert result.stats["unused"] == unused
    check_table(result.table)
    per_class = Counter((r["label_name"], r["split"]) for r in result.table.to_pylist())
    class_train, class_val = meta.expected.hmdb_per_class
    assert all(
        per_class[(c, "train")] == class_train and per_class[(c, "val")] == class_val for c in result.classes
    )
    # Names with [ ] ! ( ) & survive the "<video>.avi <code> " lines with their trailing space.
    assert any("[_NEW_AUDIO_]_UPDATED!!!!" in r["video_id"] for r in result.table.to_pylist())


def test_hmdb51_subfolder_odd_names_and_missing(generated: Meta, tmp_path: Path) -> None:
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "testTrainMulti_7030_splits").symlink_to(generated / "hmdb51", target_is_directory=True)
    root = tmp_path / "hmdb51"
    odd = "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_fr_goo_0.avi"  # code 2 -> val
    unused = "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_le_goo_3.avi"  # code 0
    touch(root / "brush_hair" / odd)
    touch(root / "brush_hair" / unused)
    touch(root / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")  # code 1 -> train

    result = build_index("hmdb51", root, annotations, 1)
    rows = result.table.to_pylist()
    assert [(r["split"], r["path"]) for r in rows] == [
        ("train", str(root / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")),
        ("val", str(root / "brush_hair" / odd)),
    ]
    assert rows[0]["label"] == result.classes.index("brush_hair") == 0
    train, val, _ = generated.expected.hmdb_counts
    assert len(result.missing) == train + val - 2
    assert str(root / "brush_hair" / unused) not in result.missing  # unused videos are not "missing"


# --------------------------------------------------------------------------- SSv2


@pytest.fixture
def ssv2_annotations(meta: Meta, tmp_path: Path) -> Path:
    """The labels json and the validation entries of `meta`, plus a small train file."""
    folder = tmp_path / "ssv2-annotations"
    folder.mkdir()
    shutil.copy(meta / "ssv2" / "something-something-v2-labels.json", folder)
    shutil.copy(
        meta / "ssv2" / "something-something-v2-validation.sample20.json",
        folder / "something-something-v2-validation.json",
    )
    train = [
        {"id": "1", "template": "Putting [something] on a surface", "placeholders": ["cup"]},
        {"id": "2", "template": "[Something] falling like a rock", "placeholders": ["pen"]},
        {"id": "3", "template": "putting [something] on a surface", "placeholders": ["cup"]},  # case drift
    ]
    (folder / "something-something-v2-train.json").write_text(json.dumps(train))
    return folder


def test_ssv2_template_ids(meta: Meta, ssv2_annotations: Path) -> None:
    labels = json.loads((meta / "ssv2" / "something-something-v2-labels.json").read_text())
    validation = json.loads((meta / "ssv2" / "something-something-v2-validation.sample20.json").read_text())
    result = build_index("ssv2", "videos", ssv2_annotations, check_exists=False)
    check_table(result.table)
    assert len(result.classes) == meta.expected.ssv2_classes
    assert result.counts == {"train": 3, "val": meta.expected.ssv2_val}
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    for entry in validation:  # the official conversion, computed independently
        expected = int(labels[entry["template"].replace("[", "").replace("]", "")])
        assert rows[entry["id"]]["label"] == expected and rows[entry["id"]]["split"] == "val"
    assert rows["92355"]["label_name"] == "Something falling like a feather or paper"  # "[Something]"
    in_it = "Tipping something with something in it over, so something in it falls out"
    assert rows["149956"]["label"] == int(labels[in_it])  # "[something in it]"
    assert rows["169362"]["label_name"] == "Taking something from somewhere"  # "[somewhere]"
    assert rows["2"]["label_name"] == "Something falling like a rock"
    assert rows["1"]["label"] == rows["3"]["label"] == int(labels["Putting something on a surface"])
    assert rows["74225"]["path"] == str(Path("videos/74225.webm"))


def test_ssv2_any_container_with_one_listing(
    meta: Meta, ssv2_annotations: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "20bn-something-something-v2"
    touch(root / "74225.webm")
    touch(root / "116154.mp4")  # the demo writes mp4 in SSv2 format
    touch(root / "1.mkv")
    touch(root / "198186.txt")  # not a video container: still missing
    scans = []
    real_scandir = os.scandir
    monkeypatch.setattr(index_module.os, "scandir", lambda p: scans.append(p) or real_scandir(p))

    result = build_index("ssv2", root, ssv2_annotations)
    assert len(scans) == 1  # one listing of the video folder, not a stat per video and extension
    assert {r["video_id"]: r["path"] for r in result.table.to_pylist()} == {
        "1": str(root / "1.mkv"),
        "116154": str(root / "116154.mp4"),
        "74225": str(root / "74225.webm"),
    }
    annotated = 3 + meta.expected.ssv2_val
    assert len(result.missing) == annotated - 3 and str(root / "198186.webm") in result.missing


def test_ssv2_unknown_template_and_missing_file(ssv2_annotations: Path) -> None:
    train = ssv2_annotations / "something-something-v2-train.json"
    train.write_text(json.dumps([{"id": "9", "template": "Juggling [something]"}]))
    with pytest.raises(ValueError, match="Juggling"):
        build_index("ssv2", "videos", ssv2_annotations, check_exists=False)
    train.unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations=.*something-something-v2-train\.json"):
        build_index("ssv2", "videos", ssv2_annotations, check_exists=False)


# --------------------------------------------------------------------------- ActivityNet


def anet_json(meta: Meta) -> dict:
    return json.loads((meta / "activitynet" / "activity_net.v1-3.excerpt40.json").read_text())


def test_k400_csv_and_both_folder_layouts(tmp_path: Path) -> None:
    """Kinetics-400: classes are the train csv's sorted labels; a clip is found in the crawler layout
    (<split>/<label with spaces or underscores>/<id>_<start>_<end>.mp4) or the flat CVDF one (<split>/...)."""
    write_k400(tmp_path / "annotations")
    root = tmp_path / "kinetics400"
    label, yid, start, end = K400_TRAIN[0]
    touch(root / "train" / label / f"{k400_stem(yid, start, end)}.mp4")
    label, yid, start, end = K400_TRAIN[2]  # "passing American football (in game)", id starting with "-"
    touch(root / "train" / label.replace(" ", "_") / f"{k400_stem(yid, start, end)}.mp4")
    for _, yid, start, end in K400_VAL:
        touch(root / "val" / f"{k400_stem(yid, start, end)}.mkv")

    result = build_index("k400", root, tmp_path / "annotations")
    check_table(result.table)
    assert result.classes == ["abseiling", "passing American football (in game)"]
    assert result.counts == {"train": 2, "val": 2}
    assert result.annotated == {"train": len(K400_TRAIN), "val": len(K400_VAL)}
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    football = rows[k400_stem(*K400_TRAIN[2][1:])]
    assert football["label"] == 1 and football["path"].endswith(
        "passing_American_football_(in_game)/--6bJUbfpnQ_000017_000027.mp4"
    )
    assert rows[k400_stem(*K400_VAL[0][1:])]["path"] == str(root / "val" / "0wR5jVB-WPk_000417_000427.mkv")
    assert sorted(Path(m).name for m in result.missing) == sorted(
        f"{k400_stem(*row[1:])}.mp4" for row in (K400_TRAIN[1], K400_TRAIN[3])
    )

    (tmp_path / "annotations" / "validate.csv").unlink()
    with pytest.raises(FileNotFoundError, match="validate.csv"):
        build_index("k400", root, tmp_path / "annotations")


def test_activitynet_segments(meta: Meta) -> None:
    data = anet_json(meta)["database"]
    result = build_index("activitynet", "videos", meta / "activitynet", check_exists=False)
    check_table(result.table)
    rows = result.table.to_pylist()
    assert len(rows) == meta.expected.anet_segments
    train_videos, val_videos, test_videos = meta.expected.anet_videos
    videos = {
        split: {r["video_id"].rsplit("_", 1)[0] for r in rows if r["split"] == split}
        for split in ("train", "val")
    }
    assert (len(videos["train"]), len(videos["val"])) == (train_videos, val_videos)
    assert result.counts == {
        "train": sum(len(v["annotations"]) for v in data.values() if v["subset"] == "training"),
        "val": sum(len(v["annotations"]) for v in data.values() if v["subset"] == "validation"),
    }
    over = sum(a["segment"][1] > v["duration"] for v in data.values() for a in v["annotations"])
    assert over > 0
    assert result.stats["segments"] == {"annotated": len(rows), "clamped": over, "dropped_empty": 0}
    assert result.stats["skipped_videos"] == {"testing": test_videos}
    for r in rows:
        vid, i = r["video_id"].rsplit("_", 1)
        video = data[vid]
        start, end = video["annotations"][int(i)]["segment"]
        assert (
            r["start"] == float(start) and r["end"] == min(end, video["duration"]) and r["start"] < r["end"]
        )
        assert r["label_name"] == video["annotations"][int(i)]["label"]
    first = next(
        r for r in rows if r["video_id"] == "-1IBHYS3L-Y_0"
    )  # id starts with '-', start written as 0
    assert first["start"] == 0.0 and first["path"] == str(Path("videos/v_-1IBHYS3L-Y.mp4"))
    # No taxonomy in the excerpt and no class list: the sorted labels of the annotations.
    labels = sorted({a["label"] for v in data.values() for a in v["annotations"]})
    assert result.classes == labels and len(labels) == meta.expected.anet_labels
    assert result.stats["class_source"] == "annotations"


def test_activitynet_class_list_files(meta: Meta, tmp_path: Path) -> None:
    with open(meta / "activitynet" / "action_name.csv", newline="") as f:
        names = [row["action"] for row in csv.DictReader(f)]
    result = build_index(
        "activitynet",
        "videos",
        meta / "activitynet",
        class_list=meta / "activitynet" / "action_name.csv",
        check_exists=False,
    )
    assert result.classes == names and len(names) == meta.expected.anet_class_list
    assert result.stats["class_source"] == "class_list"
    assert all(names[r["label"]] == r["label_name"] for r in result.table.to_pylist())

    txt = tmp_path / "classes.txt"
    txt.write_text("\n".join(reversed(names)) + "\n")
    reversed_result = build_index(
        "activitynet", "videos", meta / "activitynet", class_list=txt, check_exists=False
    )
    assert reversed_result.classes == names[::-1]

    txt.write_text("Archery\n")
    with pytest.raises(ValueError, match=r"dataset\.class_list"):
        build_index("activitynet", "videos", meta / "activitynet", class_list=txt, check_exists=False)
    with pytest.raises(FileNotFoundError, match=r"dataset\.class_list"):
        build_index("activitynet", "videos", meta / "activitynet", class_list=tmp_path / "nope.txt")


def test_activitynet_taxonomy_files_and_gt_shape(meta: Meta, tmp_path: Path) -> None:
    data = anet_json(meta)
    keep = ["-1IBHYS3L-Y", "-1IlTIWPNs4", "-5c9WHk408g"]  # train, train, val
    data["database"] = {k: data["database"][k] for k in keep}
    data["database"]["-5c9WHk408g"]["annotations"].append({"segment": [150.0, 160.0], "label": "Paintball"})
    data["taxonomy"] = [
        {"nodeId": 1, "nodeName": "Root", "parentId": None, "parentName": None},
        {"nodeId": 2, "nodeName": "Household", "parentId": 1, "parentName": "Root"},
        {"nodeId": 3, "nodeName": "Sports", "parentId": 1, "parentName": "Root"},
        {"nodeId": 4, "nodeName": "Shoveling snow", "parentId": 2, "parentName": "Household"},
        {"nodeId": 5, "nodeName": "Removing ice from car", "parentId": 2, "parentName": "Household"},
        {"nodeId": 6, "nodeName": "Paintball", "parentId": 3, "parentName": "Sports"},
    ]
    annotations = tmp_path / "anet"
    annotations.mkdir()
    (annotations / "activity_net.v1-3.min.json").write_text(json.dumps(data))
    root = tmp_path / "videos"
    touch(root / "v_-1IBHYS3L-Y.mp4")
    touch(root / "-5c9WHk408g.mkv")  # the other naming convention

    result = build_index("activitynet", root, annotations)
    assert result.classes == ["Paintball", "Removing ice from car", "Shoveling snow"]
    assert result.stats["class_source"] == "taxonomy"
    assert result.stats["segments"]["dropped_empty"] == 1  # starts after the video ends
    assert {r["video_id"]: r["path"] for r in result.table.to_pylist()} == {
        "-1IBHYS3L-Y_0": str(root / "v_-1IBHYS3L-Y.mp4"),
        "-5c9WHk408g_0": str(root / "-5c9WHk408g.mkv"),
    }
    assert result.missing == [str(root / "v_-1IlTIWPNs4.mp4")]  # counted once per video file

    gt = build_index(
        "activitynet",
        "videos",
        meta / "activitynet" / "mmaction2_test_eval_detection_gt.json",
        check_exists=False,
    )  # mmaction's shape: no "database", ids already "v_..."
    assert gt.counts["val"] > 0 and gt.table.column("path")[0].as_py().startswith(str(Path("videos/v_")))


# --------------------------------------------------------------------------- folder layout


def test_folder_hash_split(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for cls in ("waving", "clapping"):
        for i in range(20):
            touch(root / cls / f"clip{i:02d}.mp4")
    touch(root / "waving" / "notes.txt")
    touch(root / "waving" / ".hidden.mp4")
    result = build_index("folder", root, tmp_path / "no-lists")
    assert result.classes == ["clapping", "waving"]
    assert sum(result.counts.values()) == 40 and 0 < result.counts["val"] < 20
    check_table(result.table)
    again = build_index("folder", root, tmp_path / "no-lists")
    assert again.table.equals(result.table)
    row = next(r for r in result.table.to_pylist() if r["video_id"] == "waving/clip03.mp4")
    assert row["label"] == 1 and row["path"] == str(root / "waving" / "clip03.mp4")


def test_folder_lists(tmp_path: Path) -> None:
    root, annotations = tmp_path / "mine", tmp_path / "lists"
    touch(root / "a" / "x.mp4")
    touch(root / "b" / "y.avi")
    annotations.mkdir()
    (annotations / "train.txt").write_text("a/x.mp4\r\nb/gone.mp4\r\n")
    (annotations / "val.txt").write_text("b/y.avi\n")
    result = build_index("folder", root, annotations)
    assert [(r["video_id"], r["split"], r["label"]) for r in result.table.to_pylist()] == [
        ("a/x.mp4", "train", 0),
        ("b/y.avi", "val", 1),
    ]
    assert result.missing == [str(root / "b" / "gone.mp4")]
    (annotations / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations.*val\.txt"):
        build_index("folder", root, annotations)


# --------------------------------------------------------------------------- errors


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match=r"`dataset\.name` must be one of .*ucf101.*; got 'kinetics'"):
        build_index("kinetics", "videos", "annotations")


@pytest.mark.parametrize("split", [4, 0, "x", 2.5, True])
def test_split_out_of_range(generated: Meta, split: object) -> None:
    with pytest.raises(ValueError, match=r"`dataset\.split` must be 1, 2 or 3 for ucf101"):
        build_index("ucf101", "videos", generated / "ucf101", split)  # type: ignore[arg-type]


def test_missing_annotation_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations=.*does not exist"):
        build_index("hmdb51", "videos", tmp_path / "nowhere", 1)
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations=.*classInd\.txt"):
        build_index("ucf101", "videos", tmp_path, 1)
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations=.*_test_split2\.txt"):
        build_index("hmdb51", "videos", tmp_path, 2)
    with pytest.raises(FileNotFoundError, match=r"dataset\.annotations=.*activity_net"):
        build_index("activitynet", "videos", tmp_path)


def test_nothing_usable(generated: Meta, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no usable hmdb51 videos.*dataset\.root="):
        build_index("hmdb51", tmp_path / "empty", generated / "hmdb51", 1)


# --------------------------------------------------------------------------- stage


def test_stage_writes_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("walk/a.mp4", "walk/b.mp4", "run/c.mp4", "run/d.webm"):
        touch(tmp_path / "videos" / rel)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.txt").write_text("walk/a.mp4\nrun/c.mp4\nrun/missing.mp4\n")
    (tmp_path / "annotations" / "val.txt").write_text("walk/b.mp4\nrun/d.webm\n")
    params = {
        "dataset": {
            "name": "folder",
            "root": "videos",
            "annotations": "annotations",
            "split": 1,
            "class_list": "",
            "val_fraction": 0.2,
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    runpy.run_module("stages.index", run_name="__main__")  # as dvc runs it: python -m

    table = read_index(tmp_path / "data/index/videos.parquet")
    assert table.num_rows == 4 and table.column("path")[0].as_py() == str(Path("videos/run/c.mp4"))
    assert json.loads((tmp_path / "data/index/classes.json").read_text()) == ["run", "walk"]
    metrics = json.loads((tmp_path / "metrics/index.json").read_text())
    assert metrics["dataset"] == "folder" and metrics["counts"] == {"train": 2, "val": 2}
    assert metrics["missing"] == {"count": 1, "videos": [str(Path("videos/run/missing.mp4"))]}
    assert not [
        p for p in (tmp_path / "data/index").iterdir() if p.name.startswith(".")
    ]  # no temp files left

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not an index"):
        read_index(tmp_path / "other.parquet")
