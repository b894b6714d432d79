"""The paper's attribute models beside the defaults: an open-vocabulary detector for the label (and its
box as a mask), a segmentation model for the mask. Tiny random OWLv2 / CLIPSeg written on the fly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import moving_square, refuse_network
from test_attributes import SPEC, VOCAB, K, _cfg, make_shards

from eva.attributes.detect import ObjectDetector
from eva.attributes.encode import HierarchicalEncoder
from eva.attributes.gallery import outlined, render_gallery
from eva.attributes.label import ZeroShotLabeler
from eva.attributes.pipeline import CACHE_VERSION, AttributeConfig, decoded_samples, run_attributes
from eva.attributes.segment import SegmentationMasker
from eva.attributes.visual import box_masks, center_prior, keyframe_images
from eva.data.attribute_store import AttributeStore, read_meta
from eva.data.shards import list_shards
from eva.demo.tiny import save_tiny_captioner, save_tiny_open_clip
from eva.demo.tiny_vision import save_random_clipseg, save_random_owlv2
from eva.utils.fingerprint import path_fingerprint
from eva.weights_io import load_open_clip, weights_fingerprint
from stages import _layout as layout

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return {
        "clip": save_tiny_open_clip(root / "clip", SPEC, seed=0),
        "captioner": str(save_tiny_captioner(root / "captioner", VOCAB, seed=2)),
        "vocabulary": str(root / "vocab.txt"),
        "detector": str(save_random_owlv2(root / "owlv2", seed=0)),
        "segmenter": str(save_random_clipseg(root / "clipseg", seed=0)),
    }


def _frames(t: int = 8, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(moving_square(t, size, seed)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]


def test_detector_matches_the_library_forward_and_boxes_stay_in_the_frame(models):
    detector = ObjectDetector(models["detector"], VOCAB)
    images = [torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8), _frames()[3]]
    found = detector.detect(images)
    assert found.texts == [VOCAB[i] for i in found.index.tolist()] and all(t in VOCAB for t in found.texts)
    assert found.boxes is not None and found.boxes.shape == (2, 4)
    for box, image in zip(found.boxes, images, strict=True):
        h, w = image.shape[-2:]
        assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h
    # Query embeddings computed once == the library's forward, which re-encodes the nouns per image.
    inputs = detector.processor.tokenizer(
        [f"a photo of a {w}" for w in VOCAB], padding="max_length", max_length=32, return_tensors="pt"
    )
    inputs["pixel_values"] = detector.processor.image_processor(
        images=[images[0].permute(1, 2, 0).numpy()], return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        logits = detector.model(**inputs).logits[0]  # [P, V]
    torch.testing.assert_close(found.score[0], logits.max().sigmoid(), atol=1e-5, rtol=0)
    assert int(logits.max(dim=0).values.argmax()) == int(found.index[0])


def test_box_mask_is_exactly_the_box():
    frames = _frames(8, 40)
    boxes = torch.tensor([[4.2, 6.0, 20.0, 30.4], [0.0, 0.0, 40.0, 12.0]])
    masks = box_masks(boxes, 40, 40)
    truth = torch.zeros(2, 40, 40, dtype=torch.bool)
    truth[0, 6:30, 4:20] = True
    truth[1, 0:12, 0:40] = True
    assert torch.equal(masks, truth)
    images = keyframe_images(frames, [2, 5], "box", masks)
    for im, mask in zip(images, truth, strict=True):
        assert im.mask_source == "box" and im.coverage == pytest.approx(float(mask.float().mean()))
        assert torch.equal(im.foreground, im.original * mask) and torch.equal(
            im.background, im.original * ~mask
        )
    (empty,) = keyframe_images(frames, [2], "box", box_masks(torch.tensor([[5.0, 5.0, 5.2, 30.0]]), 40, 40))
    assert empty.mask_source == "center"  # an empty box: the centre prior stands in
    with pytest.raises(ValueError, match="needs model masks"):
        keyframe_images(frames, [2], "box")


def test_a_weak_detection_falls_back_to_clips_label_and_the_centre_prior(models, tmp_path):
    """`attributes.label.threshold`: a keyframe whose top box scores below it gets CLIP's zero-shot
    label (what `label.method: clip` gives it) and no box, so its box mask is the centre prior."""
    shards = make_shards(tmp_path / "shards")
    weak = _cfg(
        models, label_method="detector", detector=models["detector"], mask_method="box", label_threshold=0.999
    )
    clip = _cfg(models)  # label.method clip
    out = {
        name: run_attributes(shards, tmp_path / name, cfg, cache_dir=tmp_path / f"cache-{name}")
        for name, cfg in (("weak", weak), ("clip", clip))
    }
    assert out["weak"].metrics["config"]["label_threshold"] == 0.999
    weak_store, clip_store = (AttributeStore(out[n].outputs["train"]) for n in ("weak", "clip"))
    samples = {s.meta["video_id"]: s for s in decoded_samples(list_shards(shards, "train"))}
    for video_id in ("vid00", "vid03"):
        prior = float(center_prior(*samples[video_id].frames.shape[-2:]).float().mean())
        row, reference = weak_store.describe(video_id), clip_store.describe(video_id)
        assert row["label_text"] == reference["label_text"]  # random OWLv2 scores stay far below 0.999
        assert row["label_score"] == reference["label_score"]
        assert all(box == [0.0, 0.0, 0.0, 0.0] for box in row["label_box"])
        assert torch.equal(
            weak_store.get(video_id, ["label"])["label"], clip_store.get(video_id, ["label"])["label"]
        )
        assert all(c == pytest.approx(prior, abs=1e-6) for c in row["mask_coverage"])  # the centre prior
    with pytest.raises(ValueError, match=r"`attributes\.label\.threshold`"):
        _cfg(models, label_method="detector", detector=models["detector"], label_threshold=1.0)


def test_model_mask_has_frame_shape_and_falls_back_to_the_centre_prior(models):
    masker = SegmentationMasker(models["segmenter"], "the main subject", 0.5)
    frames = _frames(8, 40)
    other = torch.randint(0, 256, (3, 24, 50), dtype=torch.uint8)
    masks = masker.masks([frames[2], other])
    assert [tuple(m.shape) for m in masks] == [(40, 40), (24, 50)] and all(
        m.dtype == torch.bool for m in masks
    )
    probs = masker.probabilities([frames[2]])
    assert probs.shape[0] == 1 and 0 <= float(probs.min()) <= float(probs.max()) <= 1
    prior = center_prior(40, 40)
    empty, full = torch.zeros(1, 40, 40, dtype=torch.bool), torch.ones(1, 40, 40, dtype=torch.bool)
    for mask in (empty, full):
        (im,) = keyframe_images(frames, [2], "model", mask)
        assert im.mask_source == "center" and torch.equal(im.foreground, im.original * prior)
    part = torch.zeros(1, 40, 40, dtype=torch.bool)
    part[0, 10:20, 5:25] = True
    (im,) = keyframe_images(frames, [2], "model", part)
    assert im.mask_source == "model" and im.coverage == pytest.approx(200 / 1600)
    with pytest.raises(ValueError, match="one detected label per image"):
        SegmentationMasker(models["segmenter"], "a {label}").masks([frames[2]])
    assert SegmentationMasker(models["segmenter"], "a {label}").prompts(["dog", "cup"], 2) == [
        "a dog",
        "a cup",
    ]


def test_pipeline_with_detector_labels_and_box_masks(models, tmp_path):
    shards = make_shards(tmp_path / "shards")
    cfg = _cfg(
        models, label_method="detector", detector=models["detector"], mask_method="box", label_threshold=0.0
    )  # every top box counts, however low its score
    result = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache")
    meta = read_meta(result.outputs["train"])
    assert meta.extra["label_method"] == "detector" and meta.extra["detector"] == models["detector"]
    assert "mask_model" not in meta.extra
    encoder = HierarchicalEncoder(
        load_open_clip(models["clip"], param="attributes.clip"), torch.device("cpu")
    )
    layers = ZeroShotLabeler(encoder, VOCAB).layers.to(torch.float16)  # [V, Lt, D]
    store = AttributeStore(result.outputs["train"])
    samples = {s.meta["video_id"]: s for s in decoded_samples(list_shards(shards, "train"))}
    for video_id in ("vid00", "vid03"):
        row = store.describe(video_id)
        assert all(t in VOCAB for t in row["label_text"]) and len(row["label_box"]) == K
        label = store.get(video_id, ["label"])["label"]  # [K, Lt, D]
        for i, text in enumerate(row["label_text"]):
            assert torch.equal(label[i], layers[VOCAB.index(text)])  # the CLIP tensor of the detected noun
        frames = samples[video_id].frames
        masks = box_masks(torch.tensor(row["label_box"]), *frames.shape[-2:])
        for i, image in enumerate(keyframe_images(frames, row["keyframe_indices"], "box", masks)):
            assert row["mask_coverage"][i] == pytest.approx(image.coverage, abs=1e-6)
    assert pq.read_schema(result.outputs["train"]).field("label_box").type.value_type.bit_width == 32
    assert (
        result.metrics["config"]["label_method"] == "detector"
        and "mask_model" not in result.metrics["config"]
    )

    page = render_gallery(
        decoded_samples(list_shards(shards, "val")), AttributeStore(result.outputs["val"]), videos=1,
        mask_method="box", random_models=True,
    )  # fmt: skip
    assert "yellow boxes from the detector" in page and page.count("data:image/png;base64,") == 4 * K
    image = _frames()[2]
    assert not torch.equal(outlined(image, [5.0, 5.0, 20.0, 20.0]), image)


def test_pipeline_with_a_mask_model_and_its_gallery(models, tmp_path):
    shards = make_shards(tmp_path / "shards")
    cfg = _cfg(models, mask_method="model", mask_model=models["segmenter"], mask_threshold=0.5)
    result = run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "cache")
    assert result.models is not None and result.models.masker is not None and result.models.detector is None
    meta = read_meta(result.outputs["val"])
    assert meta.extra["mask_model"] == models["segmenter"] and "label_method" not in meta.extra
    assert "label_box" not in pq.read_schema(result.outputs["val"]).names
    store = AttributeStore(result.outputs["val"])
    masker = result.models.masker
    for sample in decoded_samples(list_shards(shards, "val")):
        row = store.describe(sample.meta["video_id"])
        positions = row["keyframe_indices"]
        masks = torch.stack(masker.masks(list(sample.frames[positions])))
        images = keyframe_images(sample.frames, positions, "model", masks)
        assert row["mask_coverage"] == pytest.approx([im.coverage for im in images], abs=1e-6)
    page = render_gallery(
        decoded_samples(list_shards(shards, "val")), store, videos=1, mask_method="model",
        random_models=True, masker=masker,
    )  # fmt: skip
    assert "mask model" in page and page.count("data:image/png;base64,") == 4 * K
    with pytest.raises(ValueError, match="mask model"):
        render_gallery(iter(()), store, videos=1, mask_method="model", random_models=True)


def test_bad_combinations_and_values_name_their_key(models):
    with pytest.raises(ValueError, match=r"`attributes\.mask\.method`.*attributes\.label\.method"):
        _cfg(models, mask_method="box")
    with pytest.raises(ValueError, match=r"`attributes\.mask\.prompt`"):
        _cfg(models, mask_method="model", mask_prompt="a {label}")
    _cfg(
        models, mask_method="model", mask_prompt="a {label}", label_method="detector"
    )  # fine with a detector
    with pytest.raises(ValueError, match=r"`attributes\.label\.detector`"):
        _cfg(models, label_method="detector", detector=" ")
    with pytest.raises(ValueError, match=r"`attributes\.mask\.threshold`"):
        _cfg(models, mask_threshold=1.0)
    with pytest.raises(ValueError, match=r"`attributes\.label\.method` must be one of clip, detector"):
        _cfg(models, label_method="dino")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["attributes"]["label"]["detectr"] = "x"
    with pytest.raises(ValueError, match=r"attributes\.label\.detectr"):
        AttributeConfig.from_params(params)


def test_missing_weights_fail_fast_naming_the_key(models, tmp_path, monkeypatch):
    connections = refuse_network(monkeypatch)
    for source in (str(tmp_path / "no-such-owl"), "google/no-such-detector-in-cache", models["segmenter"]):
        with pytest.raises(FileNotFoundError, match=r"attributes\.label\.detector"):
            ObjectDetector(source, VOCAB)
    for source in (str(tmp_path / "no-such-seg"), "CIDAS/no-such-clipseg-in-cache", models["detector"]):
        with pytest.raises(FileNotFoundError, match=r"attributes\.mask\.model"):
            SegmentationMasker(source, "the main subject")
    shards = make_shards(tmp_path / "shards")
    cfg = _cfg(models, label_method="detector", detector=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"attributes\.label\.detector"):
        run_attributes(shards, tmp_path / "out", cfg, cache_dir=tmp_path / "c")
    assert connections == [] and not (tmp_path / "out").exists()


def test_hub_names_load_offline_from_the_hf_cache(models, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    for repo, folder in (("acme/tiny-owlv2", models["detector"]), ("acme/tiny-clipseg", models["segmenter"])):
        base = cache / f"models--{repo.replace('/', '--')}"
        snapshot = base / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        for file in Path(folder).iterdir():
            (snapshot / file.name).write_bytes(file.read_bytes())
        (base / "refs").mkdir()
        (base / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import
    connections = refuse_network(monkeypatch)
    image = _frames()[2]
    by_name = ObjectDetector("acme/tiny-owlv2", VOCAB).detect([image])
    by_folder = ObjectDetector(models["detector"], VOCAB).detect([image])
    assert by_name.texts == by_folder.texts and torch.equal(by_name.boxes, by_folder.boxes)
    masker = SegmentationMasker("acme/tiny-clipseg", "the main subject")
    assert torch.equal(
        masker.masks([image])[0],
        SegmentationMasker(models["segmenter"], "the main subject").masks([image])[0],
    )
    assert connections == []


def _key_before_the_model_choices(cfg: AttributeConfig) -> str:
    """`AttributeConfig.cache_key` as it was before the label / mask model choices existed."""
    content = {
        "version": CACHE_VERSION,
        "clip": [
            cfg.clip_model,
            cfg.clip_pretrained,
            *weights_fingerprint(cfg.clip_model, cfg.clip_pretrained),
        ],
        "captioner": [cfg.captioner, path_fingerprint(cfg.captioner)],
        "vocabulary": path_fingerprint(cfg.vocabulary),
        "keyframes": cfg.keyframes,
        "max_new_tokens": cfg.max_new_tokens,
        "mask_method": cfg.mask_method,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def test_cache_key_and_records_unchanged_at_the_defaults(models, tmp_path):
    demo = AttributeConfig.from_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert demo.in_use() == {} and demo.cache_key() == _key_before_the_model_choices(demo)
    old_fields = {"clip_model", "captioner", "vocabulary", "clip_pretrained", "keyframes", "max_new_tokens",
                  "mask_method", "batch_size", "device", "gallery_videos"}  # fmt: skip
    assert set(demo.recorded()) == old_fields
    for method in ("median", "center"):
        cfg = _cfg(models, mask_method=method)
        assert cfg.cache_key() == _key_before_the_model_choices(cfg)
    plain = _cfg(models)
    assert (
        _cfg(models, detector="other/owl", mask_model="other/seg", mask_prompt="x").cache_key()
        == plain.cache_key()
    )
    detector = _cfg(models, label_method="detector", detector=models["detector"])
    assert detector.cache_key() != plain.cache_key()
    assert set(detector.recorded()) == old_fields | {"label_method", "detector", "label_threshold"}
    assert _cfg(models, label_threshold=0.3).cache_key() == plain.cache_key()  # read only with a detector
    assert dataclasses.replace(detector, label_threshold=0.3).cache_key() != detector.cache_key()
    copy = tmp_path / "owl"  # same path, other weights: another key
    copy.mkdir()
    for file in Path(models["detector"]).iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    before = dataclasses.replace(detector, detector=str(copy)).cache_key()
    save_random_owlv2(copy, seed=1)
    assert dataclasses.replace(detector, detector=str(copy)).cache_key() != before
    model = _cfg(models, mask_method="model", mask_model=models["segmenter"])
    assert (
        model.cache_key()
        != _cfg(models, mask_method="model", mask_model=models["segmenter"], mask_threshold=0.4).cache_key()
    )


@pytest.mark.slow
def test_attributes_stage_with_detector_and_mask_model(models, tmp_path, monkeypatch):
    """The stage entry point with both options: labels and boxes from the detector, masks from the
    segmentation model, and a gallery that shows both (the run's own mask model, not a second load)."""
    import runpy

    from test_attributes import _videos, write_shard

    import eva.attributes.segment as segment

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["attributes"].update(keyframes=2, batch_size=8, gallery_videos=2, device="cpu")
    params["attributes"]["clip"] = {"model": models["clip"], "pretrained": ""}
    params["attributes"]["captioner"] = models["captioner"]
    params["attributes"]["label"].update(
        vocabulary=models["vocabulary"], method="detector", detector=models["detector"]
    )
    params["attributes"]["mask"].update(method="model", model=models["segmenter"], prompt="a {label}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_shard(tmp_path / layout.SHARDS / "train-000000.tar", _videos(range(3)))
    write_shard(tmp_path / layout.SHARDS / "val-000000.tar", _videos(range(3, 5)))
    loads = []
    original = segment.SegmentationMasker.__init__
    monkeypatch.setattr(
        segment.SegmentationMasker,
        "__init__",
        lambda self, *a, **kw: loads.append(a) or original(self, *a, **kw),
    )
    runpy.run_path(str(REPO / "stages" / "attributes.py"), run_name="__main__")
    metrics = json.loads(Path("metrics/attributes.json").read_text())
    assert metrics["config"]["label_method"] == "detector" and metrics["config"]["mask_prompt"] == "a {label}"
    store = AttributeStore(layout.attributes("val"))
    assert len(store.describe("vid03")["label_box"]) == 2
    page = Path("metrics/attributes_gallery.html").read_text()
    assert "yellow boxes from the detector" in page and "mask model" in page and len(loads) == 1
