"""The demo dataset: byte-reproducible, decodable, in SSv2's format, and only solvable over time."""

from __future__ import annotations

import hashlib
import json
import runpy
from collections import Counter
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from eva.data.index import build_index
from eva.demo.data import (
    CLASS_MOTIONS,
    COLOURS,
    DEMO_CLASSES,
    LABELS_FILE,
    SPLIT_FILES,
    generate_demo_dataset,
    sample_clip,
    template_key,
)

REPO = Path(__file__).resolve().parents[1]
REAL_SSV2 = REPO.parent / "shared" / "datasets-meta" / "ssv2"
# 16 frames keep a rotation under ~20 degrees per frame, so it can be measured between frames.
TINY = {"seed": 3, "train_per_class": 2, "val_per_class": 1, "frames": 16, "size": 96, "fps": 8}


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _annotations(root: Path, split: str) -> list[dict]:
    return json.loads((root / "annotations" / SPLIT_FILES[split]).read_text(encoding="utf-8"))


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [T, H, W, 3]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_a") / "demo"
    generate_demo_dataset(out, **TINY)
    return out


def test_same_seed_gives_same_bytes_and_no_leftovers(demo_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "demo"
    summary = generate_demo_dataset(again, **TINY)
    first, second = _sha256_tree(demo_dir), _sha256_tree(again)
    assert len(first) == 8 * 3 + 4  # 24 videos, 3 json files, README.md
    assert first == second
    assert summary.num_videos == 24
    assert summary.total_bytes == sum(p.stat().st_size for p in (again / "videos").iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # the temp dir was renamed, nothing left over


def test_different_seed_gives_different_videos(demo_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "demo"
    generate_demo_dataset(other, **{**TINY, "seed": TINY["seed"] + 1})
    first, second = _sha256_tree(demo_dir / "videos"), _sha256_tree(other / "videos")
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_regenerating_replaces_the_old_directory(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    generate_demo_dataset(out, **{**TINY, "train_per_class": 1, "size": 32, "frames": 4})
    (out / "stale.txt").write_text("from an older run")
    generate_demo_dataset(out, **{**TINY, "train_per_class": 1, "size": 32, "frames": 4})
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_videos_decode_with_pyav_and_decord(demo_dir: Path) -> None:
    videos = sorted((demo_dir / "videos").glob("*.mp4"))
    assert len(videos) == 24
    for path in videos:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert float(stream.average_rate) == TINY["fps"]
        assert _decode(path).shape == (TINY["frames"], TINY["size"], TINY["size"], 3)
        reader = decord.VideoReader(str(path))
        assert len(reader) == TINY["frames"]
        batch = reader.get_batch(list(range(len(reader)))).asnumpy()
        assert batch.shape == (TINY["frames"], TINY["size"], TINY["size"], 3)


def test_annotations_are_ssv2_json(demo_dir: Path) -> None:
    labels_text = (demo_dir / "annotations" / LABELS_FILE).read_bytes().decode("utf-8")
    labels = json.loads(labels_text)
    assert list(labels) == [template_key(t) for t in DEMO_CLASSES] == sorted(labels)
    assert list(labels.values()) == [str(i) for i in range(len(DEMO_CLASSES))]
    assert len(DEMO_CLASSES) >= 8

    ids: set[str] = set()
    for split, per_class in (("train", TINY["train_per_class"]), ("val", TINY["val_per_class"])):
        entries = _annotations(demo_dir, split)
        assert Counter(e["template"] for e in entries) == dict.fromkeys(DEMO_CLASSES, per_class)
        for e in entries:
            assert list(e) == ["id", "label", "template", "placeholders"]
            assert template_key(e["template"]) in labels  # SSv2's own template -> label mapping
            assert e["label"] == e["template"].replace("[something]", e["placeholders"][0]).lower()
            colour, shape = e["placeholders"][0].split()
            assert colour in COLOURS and shape
            assert (demo_dir / "videos" / f"{e['id']}.mp4").is_file()
        assert [int(e["id"]) for e in entries] == sorted(int(e["id"]) for e in entries)
        ids |= {e["id"] for e in entries}
    assert len(ids) == 8 * 3  # unique across splits

    if REAL_SSV2.is_dir():  # same layout as the official files, down to the line endings
        real_labels = (REAL_SSV2 / LABELS_FILE).read_bytes().decode("utf-8")
        real_val = json.loads(
            (REAL_SSV2 / "something-something-v2-validation.sample20.json").read_text("utf-8")
        )
        assert real_labels.startswith('{\r\n "') and labels_text.startswith('{\r\n "')
        assert real_labels.endswith('"\r\n}\r\n') and labels_text.endswith('"\r\n}\r\n')
        assert {tuple(e) for e in real_val} == {tuple(e) for e in _annotations(demo_dir, "val")}


def test_the_ssv2_reader_indexes_it(demo_dir: Path) -> None:
    result = build_index("demo", root=demo_dir / "videos", annotations=demo_dir / "annotations")
    assert result.classes == [template_key(t) for t in DEMO_CLASSES]
    assert result.counts == {"train": 16, "val": 8}
    assert result.missing == []


def _object_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    """Pixels near the labelled object's palette colour (distractors never share it)."""
    dist = np.linalg.norm(frame.astype(np.float32) - np.asarray(COLOURS[colour], np.float32), axis=-1)
    return dist < 70.0


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)[::-1] + 0.5  # (x, y), in PIL's continuous pixel coordinates


def _turn_deg(masks: list[np.ndarray]) -> float:
    """Total on-screen rotation (clockwise > 0) of the object, tracked against its first frame.

    Each frame is matched by the rotation of the first frame's mask (moved to the frame's
    centroid and scaled to its area) that overlaps it best, searched near the previous angle:
    a global template, so errors do not accumulate, and tracking, so symmetric shapes do not alias.
    """
    first = Image.fromarray(masks[0].astype(np.float32))
    c0, area0 = _centroid(masks[0]), masks[0].sum()
    angle = 0.0
    for mask in masks[1:]:
        ct, scale = _centroid(mask), np.sqrt(mask.sum() / area0)

        def overlap(a: float, ct: np.ndarray = ct, scale: float = scale, mask: np.ndarray = mask) -> float:
            cos, sin = np.cos(np.radians(a)) / scale, np.sin(np.radians(a)) / scale
            # output pixel q comes from c0 + R(-a) (q - ct) / scale: the inverse of the object's motion
            coeffs = (
                cos,
                sin,
                c0[0] - cos * ct[0] - sin * ct[1],
                -sin,
                cos,
                c0[1] + sin * ct[0] - cos * ct[1],
            )
            warped = np.asarray(
                first.transform(first.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
            )
            return float(np.minimum(warped, mask).sum() / np.maximum(warped, mask).sum())

        angle = max(angle + np.arange(-24.0, 25.0, 2.0), key=overlap)
    return float(angle)


def test_each_class_is_the_motion_it_names(demo_dir: Path) -> None:
    """Measured on the decoded mp4s: the labelled object moves, turns or scales as its template says."""
    size = TINY["size"]
    for e in _annotations(demo_dir, "train"):
        motion = CLASS_MOTIONS[e["template"]]
        frames = _decode(demo_dir / "videos" / f"{e['id']}.mp4")
        masks = [_object_mask(f, e["placeholders"][0].split()[0]) for f in frames]
        assert all(m.sum() > 20 for m in masks), e
        centres = np.array([np.argwhere(m).mean(axis=0)[::-1] / size for m in masks])  # [T, (x, y)]
        dx, dy = centres[-1] - centres[0]
        growth = masks[-1].sum() / masks[0].sum()
        turn = _turn_deg(masks)
        expected = {
            "right": dx > 0.2,
            "left": dx < -0.2,
            "down": dy > 0.2,
            "up": dy < -0.2,
            "grow": growth > 1.8,
            "shrink": growth < 1 / 1.8,
            "clockwise": turn > 60,
            "anticlockwise": turn < -60,
        }
        assert expected[motion], (e, dx, dy, growth, turn)
        if motion in ("clockwise", "anticlockwise", "grow", "shrink"):
            assert np.hypot(dx, dy) < 0.12, (e, dx, dy)  # stays roughly in place
        if motion in ("right", "left", "up", "down", "clockwise", "anticlockwise"):
            assert 0.65 < growth < 1.5, (e, growth)  # keeps its size (within its 8% wobble)
        if motion not in ("clockwise", "anticlockwise"):
            assert abs(turn) < 45, (e, turn)  # does not turn


def _loo_knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 7) -> float:
    x = (features - features.mean(0)) / features.std(0)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)  # [N, N]
    np.fill_diagonal(d, np.inf)
    votes = labels[np.argsort(d, axis=1)[:, :k]]  # [N, k]
    predicted = np.array([np.bincount(v, minlength=len(DEMO_CLASSES)).argmax() for v in votes])
    return float((predicted == labels).mean())


def test_a_single_frame_does_not_tell_the_class() -> None:
    """kNN on one frame's object state is near chance; on its change over the clip it is perfect."""
    rng = np.random.default_rng(1)
    single, change, labels = [], [], []
    for c, template in enumerate(DEMO_CLASSES):
        for _ in range(40):
            m = sample_clip(rng, template, frames=16, size=32).main
            t = int(rng.integers(16))
            single.append([m.cx[t], m.cy[t], m.radius[t]])
            change.append([m.cx[-1] - m.cx[0], m.cy[-1] - m.cy[0], np.log(m.radius[-1] / m.radius[0])])
            change[-1].append((m.angle[-1] - m.angle[0]) / 360.0)
            labels.append(c)
    labels_arr = np.array(labels)
    chance = 1.0 / len(DEMO_CLASSES)
    assert _loo_knn_accuracy(np.array(single), labels_arr) < chance + 0.2
    assert _loo_knn_accuracy(np.array(change), labels_arr) > 0.95


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", 63),
        ("size", 30),
        ("size", 64.0),
        ("frames", 3),
        ("train_per_class", 0),
        ("val_per_class", 0),
        ("fps", 0),
        ("seed", -1),
        ("seed", True),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"demo\.{key}\b"):
        generate_demo_dataset(tmp_path / "demo", **{**TINY, key: value})
    assert list(tmp_path.iterdir()) == []


def test_stage_writes_data_demo_from_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"demo": {**TINY, "train_per_class": 1, "frames": 4, "size": 32}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    monkeypatch.chdir(tmp_path)
    runpy.run_module("stages.demo_data", run_name="__main__")  # as dvc runs it: python -m
    out = tmp_path / "data" / "demo"
    assert len(list((out / "videos").glob("*.mp4"))) == 8 * 2
    assert sorted(p.name for p in (out / "annotations").iterdir()) == sorted(
        [LABELS_FILE, *SPLIT_FILES.values()]
    )
    assert "Turning [something] clockwise" in (out / "README.md").read_text()
