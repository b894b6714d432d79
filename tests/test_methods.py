"""Every registered method on every backbone family, through the real classifier and the real loaders.

Tiny random models (a tiny open_clip ViT and a tiny VideoMAE, saved with the libraries' own
savers) are loaded by `build_model` exactly as real weights would be.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip
from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
from eva.methods import METHODS, PUBLISHED_RECIPES, get_method
from eva.models import ModelConfig, VideoClassifier, build_model

B = 2
NUM_CLASSES = 5
ATTRIBUTES = ("label", "caption", "original")
ENCODER_LAYERS = {"label": 3, "caption": 3, "original": 2}
ENCODER_DIM = 24
# Methods whose model at init computes exactly the frozen backbone (tokens change the features).
IDENTITY_AT_INIT = [m for m in METHODS if METHODS[m].tokens == "none"]


@dataclass(frozen=True)
class Backbone:
    family: str
    name: str
    frames: int
    image_size: int


@pytest.fixture(scope="module", params=["open_clip", "videomae"])
def backbone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "open_clip":
        spec = TinyClipSpec(image_size=32, vision_width=32, vision_layers=2, embed_dim=24)
        return Backbone("open_clip", save_tiny_open_clip(folder, spec), 3, spec.image_size)
    vspec = TinyVideoMAESpec()
    return Backbone("videomae", save_tiny_videomae(folder, vspec), vspec.frames, vspec.image_size)


def make_config(bb: Backbone, method: str, **overrides) -> ModelConfig:
    fields = dict(
        method=method,
        num_classes=NUM_CLASSES,
        backbone=bb.name,
        backbone_family=bb.family,
        frames=bb.frames,
        image_size=bb.image_size,
        time_embedding_init=0.0,  # AIM's zero init: a fresh model computes the frozen backbone
        prompt_length=2,
        adaptformer_bottleneck=4,
        lora_rank=2,
        lora_alpha=4.0,
        lora_targets=("q", "v", "out"),
        attributes=ATTRIBUTES if get_method(method).uses_attributes else (),
        attribute_layers=dict(ENCODER_LAYERS),
        attribute_dim=ENCODER_DIM,
        head_dropout=0.0,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def make_inputs(bb: Backbone, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(B, bb.frames, 3, bb.image_size, bb.image_size, generator=gen)  # [B, T, 3, S, S]
    attributes = {n: torch.randn(B, ENCODER_LAYERS[n], ENCODER_DIM, generator=gen) for n in ATTRIBUTES}
    return video, attributes


def frozen_features(model: VideoClassifier, video: torch.Tensor) -> torch.Tensor:
    """What the untouched library model computes: per-frame `clip.visual`, or VideoMAE's pooled output."""
    bb = model.backbone
    with torch.no_grad():
        if model.config.backbone_family == "open_clip":
            return torch.stack([bb.visual(video[:, t]) for t in range(video.shape[1])], dim=1)  # [B, T, D]
        out = bb.model(pixel_values=video).last_hidden_state  # [B, N, D]
        return out.mean(dim=1, keepdim=True)  # [B, 1, D]


@pytest.mark.parametrize("method", METHODS)
def test_forward_gives_one_logit_row_per_video(backbone: Backbone, method: str) -> None:
    model = build_model(make_config(backbone, method)).eval()
    video, attributes = make_inputs(backbone)
    with torch.no_grad():
        logits = model(video, attributes)
    assert logits.shape == (B, NUM_CLASSES) and torch.isfinite(logits).all()
    assert model.method is METHODS[method]


@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_at_init_the_features_are_the_frozen_backbones(backbone: Backbone, method: str) -> None:
    model = build_model(make_config(backbone, method)).eval()
    video, _ = make_inputs(backbone)
    with torch.no_grad():
        got = model.frame_features(video)
    torch.testing.assert_close(got, frozen_features(model, video), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].tokens != "none"])
def test_extra_tokens_steer_the_features_once_their_attention_is_open(
    backbone: Backbone, method: str
) -> None:
    """VPT's prompts steer from the start; EVA's gated attribute tokens start shut (the frozen features)."""
    model = build_model(make_config(backbone, method)).eval()
    video, attributes = make_inputs(backbone)
    frozen = frozen_features(model, video)
    gates = model.extra_tokens.gates
    assert (gates is not None) == (method == "eva")
    with torch.no_grad():
        if gates is not None:
            torch.testing.assert_close(model.frame_features(video, attributes), frozen, atol=1e-5, rtol=0)
            gates.fill_(0.5)
        got = model.frame_features(video, attributes)
    assert (got - frozen).abs().max() > 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_move_exactly_the_tunable_tensors(backbone: Backbone, method: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(backbone, method)).train()
    tunable = dict(model.named_tunable_parameters())
    frozen = {n: p for n, p in model.named_parameters() if n not in tunable}
    assert all(p.requires_grad for p in tunable.values()) and not any(
        p.requires_grad for p in frozen.values()
    )
    assert (not frozen) if METHODS[method].trains_backbone else all(n.startswith("backbone.") for n in frozen)
    if backbone.family == "videomae":
        assert "head.norm.weight" in tunable  # VideoMAE's fc_norm trains
    before_frozen = {n: p.detach().clone() for n, p in frozen.items()}
    before_tunable = {n: p.detach().clone() for n, p in tunable.items()}
    video, attributes = make_inputs(backbone)
    labels = torch.arange(B) % NUM_CLASSES
    optimizer = torch.optim.SGD(tunable.values(), lr=0.5)
    # Zero up-projections / LoRA B block the gradients behind them at first (gate -> temporal adapter is
    # three deep); a few steps reach every tensor.
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(video, attributes), labels).backward()
        assert all(p.grad is None for p in frozen.values())
        optimizer.step()
    for name, p in frozen.items():
        assert torch.equal(p, before_frozen[name]), name
    unchanged = [n for n, p in tunable.items() if torch.equal(p, before_tunable[n])]
    assert not unchanged, f"tunable tensors that did not train: {unchanged}"


@pytest.mark.parametrize("method", METHODS)
def test_tunable_weights_round_trip_through_a_file(backbone: Backbone, method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = make_config(backbone, method)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.tunable_state_dict().values():
            p.add_(torch.randn_like(p) * 0.05)  # away from init, so loading must really copy
    torch.save(model.tunable_state_dict(), tmp_path / "tunable.pt")
    torch.manual_seed(1)
    fresh = build_model(copy.deepcopy(config)).eval()
    fresh.load_tunable_state_dict(torch.load(tmp_path / "tunable.pt"))
    video, attributes = make_inputs(backbone)
    with torch.no_grad():
        torch.testing.assert_close(fresh(video, attributes), model(video, attributes), atol=0, rtol=0)


def test_time_embedding_only_where_the_backbone_has_no_time_positions(backbone: Backbone) -> None:
    for method, entry in METHODS.items():
        model = build_model(make_config(backbone, method))
        wants = entry.layer == "aim" and backbone.family == "open_clip"
        assert (model.temporal_embedding is not None) == wants, method


def test_time_embedding_init_breaks_the_time_reversal_symmetry_at_step_0(backbone: Backbone) -> None:
    """At 0 (AIM) a video and its time reversal get the same pooled features until the embedding grows;
    a random start tells them apart from the first step, at the asked scale of the backbone's positions."""
    if backbone.family != "open_clip":
        pytest.skip("VideoMAE takes no time embedding")
    video, _ = make_inputs(backbone)
    reversed_video = video.flip(1)
    pooled = {}
    for init in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model(make_config(backbone, "aim", time_embedding_init=init)).eval()
        embedding = model.temporal_embedding.detach()
        if init == 0:
            assert torch.equal(embedding, torch.zeros_like(embedding))
        else:
            rms = float(embedding.pow(2).mean().sqrt())
            assert rms == pytest.approx(init * model.backbone.position_rms, rel=0.25)
        with torch.no_grad():
            pooled[init] = [model.frame_features(v).mean(dim=1) for v in (video, reversed_video)]
    torch.testing.assert_close(pooled[0.0][0], pooled[0.0][1], atol=2e-5, rtol=1e-5)
    assert (pooled[0.5][0] - pooled[0.5][1]).abs().max() > 1e-3


def test_position_rms_is_the_backbones_own_position_embedding(backbone: Backbone) -> None:
    bb = build_model(make_config(backbone, "linear")).backbone
    table = bb.visual.positional_embedding if backbone.family == "open_clip" else bb.position_embeddings
    assert bb.position_rms == pytest.approx(float(table.pow(2).mean().sqrt())) and bb.position_rms > 0
    with pytest.raises(ValueError, match=r"model\.time_embedding_init"):
        build_model(make_config(backbone, "aim", time_embedding_init=-0.1))


def test_every_method_has_a_published_recipe_and_a_summary() -> None:
    assert set(PUBLISHED_RECIPES) == set(METHODS)
    for name, entry in METHODS.items():
        assert entry.recipe is not None and entry.recipe.recipe.name == name and entry.recipe.source
        assert entry.summary


def test_unknown_method_or_family_names_the_param(backbone: Backbone) -> None:
    with pytest.raises(ValueError, match=r"model\.method"):
        build_model(make_config(backbone, "bitfit"))
    with pytest.raises(ValueError, match=r"model\.backbone\.family"):
        build_model(make_config(backbone, "linear", backbone_family="timm"))


def test_videomae_refuses_a_pretrained_tag_and_wrong_frames(backbone: Backbone) -> None:
    if backbone.family != "videomae":
        pytest.skip("VideoMAE-only rules")
    with pytest.raises(ValueError, match=r"model\.backbone\.pretrained"):
        build_model(make_config(backbone, "linear", pretrained="openai"))
    with pytest.raises(ValueError, match=r"model\.frames"):
        build_model(make_config(backbone, "linear", frames=backbone.frames + 2))
