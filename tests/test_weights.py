"""Weights: fetched once, then found offline; a missing one fails at the `check` stage, at once,
naming its params key and the command that fetches it. Models here are random, in the real formats
(open_clip local-dir, `save_pretrained` folders, the Hugging Face hub cache layout)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
import yaml
from hub_cache import put_in_hub_cache
from official_annotations import write_ucf101
from safetensors.torch import load_file, save_file

from eva import preset, weights, weights_io
from eva.config import load_params, write_params
from eva.demo.tiny import TinyClipSpec, save_tiny_captioner, save_tiny_open_clip
from eva.utils.trees import merge
from eva.weights_io import load_open_clip, uses_quick_gelu

REPO = Path(__file__).resolve().parents[1]
CAPTIONER = "Salesforce/blip-image-captioning-base"


def ucf101_params() -> dict:
    return merge(load_params(REPO / "params.yaml"), preset.resolve("ucf101"))


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache, offline, as the stages run."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_sources_are_what_the_stages_load() -> None:
    demo = weights_io.sources(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert [(s.key, s.name) for s in demo] == [
        ("attributes.clip.model", "local-dir:models/pretrained/clip"),  # the backbone shares it
        ("attributes.captioner", "models/pretrained/captioner"),
    ]
    real = {s.key: s for s in weights_io.sources(ucf101_params())}
    assert sorted(real) == ["attributes.captioner", "attributes.clip.model"]
    assert real["attributes.clip.model"].export == ("ViT-B-16", "openai")
    assert (
        real["attributes.captioner"].kind == "transformers" and real["attributes.captioner"].name == CAPTIONER
    )
    videomae = merge(yaml.safe_load((REPO / "params.yaml").read_text()), preset.resolve("hmdb51-videomae"))
    assert {s.key: s.name for s in weights_io.sources(videomae)}["model.backbone.name"] == (
        "MCG-NJU/videomae-base"
    )


def test_offline_every_missing_weight_names_its_key_and_the_fetch_command(hub: Path) -> None:
    problems = weights_io.missing(ucf101_params())
    assert len(problems) == 2
    assert problems[0].startswith("`attributes.clip.model`") and problems[1].startswith(
        "`attributes.captioner`"
    )
    assert all(weights_io.FETCH_COMMAND in p for p in problems)


def test_a_hub_name_in_the_cache_is_found_and_loads_offline(hub: Path, tmp_path: Path) -> None:
    from eva.attributes.caption import Captioner

    folder = save_tiny_captioner(tmp_path / "blip", ["ball"])
    snapshot = put_in_hub_cache(folder, hub, CAPTIONER)
    source = weights_io.Source("attributes.captioner", "transformers", CAPTIONER)
    assert weights_io.locate(source) == str(snapshot)
    captioner = Captioner(CAPTIONER)  # by hub name, offline
    assert captioner.generate([torch.zeros(3, 64, 64, dtype=torch.uint8)], max_new_tokens=3)


def test_fetch_exports_an_open_clip_tag_into_a_local_dir(hub: Path, tmp_path: Path) -> None:
    """The openai tag of ViT-B-16 (random weights of real size, in the hub cache where open_clip
    downloads it) becomes an open_clip local-dir folder that loads the same tensors with QuickGELU."""
    torch.manual_seed(0)
    saved = tmp_path / "download" / "open_clip_model.safetensors"
    saved.parent.mkdir()
    state = open_clip.create_model("ViT-B-16-quickgelu").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(saved))
    put_in_hub_cache(saved.parent, hub, "timm/vit_base_patch16_clip_224.openai")
    folder = tmp_path / "weights" / "open_clip" / "ViT-B-16" / "openai"
    source = weights_io.Source("attributes.clip.model", "open_clip", f"local-dir:{folder}")
    assert weights_io.locate(source) is None

    assert weights.fetch(source) == f"local-dir:{folder}"
    assert weights_io.locate(source) == str(folder)
    clip = load_open_clip(f"local-dir:{folder}", param="attributes.clip").model
    assert uses_quick_gelu(clip)
    expected = load_file(str(saved))
    got = clip.state_dict()
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert weights.fetch(source) == str(folder)  # a second fetch finds it and does nothing


def _check_stage(project: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stages.check"], cwd=project, env=env, capture_output=True, text=True
    )
    return done, time.perf_counter() - start


def test_the_check_stage_stops_on_a_missing_weight_then_passes_once_fetched(tmp_path: Path) -> None:
    """The preset's commands on a machine without the weights: the check stage fails (offline by
    default), naming the key and the fetch command; with the weights in place, fetch is a no-op and
    the check passes. Elapsed seconds are printed (for the README's claim), never asserted."""
    project = tmp_path / "project"
    write_ucf101(project / "data" / "ucf101" / "ucfTrainTestlist")
    (project / "data" / "ucf101" / "UCF-101").mkdir(parents=True)
    project.mkdir(exist_ok=True)
    write_params(ucf101_params(), project / "params.yaml")
    (project / "eva" / "resources").mkdir(parents=True)
    for vocabulary in (REPO / "eva" / "resources").glob("*.txt"):
        (project / "eva" / "resources" / vocabulary.name).write_bytes(vocabulary.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(tmp_path / "hub")}

    done, seconds = _check_stage(project, env)
    print(f"check stage with a missing weight: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 2
    assert "`attributes.clip.model`" in done.stderr and weights_io.FETCH_COMMAND in done.stderr

    save_tiny_open_clip(project / "weights" / "open_clip" / "ViT-B-16" / "openai", TinyClipSpec())
    put_in_hub_cache(save_tiny_captioner(tmp_path / "blip", ["ball"]), tmp_path / "hub", CAPTIONER)
    fetched = subprocess.run(
        [sys.executable, "-m", "eva.weights", "fetch"], cwd=project, env=env, capture_output=True, text=True
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert fetched.stdout.count("ok ") == 2
    done, _ = _check_stage(project, env)
    assert done.returncode == 0, done.stderr


def test_loader_errors_name_the_one_key_to_set(hub: Path, tmp_path: Path) -> None:
    """Not the section (`attributes.clip`), which `-S` would replace whole: the key inside it."""
    with pytest.raises(FileNotFoundError, match=r"`model\.backbone\.name`"):
        load_open_clip(f"local-dir:{tmp_path / 'none'}", param="model.backbone")
    with pytest.raises(FileNotFoundError, match=r"`attributes\.clip\.model`"):
        load_open_clip(f"local-dir:{tmp_path / 'none'}", param="attributes.clip")
    with pytest.raises(FileNotFoundError, match=r"`attributes\.clip\.pretrained`.*eva\.weights fetch"):
        load_open_clip("ViT-B-16", "openai", param="attributes.clip")  # offline, not in the cache
