"""Real-size open_clip ViT-B/16 weights, random but in every layout a real run loads them from.

The README's configs name `ViT-B-16` with the `openai` tag for the backbone and the attribute
encoder. OpenAI's weights were trained with QuickGELU; open_clip builds `ViT-B-16` with exact GELU
unless told, so these tests build the models through the pipeline's own loader and check the
activation and that every saved tensor arrives (open_clip loads full checkpoints strictly).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from eva.models import ModelConfig, build_model
from eva.weights_io import load_open_clip, tag_activation_is_quick_gelu, uses_quick_gelu

# Where open_clip's `openai` tag of ViT-B-16 is fetched from (huggingface_hub cache layout).
OPENAI_HF_REPO = "timm/vit_base_patch16_clip_224.openai"
REVISION = "0" * 40


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One random ViT-B-16 CLIP state dict, saved once as safetensors (the HF tag's format)."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu")
    path = tmp_path_factory.mktemp("vit_b_16") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)  # same bytes, no second 600 MB copy
    return dst


def _assert_loaded_exactly(clip: torch.nn.Module, weights: Path) -> None:
    saved = load_file(str(weights))
    state = clip.state_dict()
    assert sorted(state) == sorted(saved)  # no missing, no unexpected key
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


def test_openai_tag_from_the_hf_cache_runs_quick_gelu(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    repo = cache / f"models--{OPENAI_HF_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    _link(weights, repo / "snapshots" / REVISION / "open_clip_model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    assert tag_activation_is_quick_gelu("ViT-B-16", "openai")
    encoder = load_open_clip("ViT-B-16", "openai", param="attributes.clip")  # attribute encoder
    assert uses_quick_gelu(encoder.model)
    assert isinstance(encoder.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    _assert_loaded_exactly(encoder.model, weights)

    backbone = build_model(
        ModelConfig(
            method="eva", num_classes=400, backbone="ViT-B-16", pretrained="openai", frames=8, image_size=224
        )
    )  # the backbone, through the same loader, at 224 px
    assert uses_quick_gelu(backbone.backbone.visual)
    visual = {f"visual.{k}": v for k, v in backbone.backbone.visual.state_dict().items()}
    saved = load_file(str(weights))
    for name, tensor in visual.items():
        assert torch.equal(tensor, saved[name]), name


def test_checkpoint_file_takes_the_activation_from_the_architecture_name(
    weights: Path, tmp_path: Path
) -> None:
    path = _link(weights, tmp_path / "ViT-B-16-openai.safetensors")
    bundle = load_open_clip("ViT-B-16-quickgelu", str(path), param="model.backbone")
    assert uses_quick_gelu(bundle.model)
    _assert_loaded_exactly(bundle.model, weights)
    # Without the -quickgelu name a file is built with exact GELU (a file has no tag to read).
    assert not uses_quick_gelu(load_open_clip("ViT-B-16", str(path), param="model.backbone").model)


def test_local_folder_follows_its_config(weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    _link(weights, folder / "open_clip_model.safetensors")
    config = {"model_cfg": open_clip.get_model_config("ViT-B-16-quickgelu"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    bundle = load_open_clip(f"local-dir:{folder}", param="attributes.clip")
    assert uses_quick_gelu(bundle.model)
    _assert_loaded_exactly(bundle.model, weights)
