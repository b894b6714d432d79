"""Options that select a reference's behaviour (docs/reference-deviations.md), and that their defaults
leave the model as it was: on a tiny random open_clip ViT and a tiny random VideoMAE."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from eva.attributes.label import read_vocabulary
from eva.config import load_params
from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip
from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
from eva.methods import Recipe
from eva.models import ModelConfig, VideoClassifier, build_model
from eva.models.adapters import Adapter
from eva.models.blocks import DropPath
from eva.models.classifier import REFERENCE_OPTIONS
from eva.models.clip_backbone import OpenClipBackbone
from eva.models.trained import load_trained_model, save_trained_model
from eva.models.videomae import load_videomae
from eva.train.config import TrainConfig
from eva.train.optim import param_groups
from eva.weights_io import load_open_clip

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
SPEC = TinyClipSpec(image_size=32, vision_width=32, vision_layers=2, embed_dim=24)
T, B, NUM_CLASSES = 3, 2, 5


@pytest.fixture(scope="module")
def clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_open_clip(tmp_path_factory.mktemp("clip"), SPEC)


@pytest.fixture(scope="module")
def videomae_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A pre-training-style VideoMAE: it ends in a LayerNorm (use_mean_pooling false)."""
    return save_tiny_videomae(tmp_path_factory.mktemp("videomae"), TinyVideoMAESpec(use_mean_pooling=False))


def clip_config(name: str, method: str, **overrides) -> ModelConfig:
    fields = dict(
        method=method, num_classes=NUM_CLASSES, backbone=name, frames=T, image_size=SPEC.image_size,
        prompt_length=2, head_dropout=0.0, time_embedding_init=0.0,
    )  # fmt: skip
    return ModelConfig(**(fields | overrides))


def videomae_config(folder: str, method: str, **overrides) -> ModelConfig:
    spec = TinyVideoMAESpec()
    fields = dict(
        method=method, num_classes=NUM_CLASSES, backbone=folder, backbone_family="videomae",
        frames=spec.frames, image_size=spec.image_size, head_dropout=0.0,
    )  # fmt: skip
    return ModelConfig(**(fields | overrides))


def video(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- defaults ------------------------------------------------------------------------------------


def test_params_yaml_holds_every_option_at_the_default_that_keeps_todays_model() -> None:
    model = ModelConfig.from_params(PARAMS, num_classes=3)
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert {name: getattr(model, name) for name in REFERENCE_OPTIONS} == {
        name: defaults[name] for name in REFERENCE_OPTIONS
    }
    assert (model.readout, model.final_norm, model.drop_path_mode) == ("proj", "keep", "video")
    assert (model.adapter_init, model.prompt_dropout) == ("default", 0.0)
    train = TrainConfig.from_params(PARAMS)
    assert train.decay_prompts is False and train.label_smoothing == 0.1


def test_a_preset_can_turn_label_smoothing_off() -> None:
    params = {**PARAMS, "train": {**PARAMS["train"], "label_smoothing": 0.0}}
    assert TrainConfig.from_params(params).label_smoothing == 0.0  # AIM, VPT, AdaptFormer: plain CE


def test_the_checkpoint_record_leaves_out_options_at_their_default(clip_name: str) -> None:
    config = clip_config(clip_name, "aim")
    record = config.record()
    assert not set(record) & set(REFERENCE_OPTIONS)  # a default run saves what it saved before
    assert set(record) | set(REFERENCE_OPTIONS) == set(dataclasses.asdict(config))
    assert ModelConfig(**record) == config
    changed = clip_config(clip_name, "aim", readout="width", drop_path_mode="aim")
    assert {"readout", "drop_path_mode"} <= set(changed.record())
    assert ModelConfig(**changed.record()) == changed


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"readout": "cls"}, "model.readout"),
        ({"final_norm": "none"}, "model.backbone.final_norm"),
        ({"final_norm": "identity"}, "model.backbone.final_norm"),  # open_clip keeps ln_post
        ({"drop_path_mode": "token"}, "model.drop_path_mode"),
        ({"adapter_init": "xavier"}, "model.adapter.init"),
        ({"prompt_dropout": 1.0}, "model.vpt.dropout"),
    ],
)
def test_bad_option_values_name_their_key(clip_name: str, overrides: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        build_model(clip_config(clip_name, "aim", **overrides))


# -- 1. read-out: ln_post(CLS) at the width, as AIM ------------------------------------------------


def test_width_readout_is_ln_post_cls_without_proj_and_the_head_follows(clip_name: str) -> None:
    default = build_model(clip_config(clip_name, "linear")).eval()
    model = build_model(clip_config(clip_name, "linear", readout="width")).eval()
    assert default.head.fc.in_features == SPEC.embed_dim
    assert model.head.fc.in_features == model.backbone.feature_dim == SPEC.vision_width
    assert model.backbone.visual.proj is None and "backbone.visual.proj" not in dict(model.named_parameters())

    x = video(T, SPEC.image_size)
    visual = load_open_clip(clip_name, param="model.backbone", image_size=SPEC.image_size).model.visual
    proj = visual.proj.detach().clone()
    visual.proj = None  # what AIM loads: CLIP's visual tower without `proj`
    with torch.no_grad():
        expected = torch.stack([visual(x[:, t]) for t in range(T)], dim=1)  # [B, T, width]
        features = model.frame_features(x)
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(
            default.frame_features(x), features @ proj
        )  # default: @ proj, 512-d on B/16

    # counts: the head is width-wide, and the removed proj is in no count
    tunable, total = model.parameter_counts()
    assert tunable == SPEC.vision_width * NUM_CLASSES + NUM_CLASSES
    default_tunable, default_total = default.parameter_counts()
    assert default_tunable == SPEC.embed_dim * NUM_CLASSES + NUM_CLASSES
    assert total - tunable == default_total - default_tunable - proj.numel()


def test_width_readout_gives_aims_768_wide_features_on_vit_b16() -> None:
    import open_clip

    visual = open_clip.create_model("ViT-B-16-quickgelu").visual
    config = ModelConfig(
        method="aim", num_classes=400, backbone="ViT-B-16", frames=8, image_size=224, readout="width"
    )
    model = VideoClassifier(config, OpenClipBackbone(visual, 8, (0.0,) * 3, (1.0,) * 3))
    assert model.backbone.feature_dim == 768 and model.head.fc.in_features == 768
    tunable, total = model.parameter_counts()
    adapter = 768 * 192 + 192 + 192 * 768 + 768
    assert tunable == 12 * 3 * adapter + 8 * 768 + 768 * 400 + 400  # AIM's I3D head on 768 channels
    assert round(tunable / 1e6) == 11 and round(total / 1e6) == 97  # AIM's published 11M of 97M


def test_width_readout_round_trips_through_model_pt(clip_name: str, tmp_path: Path) -> None:
    model = build_model(clip_config(clip_name, "linear", readout="width")).eval()
    with torch.no_grad():
        model.head.fc.weight.normal_()
    path = tmp_path / "model.pt"
    save_trained_model(
        path, model, classes=[f"c{i}" for i in range(NUM_CLASSES)], stage=1, params={}, history=[]
    )
    loaded, checkpoint = load_trained_model(path)
    assert checkpoint["config"]["readout"] == "width"
    x = video(T, SPEC.image_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


# -- 2. drop-path: per token position across the batch, as AIM's timm DropPath on [L, B*T, D] -------


def aims_drop_path(x_lnd: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """timm's `drop_path` as AIM calls it: a draw per index of dim 0 of a sequence-first tensor."""
    keep = 1.0 - p
    shape = (x_lnd.shape[0],) + (1,) * (x_lnd.ndim - 1)  # [L, 1, 1]
    mask = (keep + torch.rand(shape, generator=generator)).floor_()
    return x_lnd.div(keep) * mask


def test_aim_drop_path_drops_whole_token_positions_for_every_video_and_frame() -> None:
    p, rows, length, width = 0.5, 4 * T, 20, 6
    branch = DropPath(p, "aim").train()
    x = torch.randn(rows, length, width)  # [B*T, L, D], batch first as everywhere here
    torch.manual_seed(0)
    ratios = torch.stack([branch(x, T) / x for _ in range(40)])  # [draws, rows, L, D]
    assert set(ratios.round(decimals=4).unique().tolist()) == {0.0, 2.0}  # dropped, or kept and x 1/(1-p)
    # one draw per position, the same for every row (video and frame) and channel
    assert (ratios == ratios[:, :1, :, :1]).all()
    per_position = ratios[:, 0, :, 0]  # [draws, L]
    assert (per_position == 0).any(dim=1).all() and (per_position != 0).any(dim=1).all()
    assert 0.35 < (per_position == 0).float().mean() < 0.65

    # what AIM's code computes on its [L, B*T, D] layout has exactly this structure
    reference = aims_drop_path(x.transpose(0, 1), p, torch.Generator().manual_seed(0)).transpose(0, 1)
    ref_ratio = reference / x
    assert (ref_ratio == ref_ratio[:1, :, :1]).all()

    branch.eval()
    assert branch(x, T) is x


def test_drop_path_mode_reaches_every_adapted_block_and_defaults_to_per_video(clip_name: str) -> None:
    aim = build_model(clip_config(clip_name, "aim", drop_path=0.2, drop_path_mode="aim"))
    assert all(a.drop_path.mode == "aim" for a in aim.adapters)
    default = build_model(clip_config(clip_name, "aim", drop_path=0.2))
    assert all(a.drop_path.mode == "video" for a in default.adapters)
    x = torch.ones(4 * T, 5, 3)
    branch = default.adapters[-1].drop_path.train()
    torch.manual_seed(0)
    kept = torch.stack([branch(x, T)[:, 0, 0].view(4, T) for _ in range(30)])
    assert (kept == kept[..., :1]).all()  # the default still draws once per video


# -- 3. adapter init: AIM's trunc normal std 0.02 and zero bias on the down-projection ---------------


def test_aim_adapter_init_is_trunc_normal_002_with_zero_bias() -> None:
    torch.manual_seed(0)
    aim = Adapter(768, 0.25, skip=False, init="aim")
    default = Adapter(768, 0.25, skip=False)
    w = aim.down.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.02) and w.mean().abs() < 1e-3
    assert (aim.down.bias == 0).all()
    bound = 1 / math.sqrt(768)  # PyTorch's Linear: uniform weight and bias in +-1/sqrt(fan_in)
    assert w.abs().max() > 2 * bound  # normal tails, not PyTorch's uniform
    assert default.down.weight.abs().max() <= bound and (default.down.bias != 0).any()
    for adapter in (aim, default):  # the up-projection starts at zero either way
        assert (adapter.up.weight == 0).all() and (adapter.up.bias == 0).all()


def test_aim_adapter_init_reaches_every_adapter_and_the_model_still_starts_frozen(clip_name: str) -> None:
    model = build_model(clip_config(clip_name, "aim", adapter_init="aim", adapter_gate=True)).eval()
    downs = [
        a.down for block in model.adapters for a in (block.gate, block.temporal, block.spatial, block.joint)
    ]
    assert all((d.bias == 0).all() for d in downs)
    assert torch.cat([d.weight.flatten() for d in downs]).std().item() == pytest.approx(0.02, rel=0.1)
    frozen = build_model(clip_config(clip_name, "linear")).eval()
    x = video(T, SPEC.image_size)
    with torch.no_grad():
        torch.testing.assert_close(model.frame_features(x), frozen.frame_features(x))


# -- 4. VPT: prompt dropout and weight decay on the prompts ------------------------------------------


def test_prompt_dropout_acts_in_training_only_and_per_video(clip_name: str) -> None:
    model = build_model(clip_config(clip_name, "vpt", prompt_dropout=0.5))
    prompts = model.prompts
    tokens = prompts.tokens[0].detach()  # [k, D]
    model.train()
    assert model.backbone.training is False and prompts.training
    torch.manual_seed(0)
    out = prompts(0, 8, {}).detach()  # [B, k, D]
    ratio = out / tokens
    assert set(ratio.round(decimals=4).unique().tolist()) == {0.0, 2.0}
    assert not (ratio == ratio[:1]).all()  # each video draws its own mask
    x = video(T, SPEC.image_size)
    with torch.no_grad():
        assert not torch.equal(model.frame_features(x), model.frame_features(x))
    model.eval()
    torch.testing.assert_close(prompts(0, 8, {}), tokens.expand(8, -1, -1), atol=0, rtol=0)
    reference = build_model(clip_config(clip_name, "vpt")).eval()
    reference.load_tunable_state_dict(model.tunable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=0, rtol=0)


def test_no_prompt_dropout_by_default(clip_name: str) -> None:
    model = build_model(clip_config(clip_name, "vpt")).train()
    assert model.prompts.dropout is None
    torch.testing.assert_close(model.prompts(1, B, {}), model.prompts.tokens[1].expand(B, -1, -1))


def test_decay_prompts_puts_vpts_prompts_under_the_recipes_weight_decay(clip_name: str) -> None:
    model = build_model(clip_config(clip_name, "vpt"))
    tunable = dict(model.named_tunable_parameters())
    recipe = Recipe(name="vpt", optimizer="sgd", lr=0.1, weight_decay=0.01)

    def decay_of(groups: list[dict]) -> dict[str, float]:
        by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
        return {name: by_id[id(p)] for name, p in tunable.items()}

    default = decay_of(param_groups(model, recipe))
    assert default == {"prompts.tokens": 0.0, "head.fc.weight": 0.01, "head.fc.bias": 0.0}
    vpt = decay_of(param_groups(model, recipe, decay_prompts=True))
    assert vpt == {
        "prompts.tokens": 0.01,
        "head.fc.weight": 0.01,
        "head.fc.bias": 0.0,
    }  # VPT: all but the bias
    params = {**PARAMS, "train": {**PARAMS["train"], "decay_prompts": True}}
    assert TrainConfig.from_params(params).decay_prompts is True


# -- 5. VideoMAE: no final LayerNorm before the mean pool (APT) --------------------------------------


def test_final_norm_identity_bypasses_videomaes_last_layernorm(videomae_folder: str) -> None:
    keep = build_model(videomae_config(videomae_folder, "linear")).eval()
    identity = build_model(videomae_config(videomae_folder, "linear", final_norm="identity")).eval()
    assert isinstance(keep.backbone.model.layernorm, torch.nn.LayerNorm)
    assert identity.backbone.model.layernorm is None
    x = video(keep.config.frames, keep.config.image_size)
    with torch.no_grad():
        hidden = keep.backbone.model(pixel_values=x).last_hidden_state  # [B, N, D], normed at the end
        norm = keep.backbone.model.layernorm
        torch.testing.assert_close(keep.frame_features(x)[:, 0], hidden.mean(1))
        # identity: the blocks' output, un-normalised; the classifier's fc_norm follows either way
        raw = identity.frame_features(x)[:, 0]
        tokens = identity.backbone.embed(x)
        for i in range(identity.backbone.num_layers):
            tokens = identity.backbone.frozen_block(i, tokens)
        torch.testing.assert_close(raw, tokens.mean(1))
        torch.testing.assert_close(norm(tokens).mean(1), hidden.mean(1))
        assert not torch.allclose(raw, hidden.mean(1))
    width = keep.backbone.width
    assert keep.parameter_counts()[1] - identity.parameter_counts()[1] == 2 * width
    assert keep.parameter_counts()[0] == identity.parameter_counts()[0]
    assert "norm" in dict(identity.head.named_children())  # fc_norm, as VideoMAE fine-tuning / APT


def test_readout_is_the_token_mean_at_the_width_on_videomae_either_way(videomae_folder: str) -> None:
    backbone = load_videomae(videomae_folder, param="model.backbone.name")
    width = build_model(videomae_config(videomae_folder, "linear", readout="width"))
    assert width.head.fc.in_features == backbone.width == backbone.feature_dim


# -- 6. object vocabularies ------------------------------------------------------------------------


def test_coco_vocabulary_is_cocos_80_categories_and_objects_txt_is_marked_as_a_prior() -> None:
    coco = read_vocabulary(REPO / "eva" / "resources" / "coco_objects.txt")
    assert len(coco) == len(set(coco)) == 80
    assert (coco[0], coco[1], coco[-1]) == ("person", "bicycle", "toothbrush")
    assert {"traffic light", "teddy bear", "hair drier", "dining table"} <= set(coco)
    objects_file = REPO / "eva" / "resources" / "objects.txt"
    assert objects_file.read_text(encoding="utf-8").startswith("# ")  # the header says what it is
    objects = read_vocabulary(objects_file)
    assert len(objects) == 362 and "swing" in objects and not any(w.startswith("#") for w in objects)
