"""Attribute stage: tiny random models, tiny shards written on the fly in the extract contract format."""

from __future__ import annotations

import io
import json
import os
import pickle
import runpy
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from conftest import moving_square, refuse_network
from PIL import Image

from eva.attributes.caption import Captioner, inference_dtype
from eva.attributes.encode import HierarchicalEncoder
from eva.attributes.gallery import render_gallery
from eva.attributes.pipeline import AttributeConfig, decoded_samples, run_attributes
from eva.attributes.visual import choose_keyframes, keyframe_images, keyframe_positions
from eva.data import attribute_store as store_mod
from eva.data.attribute_store import ATTRIBUTES, AttributeStore, attributes_for_stage, read_meta
from eva.data.shards import list_shards
from eva.demo.tiny import TinyClipSpec, is_random_weights, save_tiny_captioner, save_tiny_open_clip
from eva.demo.tiny_training import placeholder_row, random_embeddings
from eva.weights_io import load_open_clip
from stages import _layout as layout

K = 2
SPEC = TinyClipSpec(
    embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=2, text_layers=2
)
VOCAB = ["ball", "dog", "cup", "chair", "red square"]


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_shard(path: Path, videos: list[tuple[str, np.ndarray, int]], blank_labels: bool = False) -> Path:
    """A shard in the extract contract format: `<key>.NNN.jpg` frames + `<key>.json`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), mtime=0) as sink:
        for video_id, frames, label in videos:
            meta = {
                "video_id": video_id,
                "label": -1 if blank_labels else label,
                "label_name": "" if blank_labels else f"class{label}",
                "split": path.name.split("-")[0],
                "fps": 12.0,
                "frame_indices": list(range(len(frames))),
                "orig_size": list(frames.shape[1:3]),
                "duration": len(frames) / 12.0,
                "num_frames": len(frames),
            }
            sample = {"__key__": video_id.replace(".", "_"), "json": json.dumps(meta).encode()}
            sample.update({f"{t:03d}.jpg": _jpeg(f) for t, f in enumerate(frames)})
            sink.write(sample)
    return path


def _videos(seeds: range, frames: int = 8, size: int = 40) -> list[tuple[str, np.ndarray, int]]:
    return [(f"vid{s:02d}", moving_square(frames, size, seed=s), s % 3) for s in seeds]


def make_shards(root: Path, blank_labels: bool = False) -> Path:
    write_shard(root / "train-000000.tar", _videos(range(0, 3)), blank_labels)
    write_shard(root / "train-000001.tar", _videos(range(3, 5)), blank_labels)
    write_shard(root / "val-000000.tar", _videos(range(5, 7)), blank_labels)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    clip = save_tiny_open_clip(root / "clip", SPEC, seed=0)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    captioner = save_tiny_captioner(root / "captioner", VOCAB, seed=2)
    return {"clip": clip, "captioner": str(captioner), "vocabulary": str(root / "vocab.txt")}


def _cfg(models: dict[str, str], **kw) -> AttributeConfig:
    base = {
        "clip_model": models["clip"],
        "captioner": models["captioner"],
        "vocabulary": models["vocabulary"],
        "keyframes": K,
        "max_new_tokens": 4,
        "batch_size": 4,
        "device": "cpu",
    }
    return AttributeConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(models, tmp_path_factory):
    """One full run shared by the read-only tests."""
    root = tmp_path_factory.mktemp("run")
    shards = make_shards(root / "shards")
    result = run_attributes(shards, root / "out", _cfg(models), cache_dir=root / "cache")
    return root, result


def test_parquet_schema_metadata_and_shapes(run):
    root, result = run
    assert set(result.outputs) == {"train", "val"}
    table = pq.read_table(result.outputs["train"])
    assert table.num_rows == 5 and table.column("video_id").to_pylist() == [f"vid{i:02d}" for i in range(5)]
    meta = read_meta(result.outputs["train"])
    assert meta.attributes == ATTRIBUTES and meta.keyframes == K and meta.dim == SPEC.embed_dim
    assert (meta.text_layers, meta.image_layers) == (SPEC.text_layers, SPEC.vision_layers)
    raw = json.loads(table.schema.metadata[b"eva"])
    assert raw["encoder"].startswith("local-dir:") and raw["captioner"].endswith("captioner")
    for name in ATTRIBUTES:
        assert table.schema.field(name).type == pa.list_(pa.float16(), K * meta.layers(name) * meta.dim)
    assert table.schema.field("keyframe_indices").type == pa.list_(pa.int32())
    row = table.slice(0, 1).to_pylist()[0]
    assert row["keyframe_indices"] == keyframe_positions(8, K)
    assert len(row["label_text"]) == K and all(t in VOCAB for t in row["label_text"])
    assert all(0 < s <= 1 for s in row["label_score"]) and all(c for c in row["caption_text"])
    assert all(0 < c < 1 for c in row["mask_coverage"])
    store = AttributeStore(result.outputs["val"])
    got = store.get("vid05", ATTRIBUTES)
    for name in ATTRIBUTES:
        assert got[name].dtype == torch.float16 and tuple(got[name].shape) == (K, meta.layers(name), meta.dim)
    # Different layers and different attributes carry different information.
    assert not torch.equal(got["original"][:, 0], got["original"][:, -1])
    assert not torch.equal(got["foreground"], got["background"])
    m = result.metrics
    assert m["splits"]["train"] == {
        "shards": 2,
        "videos": 5,
        "written": 5,
        "skipped": 0,
        "replaced_keyframes": 0,
        "center_prior_fraction": 0.0,
    }
    assert set(m["seconds"]) >= {"read", "masks", "captioner", "label", "encoding", "writing"}


def test_last_layer_equals_tower_output(models):
    bundle = load_open_clip(models["clip"], param="attributes.clip")
    enc = HierarchicalEncoder(bundle, torch.device("cpu"))
    images = [torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8) for _ in range(3)]
    pixels = enc.preprocess(images)
    per_layer = enc.encode_images(pixels)  # [B, Lv, D] float32
    assert per_layer.shape == (3, SPEC.vision_layers, SPEC.embed_dim)
    torch.testing.assert_close(per_layer[:, -1], bundle.model.encode_image(pixels), atol=1e-5, rtol=0)
    texts = ["This is a photo of a dog.", "a red square moves right", ""]
    per_layer = enc.encode_texts(texts)
    assert per_layer.shape == (3, SPEC.text_layers, SPEC.embed_dim)
    reference = bundle.model.encode_text(enc.tokenize(texts))
    torch.testing.assert_close(per_layer[:, -1], reference, atol=1e-5, rtol=0)


def test_labels_blanked_give_identical_attributes(models, run, tmp_path):
    _, reference = run
    shards = make_shards(tmp_path / "shards", blank_labels=True)
    blank = run_attributes(shards, tmp_path / "out", _cfg(models), cache_dir=tmp_path / "cache")
    for split in ("train", "val"):
        assert blank.outputs[split].read_bytes() == reference.outputs[split].read_bytes()


@pytest.mark.slow
def test_resume_skips_finished_parts(models, tmp_path, monkeypatch):
    shards = make_shards(tmp_path / "shards")
    cfg = _cfg(models)
    first = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache")
    parts = sorted((tmp_path / "cache").rglob("*.parquet"))
    assert len(parts) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    reference = first.outputs["train"].read_bytes()
    first.outputs["train"].unlink()  # DVC deletes outputs before re-running a stage

    calls = []
    original = HierarchicalEncoder.encode_images
    monkeypatch.setattr(
        HierarchicalEncoder, "encode_images", lambda self, x: calls.append(len(x)) or original(self, x)
    )
    again = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache")
    assert calls == [] and again.metrics["shards_reused"] == 3
    assert {p: p.stat().st_mtime_ns for p in parts} == mtimes
    assert again.outputs["train"].read_bytes() == reference

    parts[0].unlink()  # one unfinished shard: only it is recomputed
    time.sleep(0.01)
    third = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache")
    assert (
        sum(calls) == 3 * K * 4 and third.metrics["shards_reused"] == 2
    )  # 3 videos x K keyframes x 4 images
    assert third.outputs["train"].read_bytes() == reference


def test_rank_split_and_merge(models, tmp_path):
    from eva.utils.dist import WorkerSlot

    shards = make_shards(tmp_path / "shards")
    cfg = _cfg(models)
    other = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache", slot=WorkerSlot(1, 2))
    assert not other.merged and not (tmp_path / "out").exists()
    assert len(list((tmp_path / "cache").rglob("*.parquet"))) == 1  # shard index 1 of 3
    rank0 = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache", slot=WorkerSlot(0, 2))
    assert rank0.merged and pq.read_metadata(rank0.outputs["train"]).num_rows == 5


def test_bad_keyframes_recorded_and_skipped(models, tmp_path):
    good = _videos(range(2))
    black = np.zeros((8, 40, 40, 3), np.uint8)
    tiny = moving_square(8, 8)
    fade = moving_square(8, 40, seed=9)
    fade[:3] = 0  # first keyframe (position 2) black: replaced by the nearest usable frame
    write_shard(
        tmp_path / "shards" / "train-000000.tar",
        [good[0], ("black", black, 0), ("tiny", tiny, 0), ("fade", fade, 1), ("corrupt", good[1][1], 0)],
    )
    # Corrupt one JPEG of the last sample in place (same length, so the tar stays valid).
    tar = tmp_path / "shards" / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    jpeg = _jpeg(good[1][1][3])
    at = data.find(jpeg[:2048])
    data[at + 200 : at + len(jpeg) - 2] = b"\x00" * (len(jpeg) - 202)
    data[at : at + 2] = b"\x00\x00"
    tar.write_bytes(bytes(data))
    write_shard(tmp_path / "shards" / "val-000000.tar", [good[1]])

    result = run_attributes(tmp_path / "shards", tmp_path / "out", _cfg(models), cache_dir=tmp_path / "cache")
    skipped = {s["video_id"]: s["reason"] for s in result.metrics["skipped"]}
    assert set(skipped) == {"black", "tiny", "corrupt"}
    assert (
        "black" in skipped["black"] and "smaller" in skipped["tiny"] and "undecodable" in skipped["corrupt"]
    )
    assert (
        result.metrics["splits"]["train"]["videos"] == 5 and result.metrics["splits"]["train"]["written"] == 2
    )
    assert [r["video_id"] for r in result.metrics["replaced_keyframes"]] == ["fade"]
    store = AttributeStore(result.outputs["train"])
    assert "fade" in store and "black" not in store and "corrupt" not in store
    assert store.describe("fade")["keyframe_indices"] == [3, 6]


def test_store_random_access_by_id(run):
    _, result = run
    path = result.outputs["train"]
    store = AttributeStore(path)
    assert len(store) == 5 and "vid03" in store and "nope" not in store
    table = pq.read_table(path)
    ids = table.column("video_id").to_pylist()
    for video_id in ("vid04", "vid00", "vid02"):
        got = store.get(video_id, ["caption", "dynamic"])
        flat = np.asarray(table.column("dynamic")[ids.index(video_id)].as_py(), np.float16)
        np.testing.assert_array_equal(got["dynamic"].numpy().reshape(-1), flat)
    with pytest.raises(KeyError, match="nope"):
        store.get("nope", ["label"])
    with pytest.raises(ValueError, match="Unknown attributes"):
        store.get("vid00", ["texture"])
    clone = pickle.loads(pickle.dumps(store))  # DataLoader workers re-open the file
    assert torch.equal(clone.get("vid01", ["label"])["label"], store.get("vid01", ["label"])["label"])
    assert attributes_for_stage(1) == ("label", "caption") and attributes_for_stage(2) == ATTRIBUTES
    with pytest.raises(ValueError, match="stage"):
        attributes_for_stage(3)


def _store_rows(count: int, keyframes: int = 1, dim: int = 4) -> tuple[store_mod.AttributeMeta, list]:
    meta = store_mod.AttributeMeta("m", text_layers=2, image_layers=3, dim=dim, keyframes=keyframes)
    rng = np.random.default_rng(0)
    rows = [
        placeholder_row(
            f"v{i}", range(keyframes), random_embeddings(meta, rng), label="a", caption="c", coverage=0.1
        )
        for i in range(count)
    ]
    return meta, rows


def test_a_video_s_rows_are_read_without_decoding_a_row_group(tmp_path, monkeypatch):
    meta, rows = _store_rows(40)
    store_mod.write_table(tmp_path / "a.parquet", store_mod.rows_to_table(rows, meta), row_group_rows=16)
    store = AttributeStore(tmp_path / "a.parquet")
    assert pq.ParquetFile(tmp_path / "a.parquet").num_row_groups == 3
    read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile, "read_row_group", lambda self, i, **kw: read.append(i) or original(self, i, **kw)
    )
    got = store.get("v37", ["original", "label"])
    np.testing.assert_array_equal(got["original"].numpy(), rows[37].embeddings["original"])
    np.testing.assert_array_equal(got["label"].numpy(), rows[37].embeddings["label"])
    assert read == []  # the row's values copied out of the mapped file, no row group decoded
    assert store.describe("v37")["keyframe_indices"] == [0] and read == [2]  # the text columns: decoded


WRITERS = {  # other layouts a Parquet writer can give the same table: read raw, or through pyarrow
    "several pages, rows split across them": (dict(data_page_size=700), True),
    "data page v2": (dict(data_page_size=900, data_page_version="2.0"), True),
    "with a page index": (dict(write_page_index=True, data_page_size=1000), True),
    "compressed": (dict(compression="zstd"), False),
    "dictionary-encoded": (dict(use_dictionary=True), False),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_get_gives_pyarrow_s_values_whatever_the_file_layout(tmp_path, writer):
    meta, rows = _store_rows(37, keyframes=3, dim=40)
    table = store_mod.rows_to_table(rows, meta)
    options, raw = WRITERS[writer]
    options = {"compression": "none", "use_dictionary": False, **options}
    with pq.ParquetWriter(tmp_path / "a.parquet", table.schema, **options) as out:
        out.write_table(table, row_group_size=16)
    store = AttributeStore(tmp_path / "a.parquet")
    for row in rows:
        got = store.get(row.video_id, list(ATTRIBUTES))
        for name in ATTRIBUTES:
            assert got[name].dtype == torch.float16 and got[name].is_contiguous()
            np.testing.assert_array_equal(got[name].numpy(), row.embeddings[name])
        for k in range(meta.keyframes):  # training reads one keyframe's values alone
            one = store.get(row.video_id, list(ATTRIBUTES), keyframe=k)
            for name in ATTRIBUTES:
                assert one[name].dtype == torch.float16 and one[name].is_contiguous()
                np.testing.assert_array_equal(one[name].numpy(), row.embeddings[name][k])
    with pytest.raises(IndexError, match="keyframe 3"):
        store.get(rows[0].video_id, ["label"], keyframe=3)
    assert {runs is not None for runs in store._runs.values()} == {raw}


def test_a_null_value_sends_its_column_chunk_through_pyarrow(tmp_path):
    meta, rows = _store_rows(20, keyframes=2, dim=8)
    table = store_mod.rows_to_table(rows, meta)
    label = table.column("label").combine_chunks()
    values = label.flatten().to_pylist()
    values[5] = None  # row 0, group 0
    nulled = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float16()), label.type.list_size)
    table = table.set_column(table.schema.get_field_index("label"), table.schema.field("label"), nulled)
    store_mod.write_table(tmp_path / "a.parquet", table)
    store = AttributeStore(tmp_path / "a.parquet")
    assert torch.isnan(store.get("v0", ["label"])["label"].flatten()[5])
    np.testing.assert_array_equal(store.get("v17", ["label"])["label"].numpy(), rows[17].embeddings["label"])
    assert store._runs[(0, "label")] is None and store._runs[(1, "label")] is not None


def test_missing_checkpoints_fail_fast_naming_the_param(models, tmp_path, monkeypatch):
    shards = make_shards(tmp_path / "shards")
    # "Fast" means no attempt to reach the hub (which would wait on timeouts and retries): any
    # connection is recorded and refused. Robust where a wall-clock bound is not.
    connections = refuse_network(monkeypatch)
    with pytest.raises(FileNotFoundError, match="attributes.captioner"):
        Captioner(str(tmp_path / "no-such-captioner"))
    with pytest.raises(FileNotFoundError, match="attributes.captioner"):
        Captioner("Salesforce/no-such-captioner-in-cache")  # HF_HUB_OFFLINE=1: no network wait
    with pytest.raises(FileNotFoundError, match="attributes.clip.model"):
        run_attributes(
            shards,
            tmp_path / "out",
            _cfg(models, clip_model=f"local-dir:{tmp_path}/nope"),
            cache_dir=tmp_path / "c",
        )
    with pytest.raises(FileNotFoundError, match="attributes.label.vocabulary"):
        run_attributes(
            shards,
            tmp_path / "out",
            _cfg(models, vocabulary=str(tmp_path / "none.txt")),
            cache_dir=tmp_path / "c",
        )
    with pytest.raises(ValueError, match="attributes.keyframes"):
        run_attributes(shards, tmp_path / "out", _cfg(models, keyframes=0), cache_dir=tmp_path / "c")
    assert connections == []
    assert not (tmp_path / "out").exists()


def test_captioner_loads_through_auto_classes(models):
    captioner = Captioner(models["captioner"])
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"
    assert type(captioner.processor).__name__ == "BlipProcessor"
    frames = torch.from_numpy(moving_square(4, 40)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    captions = captioner.generate(list(frames), max_new_tokens=5)
    assert len(captions) == 4 and all(isinstance(c, str) and c for c in captions)
    assert is_random_weights(models["captioner"]) and is_random_weights(models["clip"]) is False


def test_batched_captions_equal_one_by_one(models):
    """One `generate` call for the whole batch gives the captions of one call per image, in order;
    fp32 on CPU, the half-precision dtype only on CUDA."""
    captioner = Captioner(models["captioner"])
    assert captioner.dtype == torch.float32 and inference_dtype(torch.device("cpu")) == torch.float32
    assert inference_dtype(torch.device("cuda")) == torch.float16
    rng = np.random.default_rng(0)
    frames = [torch.from_numpy(v).permute(0, 3, 1, 2) for v in (moving_square(4, 40), moving_square(3, 40))]
    images = [*frames[0], *frames[1], torch.from_numpy(rng.integers(0, 256, (3, 32, 56), dtype=np.uint8))]
    batched = captioner.generate(images, max_new_tokens=6)
    single = [captioner.generate([image], max_new_tokens=6)[0] for image in images]
    assert batched == single


def test_batched_captions_keep_the_order_of_the_images():
    """The demo's pretrained captioner (when `dvc pull`ed) tells stills apart: order is checked too."""
    from eva.demo.data import render_clip, sample_still

    folder = Path(__file__).resolve().parents[1] / "models" / "pretrained" / "captioner"
    if not (folder / "config.json").is_file():
        pytest.skip("models/pretrained/captioner not present (dvc pull)")
    captioner = Captioner(str(folder))
    rng = np.random.default_rng(0)
    stills = [render_clip(sample_still(rng, size=64))[0] for _ in range(6)]
    images = [torch.from_numpy(np.ascontiguousarray(s)).permute(2, 0, 1) for s in stills]
    batched = captioner.generate(images, max_new_tokens=12)
    assert batched == [captioner.generate([image], max_new_tokens=12)[0] for image in images]
    assert len(set(batched)) == len(batched)


def test_masks_follow_the_moving_object():
    frames = torch.from_numpy(moving_square(16, 48)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]
    positions, replaced = choose_keyframes(frames, 4)
    assert positions == [2, 6, 10, 14] and replaced == []
    for im in keyframe_images(frames, positions, "median"):
        x = int(im.position * 36 / 15)
        truth = torch.zeros(48, 48, dtype=torch.bool)
        truth[16:28, x : x + 12] = True
        found = im.foreground.amax(0) > 0
        assert im.mask_source == "motion" and (found & truth).sum() / (found | truth).sum() > 0.75
        assert torch.equal(im.foreground + im.background, im.original)
        assert im.dynamic.max() == 255
    static = frames[:1].repeat(6, 1, 1, 1)
    (im,) = keyframe_images(static, [3], "median")
    assert im.mask_source == "center" and 0.3 < im.coverage < 0.45 and im.dynamic.max() == 0


def test_gallery_is_self_contained(run):
    root, result = run
    page = render_gallery(
        decoded_samples(list_shards(root / "shards", "val")),
        AttributeStore(result.outputs["val"]),
        videos=1,
        mask_method="median",
        random_models=True,
    )
    assert "meaningless" in page and page.count("<h2>") == 1
    assert page.count("data:image/png;base64,") == 4 * K and "src='http" not in page


@pytest.mark.slow
def test_attributes_stage_with_random_models(tmp_path, monkeypatch):
    """The stage entry point in a scratch repo: random stand-ins where params.yaml expects the demo's
    models, attributes from hand-made shards, and a gallery that says the captions are meaningless."""
    import yaml

    from eva.attributes.label import read_vocabulary
    from eva.demo.tiny import mark_random_weights

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["attributes"].update(keyframes=2, batch_size=8, gallery_videos=2, device="cpu")
    params["attributes"]["label"]["vocabulary"] = str(repo / params["attributes"]["label"]["vocabulary"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    clip_dir = Path(params["attributes"]["clip"]["model"].removeprefix("local-dir:"))
    save_tiny_open_clip(clip_dir, SPEC, seed=0)
    mark_random_weights(clip_dir)
    save_tiny_captioner(
        params["attributes"]["captioner"], read_vocabulary(params["attributes"]["label"]["vocabulary"])
    )
    name = params["dataset"]["name"]
    write_shard(tmp_path / layout.SHARDS / "train-000000.tar", _videos(range(3)))
    write_shard(tmp_path / layout.SHARDS / "val-000000.tar", _videos(range(3, 5)))
    runpy.run_path(str(repo / "stages" / "attributes.py"), run_name="__main__")
    metrics = json.loads(Path("metrics/attributes.json").read_text())
    assert metrics["dataset"] == name and metrics["splits"]["val"]["written"] == 2
    assert AttributeStore(layout.attributes("val")).meta.image_layers == SPEC.vision_layers
    page = Path("metrics/attributes_gallery.html").read_text()
    assert "demo captions are meaningless" in page and page.count("data:image/png") == 2 * 2 * 4
    assert os.path.isdir(".eva_cache/attributes")


def test_prefetch_keeps_order_and_raises():
    from eva.attributes.pipeline import _prefetch

    assert list(_prefetch(iter(range(7)))) == list(range(7))

    def failing():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(_prefetch(failing()))
