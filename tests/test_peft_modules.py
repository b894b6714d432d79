"""AdaptFormer and LoRA beside a frozen block, on both backbone families (open_clip and VideoMAE).

The references are the libraries' own block forwards (open_clip `ResidualAttentionBlock`, HF
`VideoMAELayer`), and for LoRA a copy of the block whose frozen weights have the low-rank update
merged in: that pins each delta to its projection (q / k / v / out) and the packed q/k/v split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from transformers import VideoMAEConfig

from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
from eva.models.adaptformer import (
    ADAPTFORMER_BOTTLENECK,
    ADAPTFORMER_SCALE,
    AdaptFormerAdapter,
    adaptformer_block,
)
from eva.models.backbone import lora_block
from eva.models.blocks import attend
from eva.models.lora import LORA_TARGETS, AttentionLoRA, attend_with_lora
from eva.models.videomae import load_videomae

WIDTH = 32
HEADS = 4


class OpenClipBlockParts:
    """The `BlockBackbone` block parts for open_clip blocks (what the backbone refactor will add)."""

    def __init__(self, blocks: list[ResidualAttentionBlock]) -> None:
        self.blocks = blocks

    def ln_1(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i].ln_1(x)

    def attention(self, i: int, x: torch.Tensor, lora: AttentionLoRA | None = None) -> torch.Tensor:
        return self.blocks[i].ls_1(attend_with_lora(self.blocks[i].attn, x, lora))

    def ln_2(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i].ln_2(x)

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i].ls_2(self.blocks[i].mlp(x))


@dataclass
class Case:
    """One frozen block seen through the block-parts interface, and the library's own forward."""

    parts: object
    block: nn.Module
    reference: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (block, x) -> block output
    merge: Callable[[nn.Module, str, torch.Tensor], None]  # add a [D, D] delta to projection `name`


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-zero biases and norm affines, so every frozen tensor takes part in the comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 0.1 if p.ndim == 1 else 1.0 / math.sqrt(p.shape[-1])
            p.copy_(
                torch.randn(p.shape, generator=gen) * scale
                + (1.0 if p.ndim == 1 and p.shape[0] == WIDTH else 0)
            )


def _merge_open_clip(block: nn.Module, name: str, delta: torch.Tensor) -> None:
    with torch.no_grad():
        if name == "out":
            block.attn.out_proj.weight += delta
        else:  # packed in_proj rows: [q; k; v]
            row = "qkv".index(name) * WIDTH
            block.attn.in_proj_weight[row : row + WIDTH] += delta


def _merge_videomae(layer: nn.Module, name: str, delta: torch.Tensor) -> None:
    attn = layer.attention
    target = {
        "q": attn.attention.query,
        "k": attn.attention.key,
        "v": attn.attention.value,
        "out": attn.output.dense,
    }[name]
    with torch.no_grad():
        target.weight += delta


@pytest.fixture(scope="module", params=["open_clip", "videomae"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    if request.param == "open_clip":
        block = ResidualAttentionBlock(WIDTH, HEADS, batch_first=True)
        _randomise(block, seed=0)
        block.eval().requires_grad_(False)
        return Case(OpenClipBlockParts([block]), block, lambda b, x: b(x), _merge_open_clip)
    spec = TinyVideoMAESpec(hidden_size=WIDTH, heads=HEADS, layers=1)
    backbone = load_videomae(
        save_tiny_videomae(tmp_path_factory.mktemp("videomae"), spec), param="model.backbone"
    )
    return Case(backbone, backbone.layers[0], lambda b, x: b(x), _merge_videomae)


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 10, WIDTH, generator=torch.Generator().manual_seed(seed))  # [B, S, D]


def _frozen_grads_are_none(block: nn.Module) -> bool:
    return all(p.grad is None for p in block.parameters())


# -- attention on open_clip's packed weights ---------------------------------------------------


def test_attend_with_lora_without_deltas_is_open_clips_attention() -> None:
    block = ResidualAttentionBlock(WIDTH, HEADS, batch_first=True).eval()
    _randomise(block, seed=1)
    x = tokens()
    with torch.no_grad():
        expected = block.attn(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(attend_with_lora(block.attn, x, None), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            attend_with_lora(block.attn, x, None), attend(block.attn, x), atol=1e-5, rtol=0
        )


# -- AdaptFormer -------------------------------------------------------------------------------


@pytest.mark.parametrize("normalised", [False, True], ids=["residual_input", "normalised_input"])
def test_adaptformer_starts_as_the_frozen_block_and_adds_its_branch(case: Case, normalised: bool) -> None:
    adapter = AdaptFormerAdapter(WIDTH)
    x = tokens()
    with torch.no_grad():
        expected = case.reference(case.block, x)
        torch.testing.assert_close(
            adaptformer_block(case.parts, 0, x, adapter, normalised=normalised), expected, atol=1e-5, rtol=0
        )
        # Trained-looking adapter: the output is the frozen block's plus s * branch(input).
        adapter.up.weight.normal_(std=0.5)
        adapter.up.bias.normal_(std=0.5)
        x_mid = x + case.parts.attention(0, case.parts.ln_1(0, x))  # x' after the frozen attention
        branch_input = case.parts.ln_2(0, x_mid) if normalised else x_mid
        got = adaptformer_block(case.parts, 0, x, adapter, normalised=normalised)
        torch.testing.assert_close(got, expected + adapter(branch_input), atol=1e-5, rtol=0)
        assert (got - expected).abs().max() > 1e-3


def test_adaptformer_gradients_reach_only_the_adapter(case: Case) -> None:
    adapter = AdaptFormerAdapter(WIDTH)
    adaptformer_block(case.parts, 0, tokens().requires_grad_(), adapter).square().sum().backward()
    assert _frozen_grads_are_none(case.block)
    assert all(p.grad is not None for p in adapter.parameters())
    assert adapter.up.weight.grad.abs().sum() > 0 and adapter.up.bias.grad.abs().sum() > 0


def test_adaptformer_video_settings() -> None:
    adapter = AdaptFormerAdapter(768)
    assert (ADAPTFORMER_BOTTLENECK, ADAPTFORMER_SCALE) == (64, 0.1)
    assert (adapter.down.out_features, adapter.scale, type(adapter.act)) == (64, 0.1, nn.ReLU)
    assert not adapter.up.weight.any() and not adapter.up.bias.any() and not adapter.down.bias.any()
    with pytest.raises(ValueError, match="`model.adaptformer.bottleneck`"):
        AdaptFormerAdapter(768, bottleneck=0)


# -- LoRA --------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [("q", "v"), LORA_TARGETS], ids=["qv", "qkvo"])
def test_lora_starts_as_the_frozen_block_and_equals_merged_weights(
    case: Case, targets: tuple[str, ...]
) -> None:
    lora = AttentionLoRA(WIDTH, rank=4, alpha=8.0, targets=targets)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(
            lora_block(case.parts, 0, x, lora), case.reference(case.block, x), atol=1e-5, rtol=0
        )
        # Move every delta, then compare with a copy of the block whose weights have W + (a/r) B A.
        merged = copy.deepcopy(case.block)
        gen = torch.Generator().manual_seed(3)
        for name in targets:
            delta = lora.deltas[name]
            delta.up.weight.copy_(torch.randn(delta.up.weight.shape, generator=gen) * 0.3)
            case.merge(merged, name, delta.scaling * delta.up.weight @ delta.down.weight)  # [D, D]
        got = lora_block(case.parts, 0, x, lora)
        torch.testing.assert_close(got, case.reference(merged, x), atol=1e-5, rtol=0)
        assert (got - case.reference(case.block, x)).abs().max() > 1e-3


def test_lora_gradients_reach_only_its_deltas(case: Case) -> None:
    lora = AttentionLoRA(WIDTH, rank=4, alpha=4.0, targets=LORA_TARGETS)
    lora_block(case.parts, 0, tokens().requires_grad_(), lora).square().sum().backward()
    assert _frozen_grads_are_none(case.block)
    for name in LORA_TARGETS:
        delta = lora.deltas[name]
        assert delta.down.weight.grad is not None and delta.up.weight.grad.abs().sum() > 0, name


def test_lora_settings_are_checked_naming_the_param() -> None:
    lora = AttentionLoRA(768, rank=8, alpha=16.0)
    assert lora.targets == ("q", "v") and lora.deltas["q"].scaling == 2.0
    assert all(p.ndim == 2 for p in lora.parameters())  # no biases
    with pytest.raises(ValueError, match="`model.lora.rank`"):
        AttentionLoRA(768, rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="`model.lora.alpha`"):
        AttentionLoRA(768, rank=4, alpha=0.0)
    with pytest.raises(ValueError, match="`model.lora.targets`"):
        AttentionLoRA(768, rank=4, alpha=4.0, targets=("q", "query"))
    with pytest.raises(ValueError, match="`model.lora.targets`"):
        AttentionLoRA(768, rank=4, alpha=4.0, targets=())


# -- parameter counts on the real ViT-B shapes -------------------------------------------------


def _vit_b_shapes() -> dict[str, tuple[int, int]]:
    """(width, layers) of CLIP ViT-B/16 (open_clip's own config) and VideoMAE ViT-B (HF default)."""
    clip = open_clip.get_model_config("ViT-B-16")["vision_cfg"]
    videomae = VideoMAEConfig()
    return {
        "clip_vit_b16": (clip["width"], clip["layers"]),
        "videomae_vit_b": (videomae.hidden_size, videomae.num_hidden_layers),
    }


@pytest.mark.parametrize("backbone", ["clip_vit_b16", "videomae_vit_b"])
def test_tunable_counts_on_vit_b(backbone: str) -> None:
    width, layers = _vit_b_shapes()[backbone]
    assert (width, layers) == (768, 12)
    adaptformer = nn.ModuleList(AdaptFormerAdapter(width) for _ in range(layers))
    n_adaptformer = sum(p.numel() for p in adaptformer.parameters())
    assert n_adaptformer == layers * AdaptFormerAdapter.count(width) == layers * (2 * width * 64 + 64 + width)
    assert n_adaptformer == 1_189_632

    lora = nn.ModuleList(AttentionLoRA(width, rank=8, alpha=8.0, targets=("q", "v")) for _ in range(layers))
    n_lora = sum(p.numel() for p in lora.parameters())
    assert n_lora == layers * AttentionLoRA.count(width, 8, 2) == layers * 2 * (2 * width * 8)
    assert n_lora == 294_912
    lora_all = nn.ModuleList(
        AttentionLoRA(width, rank=4, alpha=4.0, targets=LORA_TARGETS) for _ in range(layers)
    )
    assert sum(p.numel() for p in lora_all.parameters()) == layers * 4 * (2 * width * 4) == 294_912
