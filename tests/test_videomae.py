"""VideoMAE backbone: a tiny random VideoMAE saved with save_pretrained, loaded like real weights.

The reference everywhere is transformers' own `VideoMAEModel` loaded from the same folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
from eva.models import ModelConfig, VideoClassifier
from eva.models.videomae import (
    VIDEOMAE_MEAN,
    VIDEOMAE_STD,
    VideoMAEBackbone,
    VideoMAEBlockAdapters,
    encode,
    load_videomae,
)

PARAM = "model.backbone.name"
SPEC = TinyVideoMAESpec()
B = 2
K = 3  # extra tokens per layer
N = (SPEC.frames // SPEC.tubelet) * (SPEC.image_size // SPEC.patch_size) ** 2


@pytest.fixture(scope="module", params=[True, False], ids=["mean_pooling", "final_norm"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """use_mean_pooling=True (fine-tuned checkpoints) and False (pre-training ones, final LayerNorm)."""
    spec = TinyVideoMAESpec(use_mean_pooling=request.param)
    return save_tiny_videomae(tmp_path_factory.mktemp("videomae"), spec)


@pytest.fixture(scope="module")
def backbone(folder: str) -> VideoMAEBackbone:
    return load_videomae(folder, param=PARAM)


def hf_model(folder: str, attn: str = "eager") -> VideoMAEModel:
    return VideoMAEModel.from_pretrained(folder, attn_implementation=attn).eval()


def make_video(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, SPEC.frames, 3, SPEC.image_size, SPEC.image_size, generator=gen)


def make_adapters(backbone: VideoMAEBackbone) -> nn.ModuleList:
    return nn.ModuleList(VideoMAEBlockAdapters(backbone.width, 0.25, 1.0) for _ in range(backbone.num_layers))


# -- loading -----------------------------------------------------------------------------------


def test_load_gives_a_frozen_backbone_with_the_folders_shape(folder: str, backbone: VideoMAEBackbone) -> None:
    assert sorted(p.name for p in Path(folder).iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    shape = (backbone.width, backbone.num_layers, backbone.frames, backbone.tubelet, backbone.image_size)
    assert shape == (SPEC.hidden_size, SPEC.layers, SPEC.frames, SPEC.tubelet, SPEC.image_size)
    assert (backbone.num_tokens, backbone.feature_dim) == (N, SPEC.hidden_size)
    assert backbone.mean == pytest.approx(VIDEOMAE_MEAN) and backbone.std == pytest.approx(VIDEOMAE_STD)
    assert not backbone.model.training
    # The position table moves with `.to(device)` but is not a weight (nothing to save or load).
    assert "position_embeddings" in dict(backbone.named_buffers())
    assert "position_embeddings" not in backbone.state_dict()
    assert not any(p.requires_grad for p in backbone.parameters())
    # The saved weights are what was loaded (not a fresh random init).
    reference = hf_model(folder).state_dict()
    for name, tensor in backbone.model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], atol=0, rtol=0)


def test_normalisation_comes_from_the_image_processor(folder: str, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    shutil.copytree(folder, custom)
    VideoMAEImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(custom)
    loaded = load_videomae(str(custom), param=PARAM)
    assert loaded.mean == pytest.approx((0.5, 0.4, 0.3)) and loaded.std == pytest.approx((0.2, 0.25, 0.3))

    (custom / "preprocessor_config.json").unlink()  # no processor: VideoMAE's ImageNet statistics
    loaded = load_videomae(str(custom), param=PARAM)
    assert loaded.mean == pytest.approx((0.485, 0.456, 0.406))
    assert loaded.std == pytest.approx((0.229, 0.224, 0.225))


def test_missing_weights_fail_fast_naming_the_param(folder: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"`{PARAM}`") as err:
        load_videomae(str(tmp_path / "absent"), param=PARAM)
    assert "absent" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"no config.json.*`{PARAM}`"):
        load_videomae(str(empty), param=PARAM)

    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"`{PARAM}`"):
        load_videomae(str(no_weights), param=PARAM)

    # A checkpoint with fewer layers than its config: transformers would random-init the rest.
    deeper = tmp_path / "deeper"
    shutil.copytree(folder, deeper)
    config = json.loads((deeper / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (deeper / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=f"lacks .*encoder.layer.{SPEC.layers}.*`{PARAM}`"):
        load_videomae(str(deeper), param=PARAM)

    # A hub name that is not in the local cache (HF_HUB_OFFLINE=1: no download is attempted).
    with pytest.raises(FileNotFoundError, match=f"eva-tests/no-such-videomae.*`{PARAM}`"):
        load_videomae("eva-tests/no-such-videomae", param=PARAM)


# -- equality with transformers' own forward ---------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_embed_blocks_readout_equal_videomae_model(
    folder: str, backbone: VideoMAEBackbone, attn: str
) -> None:
    model = hf_model(folder, attn)
    video = make_video()
    with torch.no_grad():
        expected = model(pixel_values=video).last_hidden_state  # [B, N, D]
        x = backbone.embed(video)
        torch.testing.assert_close(x, model.embeddings(video, None), atol=0, rtol=0)
        for i, layer in enumerate(model.encoder.layer):
            h = backbone.ln_1(i, x)
            torch.testing.assert_close(backbone.attention(i, h), layer.attention(h), atol=1e-5, rtol=0)
            y = backbone.frozen_block(i, x)
            torch.testing.assert_close(y, layer(x), atol=1e-5, rtol=0)
            x = y
        pooled = backbone.readout(x)
    assert x.shape == (B, N, SPEC.hidden_size) and pooled.shape == (B, SPEC.hidden_size)
    torch.testing.assert_close(pooled, expected.mean(dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(backbone, video), expected.mean(dim=1), atol=1e-5, rtol=0)


def test_wrong_frame_count_or_size_names_the_param(backbone: VideoMAEBackbone) -> None:
    video = make_video()
    with pytest.raises(ValueError, match=r"takes exactly 4 .*`model.frames` to 4"):
        backbone.embed(video[:, :2])
    with pytest.raises(ValueError, match=r"`model.image_size` to 32"):
        backbone.embed(video[..., :16, :16])


# -- the adapted block -------------------------------------------------------------------------


def test_adapters_at_init_give_exactly_the_frozen_features(backbone: VideoMAEBackbone) -> None:
    adapters = make_adapters(backbone)
    video = make_video()
    with torch.no_grad():
        frozen = encode(backbone, video)
        adapted = encode(backbone, video, adapters)
        assert torch.equal(adapted, frozen)
        # The check has teeth: each trained-looking adapter changes the features (the gate only
        # matters once the temporal adapter after it is non-zero, so it comes second).
        previous = frozen
        for name in ("temporal", "gate", "spatial", "joint"):
            getattr(adapters[0], name).up.weight.normal_(std=0.05)
            current = encode(backbone, video, adapters)
            assert (current - previous).abs().max() > 1e-4, name
            previous = current


def test_adapted_block_follows_the_authors_aimblock(folder: str, backbone: VideoMAEBackbone) -> None:
    """With trained-looking adapters, layer i computes APT's `AIMBlock.forward` on HF's own modules."""
    block = VideoMAEBlockAdapters(backbone.width, 0.25, 0.5)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        layer = hf_model(folder).encoder.layer[1]
        x = backbone.embed(make_video())
        attn, ln1, ln2 = layer.attention, layer.layernorm_before, layer.layernorm_after
        expected = x + block.temporal(attn(block.gate(ln1(x))))  # "temporal" pass, gate before it
        expected = expected + block.spatial(attn(ln1(expected)))  # spatial pass on the updated x
        xn = ln2(expected)
        expected = expected + layer.output.dense(layer.intermediate(xn)) + 0.5 * block.joint(xn)
        torch.testing.assert_close(block(backbone, 1, x), expected, atol=1e-5, rtol=0)


def _attend_over(layer: nn.Module, queries: torch.Tensor, context: torch.Tensor, heads: int) -> torch.Tensor:
    """HF layer's attention with queries from `queries` and keys/values from `context` (reference)."""
    self_attn = layer.attention.attention
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731  [B, h, S, D/h]
    q, k, v = split(self_attn.query(queries)), split(self_attn.key(context)), split(self_attn.value(context))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # [B, S_q, D]
    return layer.attention.output.dense(out)


def test_extra_tokens_reach_the_patches_only_through_attention(
    folder: str, backbone: VideoMAEBackbone
) -> None:
    adapters = make_adapters(backbone)
    model = hf_model(folder)
    video = make_video()
    gen = torch.Generator().manual_seed(1)
    tokens = [torch.randn(B, K, backbone.width, generator=gen) for _ in range(backbone.num_layers)]
    with torch.no_grad():
        x = backbone.embed(video)
        # One layer: the patch outputs are the frozen layer's, with attention over [tokens, patches].
        inserted = backbone.insert_tokens(x, tokens[0])
        assert inserted.shape == (B, K + N, backbone.width)
        torch.testing.assert_close(inserted[:, :K], tokens[0], atol=0, rtol=0)
        out = backbone.drop_tokens(adapters[0](backbone, 0, inserted), K)
        assert out.shape == (B, N, backbone.width)
        layer = model.encoder.layer[0]
        context = layer.layernorm_before(inserted)
        y = x + _attend_over(layer, layer.layernorm_before(x), context, backbone.num_heads)
        y = y + layer.output.dense(layer.intermediate(layer.layernorm_after(y)))
        torch.testing.assert_close(out, y, atol=1e-5, rtol=0)

        # All layers: adapted at init == frozen with the same tokens; both differ from no tokens.
        with_tokens = encode(backbone, video, adapters, tokens)
        torch.testing.assert_close(with_tokens, encode(backbone, video, None, tokens), atol=1e-6, rtol=0)
        assert with_tokens.shape == (B, backbone.width)
        assert (with_tokens - encode(backbone, video)).abs().max() > 1e-3


def test_gradients_reach_only_adapters_fc_norm_and_head(backbone: VideoMAEBackbone) -> None:
    adapters = make_adapters(backbone)
    fc_norm = nn.LayerNorm(backbone.width)
    head = nn.Linear(backbone.width, 5)
    tunable = [*adapters.parameters(), *fc_norm.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(tunable, lr=0.5)
    gen = torch.Generator().manual_seed(2)
    tokens = [torch.randn(B, K, backbone.width, generator=gen) for _ in range(backbone.num_layers)]
    video, labels = make_video(), torch.tensor([0, 3])

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(head(fc_norm(encode(backbone, video, adapters, tokens))), labels).backward()

    step()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in tunable)
    for block in adapters:
        # Zero-init up-projections get a real gradient, except the gate's: it feeds the temporal
        # adapter, whose output is 0 until its own up-projection has moved.
        for name in ("temporal", "spatial", "joint"):
            assert getattr(block, name).up.weight.grad.abs().sum() > 0, name
        assert block.gate.up.weight.grad.abs().sum() == 0
    optimizer.step()
    step()
    assert all(p.grad is None for p in backbone.parameters())
    for block in adapters:
        assert block.gate.up.weight.grad.abs().sum() > 0


# -- the EVA authors' parameter count on VideoMAE ViT-B ----------------------------------------


@pytest.fixture(scope="module")
def vit_b() -> VideoMAEBackbone:
    """Default `VideoMAEConfig()`: ViT-B, 16 frames, tubelet 2, 224 px, mean pooling (random init)."""
    torch.manual_seed(0)
    model = VideoMAEModel(VideoMAEConfig()).eval().requires_grad_(False)
    return VideoMAEBackbone(model)


def test_eva_on_videomae_vit_b_has_the_authors_exact_parameter_count(vit_b: VideoMAEBackbone) -> None:
    shape = (vit_b.width, vit_b.num_layers, vit_b.frames, vit_b.tubelet, vit_b.image_size)
    assert shape == (768, 12, 16, 2, 224)
    assert vit_b.num_tokens == 1568 and vit_b.readout(torch.zeros(1, 1568, 768)).shape == (1, 768)
    # 12 layers x 4 adapters 768-192-768 (gate on), fc_norm, head for HMDB51's 51 classes; attribute
    # tokens without projection (model.eva.attribute_projection: none) read by the block's own softmax
    # (model.eva.attribute_attention: joint, the authors' attention) add no parameters. Through the
    # real classifier, with the default `auto` layout of eva on VideoMAE (gate on, scale 1).
    config = ModelConfig(
        method="eva",
        num_classes=51,
        backbone="MCG-NJU/videomae-base",
        backbone_family="videomae",
        frames=16,
        image_size=224,
        attribute_projection="none",
        attribute_attention="joint",
        attributes=("label", "caption", "foreground", "background", "original", "dynamic"),
        attribute_layers=dict.fromkeys(
            ("label", "caption", "foreground", "background", "original", "dynamic"), 12
        ),
        attribute_dim=512,
    )
    model = VideoClassifier(config, vit_b)
    assert config.adapter_gate is True and config.adapter_scale == 1.0
    assert model.temporal_embedding is None  # APT adds no time embedding on VideoMAE
    adapter_hidden = {m.down.out_features for m in model.adapters.modules() if hasattr(m, "down")}
    assert adapter_hidden == {192}
    n_tunable, n_total = model.parameter_counts()
    n_backbone = n_total - n_tunable
    tunable_names = {n.split(".")[0] for n, _ in model.named_tunable_parameters()}
    assert tunable_names == {"adapters", "head"}  # head = fc_norm + Linear
    assert n_tunable == 48 * (2 * 768 * 192 + 192 + 768) + 2 * 768 + (768 * 51 + 51)
    assert n_tunable == 14_242_611
    assert n_backbone + n_tunable == 100_468_275  # the authors' HMDB51 log
