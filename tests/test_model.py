"""The video model on a tiny random open_clip ViT written to disk and loaded like real weights."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip
from eva.models import METHODS, ModelConfig, VideoClassifier, build_model
from eva.models.clip_backbone import OpenClipBackbone
from eva.models.tokens import aligned_encoder_layer, token_gated_attention
from eva.weights_io import load_open_clip

SPEC = TinyClipSpec()
T = 4
B = 2
N = (SPEC.image_size // SPEC.patch_size) ** 2  # patches per frame
STAGE1 = ("label", "caption")
STAGE2 = ("label", "caption", "foreground", "background", "original", "dynamic")
# Attribute encoder = the tiny CLIP: text tower for label/caption, image tower for the rest.
ENCODER_LAYERS = {name: SPEC.text_layers if name in STAGE1 else SPEC.vision_layers for name in STAGE2}
ENCODER_DIM = SPEC.embed_dim
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def backbone_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_open_clip(tmp_path_factory.mktemp("backbone"), SPEC)


def make_config(backbone: str, method: str, **overrides) -> ModelConfig:
    fields = dict(
        method=method,
        num_classes=NUM_CLASSES,
        backbone=backbone,
        frames=T,
        image_size=SPEC.image_size,
        time_embedding_init=0.0,  # AIM's zero init: a fresh model computes the frozen backbone
        prompt_length=3,
        attributes=STAGE1 if method == "eva" else (),
        attribute_layers=dict(ENCODER_LAYERS),
        attribute_dim=ENCODER_DIM,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def make_inputs(names=STAGE2, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(B, T, 3, SPEC.image_size, SPEC.image_size, generator=gen)
    attributes = {n: torch.randn(B, ENCODER_LAYERS[n], ENCODER_DIM, generator=gen).half() for n in names}
    return video, attributes


def frozen_clip_features(backbone: str, video: torch.Tensor) -> torch.Tensor:
    """The frozen backbone as open_clip itself runs it, one frame at a time: [B, T, D_out]."""
    visual = load_open_clip(backbone, param="model.backbone", image_size=SPEC.image_size).model.visual
    with torch.no_grad():
        return torch.stack([visual(video[:, t]) for t in range(video.shape[1])], dim=1)


@pytest.mark.parametrize(("method", "attributes"), [("aim", ()), ("eva", ())])
def test_adapted_model_starts_as_the_frozen_backbone(
    backbone_name: str, method: str, attributes: tuple
) -> None:
    model = build_model(make_config(backbone_name, method, attributes=attributes)).eval()
    video, _ = make_inputs()
    expected = frozen_clip_features(backbone_name, video)
    with torch.no_grad():
        got = model.frame_features(video)
    assert got.shape == (B, T, SPEC.embed_dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # The check has teeth: a non-zero adapter, or attribute tokens, change the features.
    with torch.no_grad():
        model.adapters[1].joint.up.weight.normal_(std=0.01)  # not constant: LayerNorm would cancel it
        assert (model.frame_features(video) - expected).abs().max() > 1e-4


@pytest.mark.parametrize("attention", ["gated", "gated_per_token"])
@pytest.mark.parametrize("attributes", [STAGE1, STAGE2])
def test_gated_attribute_tokens_start_closed_and_steer_once_open(
    backbone_name: str, attributes: tuple, attention: str
) -> None:
    """Gated attribute attention: a fresh eva model is the frozen backbone, whatever the attributes."""
    config = make_config(backbone_name, "eva", attributes=attributes, attribute_attention=attention)
    model = build_model(config).eval()
    video, features = make_inputs(attributes)
    expected = frozen_clip_features(backbone_name, video)
    gates = model.attribute_tokens.gates
    per_token = (len(attributes),) if attention == "gated_per_token" else ()
    assert gates.shape == (SPEC.vision_layers, SPEC.heads, *per_token)  # per layer and head (and token)
    with torch.no_grad():
        torch.testing.assert_close(model.frame_features(video, features), expected, atol=1e-5, rtol=0)
        gates.fill_(0.5)  # open: the tokens now steer the features
        opened = model.frame_features(video, features)
        other = model.frame_features(video, make_inputs(attributes, seed=1)[1])
    assert (opened - expected).abs().max() > 1e-3
    assert (opened - other).abs().max() > 1e-3  # through the attributes, not only the gate
    if per_token:
        with torch.no_grad():
            gates.zero_()
            gates[..., attributes.index("label")] = 0.5  # one attribute opens on its own
            label_only = model.frame_features(video, features)
        assert (label_only - expected).abs().max() > 1e-3


def test_joint_attribute_tokens_change_features_from_the_start(backbone_name: str) -> None:
    """`attribute_attention: joint` (the EVA paper): the tokens join the block's softmax, no gate."""
    model = build_model(
        make_config(backbone_name, "eva", attributes=STAGE1, attribute_attention="joint")
    ).eval()
    assert model.attribute_tokens.gates is None
    video, attributes = make_inputs(STAGE1)
    with torch.no_grad():
        got = model.frame_features(video, attributes)
    assert (got - frozen_clip_features(backbone_name, video)).abs().max() > 1e-4


@pytest.mark.parametrize("extra", [slice(1, 3), slice(0, 2)])  # after CLS (open_clip), prepended (VideoMAE)
def test_token_gated_attention_is_the_two_softmaxes_it_documents(extra: slice) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=gen) for _ in range(3))  # [S, h, L, e]
    own = [i for i in range(7) if not extra.start <= i < extra.stop]

    def softmax_attention(keys: list[int]) -> torch.Tensor:
        weights = (q @ k[:, :, keys].transpose(-1, -2) / 2.0).softmax(-1)  # e = 4: scale 1/2
        return weights @ v[:, :, keys]

    tokens = list(range(7))[extra]
    head_gate = torch.tensor([0.0, 0.3, -2.0])  # [h]: `gated`
    got = token_gated_attention(q, k, v, extra, head_gate)
    want = softmax_attention(own) + torch.tanh(head_gate).view(1, 3, 1, 1) * softmax_attention(tokens)
    torch.testing.assert_close(got, want)
    token_gate = torch.tensor([[0.0, 0.0], [0.3, 0.3], [-2.0, 0.7]])  # [h, k]: `gated_per_token`
    got = token_gated_attention(q, k, v, extra, token_gate)
    weights = (q @ k[:, :, tokens].transpose(-1, -2) / 2.0).softmax(-1)  # [S, h, L, k]: one softmax
    want = softmax_attention(own) + (weights * torch.tanh(token_gate).view(1, 3, 1, 2)) @ v[:, :, tokens]
    torch.testing.assert_close(got, want)
    # a head whose gate is equal across tokens is the per-head gate
    equal = token_gated_attention(q, k, v, extra, head_gate[:, None].expand(3, 2))
    torch.testing.assert_close(equal, token_gated_attention(q, k, v, extra, head_gate))
    for closed in (torch.zeros(3), torch.zeros(3, 2)):  # a shut gate: as if the tokens were absent
        torch.testing.assert_close(token_gated_attention(q, k, v, extra, closed), softmax_attention(own))
    torch.testing.assert_close(token_gated_attention(q, k, v, extra, None), softmax_attention(list(range(7))))
    with pytest.raises(ValueError, match=r"gate must be \[heads\] = \[3\] or \[heads, tokens\] = \[3, 2\]"):
        token_gated_attention(q, k, v, extra, torch.zeros(3, 3))


def test_bad_attribute_attention_names_its_key(backbone_name: str) -> None:
    with pytest.raises(ValueError, match="model.eva.attribute_attention"):
        build_model(make_config(backbone_name, "eva", attribute_attention="sparse"))


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_exactly_the_tunable_tensors(backbone_name: str, method: str) -> None:
    torch.manual_seed(0)
    config = make_config(backbone_name, method, attributes=STAGE2 if method == "eva" else ())
    model = build_model(config).train()
    tunable = dict(model.named_tunable_parameters())
    frozen = {n: p for n, p in model.named_parameters() if n not in tunable}
    assert all(p.requires_grad for p in tunable.values())
    assert all(not p.requires_grad for p in frozen.values())
    if method == "full":
        assert not frozen
    else:
        assert frozen and all(n.startswith("backbone.") for n in frozen)
    if method == "eva":
        assert any(n.startswith("attribute_tokens.projections.") for n in tunable)
    before = {n: p.detach().clone() for n, p in frozen.items()}

    video, attributes = make_inputs()
    labels = torch.arange(B) % NUM_CLASSES
    optimizer = torch.optim.SGD(tunable.values(), lr=0.5)
    # Zero up-projections block gradients behind them at step 0 (gate -> temporal adapter is two deep),
    # so by the third step every tunable tensor must be receiving gradient.
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(video, attributes), labels).backward()
        assert all(p.grad is None for p in frozen.values())
        assert all(p.grad is not None for p in tunable.values())
        if step == 0 and model.method.layer == "aim":
            ups = [a.up.weight.grad for blk in model.adapters for a in (blk.spatial, blk.joint, blk.temporal)]
            assert all(g.abs().sum() > 0 for g in ups)
        if step < 2:
            optimizer.step()
    no_grad = [n for n, p in tunable.items() if p.grad.abs().sum() == 0]
    assert not no_grad, f"tunable tensors without gradient: {no_grad}"
    for name, p in frozen.items():
        assert torch.equal(p, before[name]), name


@pytest.mark.parametrize(
    ("method", "attributes", "extra"),
    [("eva", STAGE1, 2), ("eva", STAGE2, 6), ("vpt", (), 3), ("aim", (), 0), ("linear", (), 0)],
)
def test_tokens_per_frame_inside_every_block(
    backbone_name: str, method: str, attributes: tuple, extra: int
) -> None:
    model = build_model(make_config(backbone_name, method, attributes=attributes)).eval()
    seen = []
    hooks = [
        block.mlp.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
        for block in model.backbone.blocks
    ]
    video, attrs = make_inputs()
    with torch.no_grad():
        model(video, attrs)
    for hook in hooks:
        hook.remove()
    assert seen == [(B * T, 1 + extra + N, SPEC.vision_width)] * SPEC.vision_layers


def test_attribute_layers_align_encoder_depth_to_backbone_depth() -> None:
    assert [aligned_encoder_layer(i, 12, 12) for i in range(12)] == list(range(12))
    assert [aligned_encoder_layer(i, 24, 12) for i in range(12)] == list(range(1, 24, 2))
    assert [aligned_encoder_layer(i, 3, 4) for i in range(4)] == [0, 1, 1, 2]
    assert [aligned_encoder_layer(i, 12, 4) for i in range(4)] == [2, 5, 8, 11]
    assert [aligned_encoder_layer(i, 1, 4) for i in range(4)] == [0, 0, 0, 0]


def test_only_aligned_encoder_layers_reach_the_model(backbone_name: str) -> None:
    # 8 encoder layers for 4 backbone layers: layers 1, 3, 5, 7 are read, the others never.
    config = make_config(backbone_name, "eva", attributes=("label",), attribute_layers={"label": 8})
    model = build_model(config).eval()
    video, _ = make_inputs()
    label = torch.randn(B, 8, ENCODER_DIM)
    with torch.no_grad():
        model.attribute_tokens.gates.fill_(0.5)  # open, so that what is read shows
        ref = model(video, {"label": label})
        unread = label.clone()
        unread[:, [0, 2, 4, 6]] += 10.0
        read = label.clone()
        read[:, 7] += 10.0
        torch.testing.assert_close(model(video, {"label": unread}), ref, atol=0, rtol=0)
        assert (model(video, {"label": read}) - ref).abs().max() > 1e-4


def expected_tunable(
    method: str,
    attributes: tuple[str, ...],
    ratio: float = 0.25,
    length: int = 3,
    *,
    gate: bool | None = None,
    projection: str = "linear",
    attention: str = "gated",
) -> int:
    width, layers = SPEC.vision_width, SPEC.vision_layers
    hidden = int(width * ratio)
    adapter = width * hidden + hidden + hidden * width + width  # down + up, with biases
    head = SPEC.embed_dim * NUM_CLASSES + NUM_CLASSES  # on the projected CLS
    if method == "linear":
        return head
    if method == "vpt":
        return layers * length * width + head
    if gate is None:
        gate = method == "eva"  # each method's published layout (ADAPTER_LAYOUTS)
    per_block = 4 if gate else 3  # temporal, spatial, joint (+ gate)
    aim = layers * per_block * adapter + T * width + head  # adapters + time embedding + head
    if method == "aim":
        return aim
    n = len(attributes)
    tokens = math.ceil(n * ENCODER_DIM / width) if projection == "none" else n
    per_token = {"gated": 1, "gated_per_token": tokens, "joint": 0}[attention]
    gates = layers * SPEC.heads * per_token  # per layer and head (and token)
    if projection == "none":
        return aim + gates
    # one projection per attribute + per-layer offsets
    return aim + n * (ENCODER_DIM * width + width) + layers * n * width + gates


@pytest.mark.parametrize(
    ("method", "attributes", "ratio", "overrides"),
    [
        ("linear", (), 0.25, {}),
        ("vpt", (), 0.25, {}),
        ("aim", (), 0.25, {}),
        ("aim", (), 0.5, {}),
        ("aim", (), 0.25, {"adapter_gate": True}),
        ("eva", STAGE1, 0.25, {}),
        ("eva", STAGE2, 0.25, {}),
        ("eva", STAGE2, 0.25, {"adapter_gate": False}),
        ("eva", STAGE1, 0.25, {"attribute_projection": "none"}),
        ("eva", STAGE2, 0.25, {"attribute_projection": "none"}),
        ("eva", STAGE2, 0.25, {"attribute_attention": "joint"}),
        ("eva", STAGE2, 0.25, {"attribute_attention": "gated_per_token"}),
        ("eva", STAGE2, 0.25, {"attribute_projection": "none", "attribute_attention": "gated_per_token"}),
        ("eva", STAGE2, 0.25, {"attribute_projection": "none", "attribute_attention": "joint"}),
        ("full", (), 0.25, {}),
    ],
)
def test_tunable_counts_follow_from_the_config(
    backbone_name: str, method: str, attributes: tuple, ratio: float, overrides: dict
) -> None:
    config = make_config(backbone_name, method, attributes=attributes, adapter_ratio=ratio, **overrides)
    model = build_model(config)
    visual = load_open_clip(backbone_name, param="model.backbone", image_size=SPEC.image_size).model.visual
    backbone_count = sum(p.numel() for p in visual.parameters())
    tunable, total = model.parameter_counts()
    if method == "full":
        assert tunable == total == backbone_count + expected_tunable("linear", ())
    else:
        expected = expected_tunable(
            method,
            attributes,
            ratio,
            gate=overrides.get("adapter_gate"),
            projection=overrides.get("attribute_projection", "linear"),
            attention=overrides.get("attribute_attention", "gated"),
        )
        assert tunable == expected
        assert total == backbone_count + tunable
    assert sum(v.numel() for v in model.tunable_state_dict().values()) == tunable


def test_aim_layout_is_aims_vit_b16_and_eva_follows_the_eva_paper(backbone_name: str) -> None:
    aim = build_model(make_config(backbone_name, "aim"))
    assert all(a.gate is None and a.scale == 0.5 for a in aim.adapters)
    eva = build_model(make_config(backbone_name, "eva"))
    assert all(a.gate is not None and a.scale == 1.0 for a in eva.adapters)
    gated = build_model(make_config(backbone_name, "aim", adapter_gate=True, adapter_scale=1.0))
    assert all(a.gate is not None and a.scale == 1.0 for a in gated.adapters)


def test_aim_on_clip_vit_b16_with_400_classes_matches_aims_published_count() -> None:
    """AIM's README/paper: ViT-B/16 CLIP on K400, 97M parameters of which 11M tunable."""
    import open_clip

    visual = open_clip.create_model("ViT-B-16-quickgelu").visual
    config = ModelConfig(method="aim", num_classes=400, backbone="ViT-B-16", frames=8, image_size=224)
    model = VideoClassifier(config, OpenClipBackbone(visual, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    tunable, total = model.parameter_counts()
    adapter = 768 * 192 + 192 + 192 * 768 + 768
    assert tunable == 12 * 3 * adapter + 8 * 768 + 512 * 400 + 400 == 10_862_736
    assert round(tunable / 1e6) == 11 and round(total / 1e6) == 97


def test_drop_path_drops_whole_videos_in_training_and_is_identity_in_eval(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "aim", drop_path=0.5))
    rates = [a.drop_path.p for a in model.adapters]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)  # AIM's linear rule
    with torch.no_grad():
        for adapter in model.adapters:  # non-zero adapters, so the branches matter
            adapter.temporal.up.weight.normal_(std=0.05)
            adapter.joint.up.weight.normal_(std=0.05)
    video, _ = make_inputs()
    reference = build_model(make_config(backbone_name, "aim"))
    reference.load_tunable_state_dict(model.tunable_state_dict())
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.frame_features(video), reference.frame_features(video))

    branch = model.adapters[-1].drop_path.train()
    x = torch.ones(4 * T, 3, 2)  # 4 videos x T frames
    torch.manual_seed(0)
    kept = torch.stack([branch(x, T)[:, 0, 0].view(4, T) for _ in range(50)])  # [50, videos, T]
    assert set(kept.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert (kept == kept[..., :1]).all()  # one draw per video, shared by its frames
    assert 0.3 < (kept == 0).float().mean() < 0.7


def test_parameter_free_projection_cuts_the_concatenated_features_into_tokens(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "eva", attributes=STAGE2, attribute_projection="none"))
    tokens = model.attribute_tokens
    width = SPEC.vision_width
    assert tokens.num_tokens == math.ceil(6 * ENCODER_DIM / width) == 4
    assert [name for name, _ in tokens.named_parameters()] == ["gates"]  # nothing else: no projection
    _, attributes = make_inputs()
    attributes = {k: v.float() for k, v in attributes.items()}
    layer = SPEC.vision_layers - 1
    got = tokens(layer, B, attributes)  # [B, k, D]
    flat = torch.cat([attributes[n][:, tokens.layer_map[n][layer]] for n in STAGE2], dim=1)  # [B, 6*D_enc]
    assert got.shape == (B, 4, width)
    torch.testing.assert_close(got.flatten(1)[:, : flat.shape[1]], flat, atol=0, rtol=0)
    assert (got.flatten(1)[:, flat.shape[1] :] == 0).all()  # zero padding up to a whole token
    # and the features really steer the model
    video, _ = make_inputs()
    with torch.no_grad():
        tokens.gates.fill_(0.5)
        changed = {**attributes, "caption": attributes["caption"] + 1.0}
        assert (model(video, attributes) - model(video, changed)).abs().max() > 1e-4


@pytest.mark.parametrize("method", ["aim", "full"])
def test_train_mode_leaves_a_frozen_backbone_in_eval(backbone_name: str, method: str) -> None:
    model = build_model(make_config(backbone_name, method)).train()
    assert model.training and model.head.training
    assert all(m.training == (method == "full") for m in model.backbone.modules())
    if model.adapters is not None:
        assert all(m.training for m in model.adapters.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_frozen_backbone_output_does_not_depend_on_train_mode(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "aim", head_dropout=0.0))
    video, _ = make_inputs()
    with torch.no_grad():
        train_out = model.train().frame_features(video)
        eval_out = model.eval().frame_features(video)
    torch.testing.assert_close(train_out, eval_out, atol=0, rtol=0)


def test_tunable_state_round_trip(backbone_name: str, tmp_path: Path) -> None:
    config = make_config(backbone_name, "eva", attributes=STAGE1)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    video, attributes = make_inputs(STAGE1)
    torch.save(model.tunable_state_dict(), tmp_path / "tunable.pt")
    assert not any(k.startswith("backbone.") for k in model.tunable_state_dict())

    restored = build_model(config).eval()
    restored.load_tunable_state_dict(torch.load(tmp_path / "tunable.pt"))
    with torch.no_grad():
        torch.testing.assert_close(restored(video, attributes), model(video, attributes), atol=0, rtol=0)

    other = build_model(make_config(backbone_name, "aim"))
    with pytest.raises(ValueError, match="missing"):
        other.load_tunable_state_dict(torch.load(tmp_path / "tunable.pt"))


def test_preprocessing_stats_are_exposed_not_applied(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "linear"))
    bundle = load_open_clip(backbone_name, param="model.backbone")
    assert model.mean.tolist() == pytest.approx(bundle.mean)
    assert model.std.tolist() == pytest.approx(bundle.std)
    assert "mean" not in model.state_dict()


def test_vpt_prompts_use_the_vpt_initialisation(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "vpt", prompt_length=5))
    bound = math.sqrt(6.0 / (3 * SPEC.patch_size**2 + SPEC.vision_width))
    prompts = model.prompts.tokens
    assert prompts.shape == (SPEC.vision_layers, 5, SPEC.vision_width)
    assert prompts.abs().max() <= bound and prompts.abs().max() > bound / 2


def test_bad_inputs_are_value_errors(backbone_name: str) -> None:
    model = build_model(make_config(backbone_name, "eva", attributes=STAGE1))
    video, attributes = make_inputs(STAGE1)
    with pytest.raises(ValueError, match="model.frames"):
        model(video[:, :3], attributes)
    with pytest.raises(ValueError, match="model.image_size"):
        model(video[..., :32, :32], attributes)
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        model(video[0], attributes)
    with pytest.raises(ValueError, match="attribute 'caption' missing"):
        model(video, {"label": attributes["label"]})
    with pytest.raises(ValueError, match="attribute 'label' must be"):
        model(video, {**attributes, "label": attributes["label"][:, :2]})
    with pytest.raises(ValueError, match="attribute 'label' must be"):
        model(video, {**attributes, "label": attributes["label"][:1]})
    with pytest.raises(ValueError, match="attribute 'label' must be"):
        model(video, {**attributes, "label": attributes["label"].mean(1)})
    # Attributes the method does not use are ignored (the loader may hand over all six).
    model(video, make_inputs(STAGE2)[1])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"method": "adapterformer"}, "model.method"),
        ({"method": "vpt", "prompt_length": 0}, "model.vpt.length"),
        ({"adapter_ratio": 0.0}, "model.adapter.ratio"),
        ({"frames": 0}, "model.frames"),
        ({"drop_path": 1.0}, "model.drop_path"),
        ({"method": "eva", "attribute_projection": "conv"}, "model.eva.attribute_projection"),
        ({"method": "eva", "attribute_layers": {"label": 3}}, "caption"),
    ],
)
def test_bad_configs_name_the_param(backbone_name: str, overrides: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):  # at construction (its rules) or at build
        build_model(make_config(backbone_name, overrides.pop("method", "aim"), **overrides))


def test_config_survives_a_json_round_trip(backbone_name: str) -> None:
    import dataclasses
    import json

    config = make_config(backbone_name, "eva", attributes=STAGE2)
    again = ModelConfig(**json.loads(json.dumps(dataclasses.asdict(config))))
    assert again == config
    assert isinstance(build_model(again), VideoClassifier)


@pytest.mark.parametrize("method", ["linear", "aim"])
def test_sequence_first_attention_gives_the_same_output(backbone_name: str, method: str) -> None:
    # open_clip can run its blocks sequence-first (batch_first=False); the wrapper must not care.
    model = build_model(make_config(backbone_name, method)).eval()
    video, _ = make_inputs()
    with torch.no_grad():
        ref = model.frame_features(video)
        for block in model.backbone.blocks:
            block.attn.batch_first = False
        torch.testing.assert_close(model.frame_features(video), ref, atol=1e-5, rtol=0)


def test_fixed_sin_cos_position_embedding_loads_and_runs_as_the_frozen_backbone(tmp_path: Path) -> None:
    """`pretrain.clip.pos_embed: sin_cos_2d` (the demo CLIP): open_clip's fixed table survives the round trip."""
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    spec = dataclasses.replace(SPEC, pos_embed="sin_cos_2d")
    name = save_tiny_open_clip(tmp_path / "clip", spec)
    visual = load_open_clip(name, param="model.backbone", image_size=spec.image_size).model.visual
    table = get_2d_sincos_pos_embed(spec.vision_width, spec.image_size // spec.patch_size, cls_token=True)
    torch.testing.assert_close(visual.positional_embedding.detach(), torch.from_numpy(table).float())
    assert not visual.positional_embedding.requires_grad  # fixed, as open_clip builds it
    model = build_model(make_config(name, "aim")).eval()
    video, _ = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            model.frame_features(video), frozen_clip_features(name, video), atol=1e-5, rtol=0
        )
