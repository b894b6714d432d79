"""README's real-data commands, run verbatim once; every preset checked, indexed and trained a step.

A copy of the project (its git-tracked and untracked files, committed to a fresh git repo) gets
generated videos in the benchmark's official layout at the preset's paths, and tiny random models in
the real formats at the real paths: an open_clip local-dir folder in `weights/open_clip/ViT-B-16/openai`,
BLIP and VideoMAE `save_pretrained` folders in the Hugging Face cache layout under their hub names.
Only the demo-only stages' sizes are shrunk in the copy's params.yaml before its first commit (they
run on real data too, and no preset touches them), so the commands stay exactly README's.

- `ucf101`, the preset README names: the block between the `real-data-commands` markers runs line by
  line in bash, verbatim (30 epochs, stage 1 then 2, `dvc exp show`).
- Every other preset: README's first command with the preset's name (`python -m eva.preset <name>`),
  then in one process the `check` stage (params, the weights at the preset's paths, annotation files,
  input paths), the `index` stage (the preset's reader over its official annotation files), and the
  train stage's model build and optimiser from the preset's params with one training step, in which
  every tunable tensor gets a gradient, the head moves, and no frozen tensor gets a gradient.
  Extraction, attributes and the training loop are the same code for every preset, and the verbatim
  run covers them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import moving_square, write_video
from hub_cache import put_in_hub_cache
from official_annotations import SSV2_TEMPLATES, write_hmdb51, write_k400, write_ssv2, write_ucf101

from eva import preset
from eva.config import load_params, write_params
from eva.data.index import SSV2_SPLIT_FILES, build_index
from eva.demo.tiny import TinyClipSpec, save_tiny_captioner, save_tiny_open_clip
from eva.demo.tiny_videomae import TinyVideoMAESpec, save_tiny_videomae
from eva.utils.trees import merge

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- real-data-commands", "<!-- /real-data-commands -->"
CODEC = {".avi": "mpeg4", ".mp4": "libx264", ".webm": "libvpx-vp9", ".mkv": "libx264"}
DEMO_ONLY = {  # sections no preset sets: the demo's data and models, which every `dvc exp run` makes
    "demo": {"train_per_class": 2, "val_per_class": 1, "frames": 8},
    "pretrain": {
        "held_out": 8,
        "clip": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
        "captioner": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
    },
}
VIDEOS_PER_CLASS = {"train": 2, "val": 1}
# the tiny open_clip written at the preset's CLIP path (its image size is the preset's); the one-step test
# feeds attributes of its towers' depth and width
TINY_CLIP = {
    "patch_size": 32, "vision_width": 32, "vision_layers": 2, "text_width": 32, "text_layers": 2, "embed_dim": 32
}  # fmt: skip
CLASSES_WITH_VIDEOS = 2


def readme_commands() -> list[str]:
    """The commands of README's real-data block, comments and blank lines dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END)]
    code = re.search(r"```bash\n(.*?)```", block, re.S)
    assert code, "README's real-data block has no ```bash fence"
    lines = [line.split("  #")[0].strip() for line in code.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _copy_project(dest: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _write_annotations(name: str, folder: Path) -> None:
    if name == "ucf101":
        write_ucf101(folder)
    elif name == "hmdb51":
        write_hmdb51(folder)
    elif name == "k400":
        write_k400(folder)
    elif name == "ssv2":  # the labels json, and train / validation lists under their official names
        write_ssv2(folder)
        for split, filename in SSV2_SPLIT_FILES.items():
            entries = [
                {"id": f"{split}{c}{i}", "template": template, "label": template.lower(), "placeholders": []}
                for c, template in enumerate(SSV2_TEMPLATES[:CLASSES_WITH_VIDEOS])
                for i in range(VIDEOS_PER_CLASS[split])
            ]
            (folder / filename).write_text(json.dumps(entries))
    else:
        raise AssertionError(name)


def _write_videos(name: str, root: Path, annotations: Path) -> int:
    """Real videos for the first classes' first clips, at the paths the annotations name."""
    table = build_index(name, root, annotations, check_exists=False).table.to_pylist()
    classes = sorted({r["label"] for r in table})[:CLASSES_WITH_VIDEOS]
    written = 0
    for split, count in VIDEOS_PER_CLASS.items():
        for label in classes:
            rows = [r for r in table if r["split"] == split and r["label"] == label][:count]
            for row in rows:
                path = Path(row["path"])
                write_video(path, moving_square(40, 64, seed=written), fps=25, codec=CODEC[path.suffix])
                written += 1
    return written


def _tiny_weights(params: dict, project: Path, hub: Path, tmp: Path) -> None:
    """Tiny random models at the paths and hub names the preset's params name."""
    clip = params["attributes"]["clip"]["model"].removeprefix("local-dir:")
    save_tiny_open_clip(
        project / clip,
        TinyClipSpec(image_size=params["model"]["image_size"], **TINY_CLIP),
    )
    put_in_hub_cache(
        save_tiny_captioner(tmp / "blip", ["person", "ball"]), hub, params["attributes"]["captioner"]
    )
    backbone = params["model"]["backbone"]
    if backbone["family"] == "videomae":
        spec = TinyVideoMAESpec(
            image_size=params["model"]["image_size"], patch_size=32, frames=params["model"]["frames"]
        )
        put_in_hub_cache(save_tiny_videomae(tmp / "videomae", spec), hub, backbone["name"])


def _run(command: str, project: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"`{command}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def _set_up(name: str, tmp_path: Path) -> tuple[Path, dict[str, str], dict]:
    """A committed copy of the project with `name`'s data and tiny weights in place; (project, env, the
    preset's params)."""
    project, hub = tmp_path / "project", tmp_path / "hub"
    _copy_project(project)
    params = load_params(project / "params.yaml")
    write_params(merge(params, DEMO_ONLY), project / "params.yaml")
    real = merge(params, preset.resolve(name))
    dataset = real["dataset"]
    _write_annotations(dataset["name"], project / dataset["annotations"])
    assert _write_videos(dataset["name"], project / dataset["root"], project / dataset["annotations"]) > 0
    _tiny_weights(real, project, hub, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}  # the stages' own default
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "HF_HUB_CACHE": str(hub),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    _run("git init -q && git add -A && git commit -qm clone", project, env)
    return project, env, real


@pytest.mark.slow
@pytest.mark.readme
@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_readme_real_data_commands_run_verbatim(tmp_path: Path) -> None:
    name = "ucf101"
    commands = readme_commands()
    assert commands[0] == f"python -m eva.preset {name}" and any(
        c.startswith("dvc exp run") for c in commands
    )
    project, env, real = _set_up(name, tmp_path)
    dataset = real["dataset"]

    outputs = [_run(command, project, env) for command in commands]

    evaluated = json.loads((project / "metrics" / "eval.json").read_text())
    assert evaluated["method"] == real["model"]["method"] and 0.0 <= evaluated["top1"] <= 1.0
    assert evaluated["stage"] == 2
    index = json.loads((project / "metrics" / "index.json").read_text())
    assert index["dataset"] == dataset["name"] and index["counts"]["train"] == CLASSES_WITH_VIDEOS * 2
    assert "top1" in outputs[-1]  # dvc exp show lists the experiments with their accuracy


# README's first command with the preset's name, then the check stage, the index stage, and one training
# step of the model the train stage builds from the preset's params (attributes: the tiny CLIP's shape).
ONE_STEP = r"""
import json, sys
import stages  # the stages' offline defaults, before any hub library loads
import torch
import torch.nn.functional as F
from eva import preset
from eva.config import load_params
from eva.data.attribute_store import AttributeMeta
from eva.data.clips import read_classes
from eva.models import ModelConfig, build_model
from eva.train.config import TrainConfig
from eva.train.optim import build_optimizer
from stages import check, index
from stages._layout import CLASSES
from stages._params import stage_number

assert preset.main([sys.argv[1]]) == 0
check.main()
index.main()
params = load_params()
text_layers, image_layers, dim = map(int, sys.argv[2:5])
meta = AttributeMeta(encoder="tiny", text_layers=text_layers, image_layers=image_layers, dim=dim, keyframes=1)
cfg = ModelConfig.from_params(
    params, num_classes=len(read_classes(CLASSES)), stage=stage_number(params), attribute_meta=meta
)
train = TrainConfig.from_params(params)
torch.manual_seed(0)
model = build_model(cfg).train()
optimizer = build_optimizer(model, train.scaled_recipe, decay_prompts=train.decay_prompts)
tunable = dict(model.named_tunable_parameters())
before = {n: p.detach().clone() for n, p in tunable.items()}
video = torch.randn(2, cfg.frames, 3, cfg.image_size, cfg.image_size)
attributes = {n: torch.randn(2, cfg.attribute_layers[n], cfg.attribute_dim) for n in cfg.attributes}
logits = model(video, attributes or None)
F.cross_entropy(logits, torch.tensor([0, 1]), label_smoothing=train.label_smoothing).backward()
optimizer.step()
print(json.dumps({
    "method": cfg.method, "classes": cfg.num_classes, "logits": list(logits.shape),
    "frames": cfg.frames, "image_size": cfg.image_size,
    "without_grad": sorted(n for n, p in tunable.items() if p.grad is None),
    "moved": sorted(n for n, p in tunable.items() if not torch.equal(p.detach(), before[n])),
    "frozen_with_grad": sorted(n for n, p in model.named_parameters() if n not in tunable and p.grad is not None),
}))
"""


@pytest.mark.parametrize("name", [n for n in preset.names() if n not in ("demo", "ucf101")])
def test_every_other_preset_checks_indexes_and_trains_a_step(name: str, tmp_path: Path) -> None:
    project, env, real = _set_up(name, tmp_path)
    tower = f"{TINY_CLIP['text_layers']} {TINY_CLIP['vision_layers']} {TINY_CLIP['embed_dim']}"
    out = _run(f"{shlex.quote(sys.executable)} -c {shlex.quote(ONE_STEP)} {name} {tower}", project, env)

    step = json.loads(next(line for line in out.splitlines() if line.startswith('{"method"')))
    model, dataset = real["model"], real["dataset"]
    index = json.loads((project / "metrics" / "index.json").read_text())
    assert index["dataset"] == dataset["name"] and index["counts"]["train"] == CLASSES_WITH_VIDEOS * 2
    classes = len(json.loads((project / "data" / "index" / "classes.json").read_text()))
    assert (step["method"], step["frames"], step["image_size"]) == (
        model["method"], model["frames"], model["image_size"]
    )  # fmt: skip
    assert step["classes"] == classes and step["logits"] == [2, classes]
    # every tunable tensor is reached by the loss (zero-initialised up-projections keep their down-projections
    # still for one step), the head learns, and no frozen tensor gets a gradient
    assert step["without_grad"] == [] and step["frozen_with_grad"] == []
    assert any(name.startswith("head.") for name in step["moved"])
    assert load_params(project / "params.yaml")["model"] == model  # the preset was written, not the demo
