"""What each numerics pin costs on the demo: step times with every pin, each pin lifted, and none.

The demo's two heavy loops, each timed in a fresh process per configuration (the ISA variables only
act if they are set before torch loads):
  * `clip`: one pretraining step of the demo's tiny CLIP (pretrain.yaml's shape, batch 128, 64 px,
    open_clip's `ClipLoss`, AdamW), the `pretrain` stage's inner loop;
  * `train`: one training step of the demo's `eva` stage-1 model (params.yaml's model keys: 4 frames
    at 64 px, batch 16, two text attributes from a 4-layer, 128-wide encoder), the `train` stage's.

Configurations (`CONFIGS`): `none` is the bare libraries on their own dispatch (only torch's thread
count fixed, as every configuration has it); each `+ name` adds one pin to it, `all` is the set the
pipeline ran before (ATen capped at AVX2, MKL's COMPATIBLE branch, oneDNN off). Ratios are each
configuration's median step time over `none`'s. Prints a markdown table; `--out` writes it too.

    python -m benchmarks.numerics --steps 12 --out results/bench/numerics.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

# name -> (environment variables, oneDNN enabled)
PINS: dict[str, tuple[dict[str, str], bool]] = {
    "ATen AVX2 cap": ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
    "MKL_CBWR=COMPATIBLE": ({"MKL_CBWR": "COMPATIBLE"}, True),
    "oneDNN off": ({}, False),
}
CONFIGS: dict[str, tuple[dict[str, str], bool]] = {
    "none": ({}, True),
    **{f"+ {name}": pin for name, pin in PINS.items()},
    "all": ({k: v for env, _ in PINS.values() for k, v in env.items()}, False),
}
CLEARED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES")

_CHILD = r"""
import json, sys, time
import torch
from open_clip.loss import ClipLoss
from eva.config import load_params
from eva.models.classifier import ModelConfig, VideoClassifier
from eva.models.clip_backbone import OpenClipBackbone
from eva.demo.tiny import build_tiny_open_clip
from eva.demo.pretrain.run import PretrainConfig
from eva.utils.numerics import configure_torch

mkldnn, steps = sys.argv[1] == "1", int(sys.argv[2])
torch.backends.mkldnn.enabled = mkldnn
configure_torch()  # the stages' own thread setting (EVA_NUM_THREADS)
params = load_params("params.yaml")
pretrain = PretrainConfig.from_params(params)
spec, clip_batch = pretrain.clip, pretrain.clip_schedule.batch_size
torch.manual_seed(0)
clip = build_tiny_open_clip(spec).train()
images = torch.randn(clip_batch, 3, spec.image_size, spec.image_size)
tokens = torch.randint(1, 49000, (clip_batch, spec.context_length))
loss_fn, opt = ClipLoss(), torch.optim.AdamW(clip.parameters(), lr=1e-4)

def clip_step():
    img, txt, scale = clip(images, tokens)[:3]
    loss = loss_fn(img, txt, scale)
    opt.zero_grad(); loss.backward(); opt.step()

m = params["model"]
cfg = ModelConfig(method="eva", num_classes=8, frames=m["frames"], image_size=m["image_size"],
    attributes=("label", "caption"), attribute_layers={"label": spec.text_layers, "caption": spec.text_layers},
    attribute_dim=spec.embed_dim, time_embedding_init=m["time_embedding_init"])
model = VideoClassifier(cfg, OpenClipBackbone(build_tiny_open_clip(spec).visual, m["frames"], (0.5,) * 3, (0.25,) * 3)).train()
batch = params["train"]["batch_size"]
video = torch.randn(batch, m["frames"], 3, m["image_size"], m["image_size"])
attrs = {n: torch.randn(batch, spec.text_layers, spec.embed_dim) for n in ("label", "caption")}
labels = torch.randint(0, 8, (batch,))
opt2 = torch.optim.AdamW([p for _, p in model.named_tunable_parameters()], lr=1e-4)

def train_step():
    loss = torch.nn.functional.cross_entropy(model(video, attrs), labels)
    opt2.zero_grad(); loss.backward(); opt2.step()

out = {}
for name, step in (("clip", clip_step), ("train", train_step)):
    step(); step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    out[name] = times
out["capability"] = torch.backends.cpu.get_cpu_capability()
print(json.dumps(out))
"""


def measure(env_pins: dict[str, str], mkldnn: bool, steps: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(env_pins, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), EVA_NUM_THREADS=str(threads))
    env.setdefault("MKL_CBWR", "AUTO")  # MKL's own dispatch unless the configuration pins a branch
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "1" if mkldnn else "0", str(steps)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per loop (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = {}
    for name, (env_pins, mkldnn) in CONFIGS.items():
        got = measure(env_pins, mkldnn, args.steps, args.threads)
        rows[name] = (statistics.median(got["clip"]), statistics.median(got["train"]), got["capability"])
        print(
            f"{name}: clip {rows[name][0] * 1e3:.0f} ms, train {rows[name][1] * 1e3:.0f} ms", file=sys.stderr
        )
    base_clip, base_train, _ = rows["none"]
    lines = [
        f"Numerics pins on the demo's two loops: {cpu_model()}, {args.threads} threads, median of "
        f"{args.steps} steps after 2 warm-up, one fresh process per row.",
        "",
        "| configuration | ATen kernels | CLIP pretrain step (ms) | / none | eva train step (ms) | / none |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, (clip_s, train_s, capability) in rows.items():
        lines.append(
            f"| {name} | {capability} | {clip_s * 1e3:.0f} | {clip_s / base_clip:.2f}x | "
            f"{train_s * 1e3:.0f} | {train_s / base_train:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
