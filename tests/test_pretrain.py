"""The demo's pretraining: captioned stills, hard-negative groups, and models read back by the real loaders."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eva.attributes.caption import Captioner
from eva.config import load_params
from eva.demo.data import CLASS_MOTIONS, COLOURS, SHAPES, main_object, sample_still
from eva.demo.pretrain.clip import is_text_parameter, pretrain_clip
from eva.demo.pretrain.evaluate import caption_word_accuracy
from eva.demo.pretrain.run import PretrainConfig, run_pretraining
from eva.demo.pretrain.schedule import Schedule
from eva.demo.pretrain.stills import (
    FACTORS,
    StillBatches,
    caption_text,
    caption_vocabulary,
    place_caption,
    sample_group,
    still_words,
)
from eva.demo.tiny import TinyClipSpec, build_tiny_open_clip, demo_pretrained_scores
from eva.weights_io import load_open_clip

REPO = Path(__file__).resolve().parents[1]


def _batches(**overrides) -> StillBatches:
    settings = dict(seed=0, batch_size=24, size=32, group=4, factor_weights=(1, 1, 1, 1, 1), steps=3)
    settings |= overrides
    return StillBatches(**settings)


def test_caption_words_come_from_the_scene() -> None:
    rng = np.random.default_rng(0)
    spec = sample_still(rng, size=32)
    # Pin the main object: top-left quadrant corner, small, spot pointing down (90 degrees clockwise).
    spec = type(spec)(
        main=main_object(rng, shape="star", colour="blue", cx=0.2, cy=0.15, radius=0.1, angle=92.0),
        distractors=(),
        background=spec.background,
        noise_sigma=spec.noise_sigma,
        noise_seed=spec.noise_seed,
    )
    words = still_words(spec)
    assert caption_text(words) == "a small blue star at the top far left pointing down"
    assert set(caption_text(words).split()) <= set(caption_vocabulary())


def test_no_action_word_reaches_a_caption() -> None:
    """Stills have no class: no word of any class template may appear in a caption."""
    template_words = {w.lower() for t in CLASS_MOTIONS for w in re.findall(r"[a-z]+", t.lower())}
    template_words |= set(CLASS_MOTIONS.values())
    allowed = {"from", "to", "the", "left", "right", "up", "down", "something"}  # also place/direction words
    forbidden = template_words - allowed
    assert {"pushing", "moving", "turning", "clockwise", "towards", "away", "camera"} <= forbidden
    for index in range(3):
        batch = _batches().batch(index)
        for caption in [*batch.captions, *(caption_text(w) for w in batch.words)]:
            assert not set(re.findall(r"[a-z]+", caption.lower())) & forbidden, caption


@pytest.mark.parametrize("factor", FACTORS)
def test_a_group_differs_in_exactly_its_factor(factor: str) -> None:
    weights = [1.0 if f == factor else 0.0 for f in FACTORS]
    got, stills = sample_group(np.random.default_rng(1), 32, 4, weights)
    assert got == factor and len(stills) == (3 if factor == "size" else 4)
    words = [still_words(s) for s in stills]
    assert len({w.factor(factor) for w in words}) == len(words)  # every variant says a different word
    for other in set(FACTORS) - {factor, "position"}:  # a resized object may shift into another cell
        if factor != "size":
            assert len({w.factor(other) for w in words}) == 1, other
    assert all((s.background == stills[0].background).all() for s in stills)


def test_still_batches_are_seeded_per_index_and_worker_independent() -> None:
    a, b = _batches().batch(1), _batches().batch(1)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (24, 3, 32, 32) and a.images.dtype == torch.uint8
    assert not torch.equal(a.images, _batches().batch(2).images)
    loader = torch.utils.data.DataLoader(_batches(), batch_size=None, num_workers=2, collate_fn=lambda x: x)
    assert [torch.equal(x.images, _batches().batch(i).images) for i, x in enumerate(loader)] == [True] * 3


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_share_of_captions_says_only_where_the_object_is(share: float) -> None:
    batches = [_batches(batch_size=64, place_captions=share).batch(i) for i in range(4)]
    pairs = [(c, w) for b in batches for c, w in zip(b.captions, b.words, strict=True)]
    place_only = [c == place_caption(w) for c, w in pairs]
    assert abs(np.mean(place_only) - share) < 0.08, np.mean(place_only)
    # every other caption still names the object's shape
    assert all(w.shape in c for (c, w), only in zip(pairs, place_only, strict=True) if not only)


def _clip_step(text_lr_scale: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """One `pretrain_clip` step on a tiny CLIP: (parameters before, after, logit scale at step 0)."""
    spec = TinyClipSpec(
        embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=1,
        text_width=16, text_layers=1, heads=2, context_length=24,
    )  # fmt: skip
    before = {k: v.clone() for k, v in build_tiny_open_clip(spec, seed=0).state_dict().items()}
    schedule = Schedule(steps=1, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_steps=0)
    result = pretrain_clip(
        spec, schedule, seed=0, group=4, factor_weights=(1, 1, 1, 1, 1), workers=0,
        text_lr_scale=text_lr_scale, logit_scale_init=50.0,
    )  # fmt: skip
    after = {k: v.detach() for k, v in result.model.state_dict().items()}
    return before, after, after["logit_scale"].exp().item()


@pytest.mark.parametrize("text_lr_scale", [0.0, 0.1, 1.0])
def test_the_text_tower_learns_at_its_own_rate(text_lr_scale: float) -> None:
    """Locked (0), slowed (0.1) or as fast as the image tower (1): AdamW's first step moves a weight by
    about the rate, so the text tower's largest move over the image tower's is the scale."""
    before, after, scale = _clip_step(text_lr_scale)
    moved = {k: float((after[k] - before[k]).abs().max()) for k in before if before[k].is_floating_point()}
    text = max(v for k, v in moved.items() if is_text_parameter(k))
    image = max(v for k, v in moved.items() if k.startswith("visual."))
    assert image == pytest.approx(1e-3, rel=0.05)
    assert text == pytest.approx(text_lr_scale * 1e-3, rel=0.05, abs=1e-12)
    assert 0 < abs(scale - 50.0) < 0.2  # started at logit_scale_init, then trained


def test_caption_word_accuracy_counts_first_colour_and_shape() -> None:
    words = [still_words(sample_still(np.random.default_rng(s), size=32)) for s in range(2)]
    right = [caption_text(w) for w in words]
    assert caption_word_accuracy(right, words)["caption_word_accuracy"] == 1.0
    wrong_shape = [
        c.replace(w.shape, next(s for s in SHAPES if s != w.shape)) for c, w in zip(right, words, strict=True)
    ]
    scores = caption_word_accuracy(wrong_shape, words)
    assert scores["caption_colour_accuracy"] == 1.0 and scores["caption_shape_accuracy"] == 0.0
    assert caption_word_accuracy(["", "a"], words)["caption_word_accuracy"] == 0.0


def _params() -> dict:
    params = load_params(REPO / "params.yaml")
    tiny = params["pretrain"]
    tiny.update(held_out=8, workers=0, image_size=32)
    tiny["clip"].update(steps=2, batch_size=8, warmup_steps=1, width=32, embed_dim=16, text_width=16, heads=2)
    tiny["captioner"].update(steps=2, batch_size=4, warmup_steps=1, width=32, heads=2, layers=1)
    return params


@pytest.mark.slow
def test_pretraining_writes_models_the_real_loaders_read(tmp_path: Path) -> None:
    params = _params()
    params["pretrain"]["out"] = str(tmp_path / "zoo")
    result = run_pretraining(PretrainConfig.from_params(params))
    metrics = result["metrics"]
    assert metrics["held_out_stills"] == 8 and len(result["curves"]["clip"]) == 2
    assert 0.0 <= metrics["zero_shot_shape_top1"] <= 1.0 and 0.0 <= metrics["caption_word_accuracy"] <= 1.0
    bundle = load_open_clip(f"local-dir:{tmp_path / 'zoo' / 'clip'}", param="model.backbone")
    assert bundle.image_size == 32 and bundle.model.visual.transformer.width == 32
    captioner = Captioner(str(tmp_path / "zoo" / "captioner"))
    assert len(captioner.generate([torch.zeros(3, 32, 32, dtype=torch.uint8)], max_new_tokens=4)) == 1
    scores = demo_pretrained_scores(str(tmp_path / "zoo" / "captioner"))
    assert scores is not None and scores["held_out_stills"] == 8
    assert demo_pretrained_scores(str(tmp_path)) is None
    assert not list(tmp_path.glob(".zoo.*"))  # the temporary build folder is gone


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("clip.steps", 0, "pretrain.clip.steps"),
        ("captioner.lr", 0.0, "pretrain.captioner.lr"),
        ("clip.factor_weights", [1, 1], "pretrain.clip.factor_weights"),
        ("clip.patch_size", 7, "pretrain.image_size"),
        ("captioner.heads", 5, "pretrain.captioner.width"),
        ("clip.place_captions", 1.5, "pretrain.clip.place_captions"),
        ("clip.text_lr_scale", -0.1, "pretrain.clip.text_lr_scale"),
        ("clip.logit_scale_init", 0, "pretrain.clip.logit_scale_init"),
        ("clip.logit_scale_init", 200, "pretrain.clip.logit_scale_init"),
    ],
)
def test_bad_pretrain_params_name_their_key(key: str, value: object, message: str) -> None:
    params = copy.deepcopy(_params())
    node = params["pretrain"]
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        PretrainConfig.from_params(params)


def test_colours_and_shapes_are_single_caption_words() -> None:
    """The captioner's WordPiece has one token per vocabulary word; multi-word names would split."""
    assert all(" " not in name for name in [*COLOURS, *SHAPES])


@pytest.fixture(scope="module")
def shape_control():
    """scripts/shape_control.py (docs/demo.md, "Why shape stays low"), loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("shape_control", REPO / "scripts" / "shape_control.py")
    assert spec is not None and spec.loader is not None
    control = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(control)
    return control


def test_the_shape_control_builds_the_demo_tower_with_either_stem(shape_control) -> None:
    """The pretrain stage's image tower, with open_clip's patchify conv or a conv stem to the same grid."""
    config = PretrainConfig.from_params(load_params(REPO / "params.yaml"))
    tower = shape_control.vit_classifier(config, len(SHAPES))[0]
    clip = config.clip
    assert (tower.conv1.kernel_size, tower.transformer.width, len(tower.transformer.resblocks)) == (
        (clip.patch_size, clip.patch_size),
        clip.vision_width,
        clip.vision_layers,
    )
    stem = shape_control.vit_classifier(config, len(SHAPES), stem="conv")[0].conv1
    grid = config.image_size // clip.patch_size
    assert stem(torch.zeros(2, 3, config.image_size, config.image_size)).shape == (
        2,
        clip.vision_width,
        grid,
        grid,
    )


@pytest.mark.parametrize("model", [["--model", "vit"], ["--model", "cnn"], ["--stem", "conv"]], ids=" ".join)
def test_the_shape_control_trains_and_repeats_itself(shape_control, model: list[str]) -> None:
    """Each network of the diagnostic trains in the stage's loop, scores in range, and a seeded run repeats."""
    args = [*model, "--steps", "4", "--warmup", "1", "--batch-size", "8", "--pool-size", "64"]
    args += ["--test-size", "32", "--eval-every", "2", "--params", str(REPO / "params.yaml")]
    first, second = shape_control.main(args), shape_control.main(args)
    assert [row["step"] for row in first] == [2, 4]
    assert all(np.isfinite(row["loss"]) and 0.0 <= row["top1"] <= 1.0 for row in first)
    assert first == second
