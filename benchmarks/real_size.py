"""Real-size benchmark: the pipeline's own stages on CLIP ViT-B/16 and BLIP-base, random weights, 224 px.

    python -m benchmarks.real_size                    # CPU, a few minutes
    python -m benchmarks.real_size --device cuda      # the same on a GPU (run this first on a cluster)

No weights can be downloaded here, so the models are random, written in the exact formats a user
points the params at:

* the attribute encoder `attributes.clip: ViT-B-16 / openai`, as the Hugging Face cache holds the
  downloaded `openai` tag (`timm/vit_base_patch16_clip_224.openai`, QuickGELU);
* the backbone `model.backbone: ViT-B-16-quickgelu / <file>`, the same weights as a checkpoint file;
* the captioner `attributes.captioner: <folder>`, `BlipForConditionalGeneration` from the BLIP-base
  config (`BlipConfig()`: ViT-B/16 at 384 px, BERT-base decoder) saved with its processor.

A few generated videos (a folder-per-class dataset with train/val lists) then go through
`python -m stages.<index|extract|attributes|train|evaluate>` in a temporary project whose
params.yaml is this repository's with the real-size keys set, as `dvc exp run -S` would: stage 2
`eva` at 224 px. Each stage runs in its own process, so its peak memory is its own: per stage the
benchmark prints items, wall seconds (model loading included), items/s, peak resident memory and,
on GPU, `torch.cuda.max_memory_allocated`. Accuracy is meaningless (random weights).

Then the optional attribute models, per keyframe, through the stage's own classes on keyframes of the
extracted size: the detector of `attributes.label.method: detector` (OWLv2 at the size of
google/owlv2-base-patch16-ensemble: ViT-B/16 at 960 px) and the mask model of
`attributes.mask.method: model` (CLIPSeg at the size of CIDAS/clipseg-rd64-refined), random weights
with a CLIP-sized tokenizer, the vocabulary eva/resources/objects.txt. `--only-attribute-models` runs
just that part (about a minute on CPU); `--skip-attribute-models` leaves it out.

`--bf16` / `--no-bf16` set `train.amp` for the train stage (bf16 autocast where the GPU has it; the
loop ignores it on CPU); without either the params' own value holds. Last, one EVA training step of
the same real-size config is timed in this process (`benchmarks/train_step.py`'s runner, 1 warm-up
+ `--steps`), with bf16 autocast under `--bf16` and `torch.compile` under `--compile`, and its
FLOPs counted (FlopCounterMode, forward + backward) for TFLOP/s and MFU against the device's bf16
peak (n/a on CPU). The tables are written to `--out` (results/bench/real_size.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eva.config import load_params
from eva.config import write_params as write_params_files
from eva.demo.data import encode_mp4
from eva.demo.tiny import CAPTION_WORDS

REPO = Path(__file__).resolve().parents[1]

OPENAI_HF_REPO = "timm/vit_base_patch16_clip_224.openai"  # where open_clip fetches ViT-B-16 / openai
REVISION = "0" * 40
CLASSES = ("moving_left", "moving_right")

# Runs a stage module in this process and records what it cost (peak RSS is per process).
STAGE_RUNNER = """
import json, runpy, sys, time
module, out = sys.argv[1], sys.argv[2]
start, code = time.perf_counter(), 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code or 0
finally:
    seconds = time.perf_counter() - start
    import torch
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)
    with open("/proc/self/status") as status:
        rss = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "rss_mb": rss, "cuda_mb": cuda, "code": code}, f)
sys.exit(code)
"""


def write_clip_weights(root: Path) -> tuple[Path, Path]:
    """Random ViT-B-16 (QuickGELU) CLIP: the HF-cache `openai` tag layout and a checkpoint file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu")
    cache = root / "hf" / "hub"
    repo = cache / f"models--{OPENAI_HF_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    weights = snapshot / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    checkpoint = root / "weights" / "ViT-B-16-openai.safetensors"
    checkpoint.parent.mkdir(parents=True)
    os.link(weights, checkpoint)
    return cache, checkpoint


def write_blip_base(folder: Path) -> Path:
    """`BlipForConditionalGeneration(BlipConfig())` (BLIP-base sizes) + a BERT-layout processor.

    The real processor's vocabulary (bert-base-uncased) cannot be downloaded; this one has the same
    size and special-token ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, [DEC] 30522).
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True)
    config = BlipConfig()
    words = sorted(set(CAPTION_WORDS) | {"square", "ball", "box"})
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=512)
    processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_videos(root: Path, train: int, val: int, seed: int = 0) -> None:
    """<root>/videos/<class>/<n>.mp4 (240x320, 48 frames) + train.txt / val.txt lists."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(train + val):
        split = "train" if i < train else "val"
        label = i % len(CLASSES)
        frames = rng.integers(0, 80, size=(48, 240, 320, 3), dtype=np.uint8)
        for t in range(48):
            x = int(t * 260 / 47)
            x = x if label == 1 else 260 - x
            frames[t, 90:150, x : x + 60] = (220, 60, 40)
        rel = f"{CLASSES[label]}/{split}_{i:03d}.mp4"
        (root / "videos" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        encode_mp4(root / "videos" / rel, frames, 24)
        lists[split].append(rel)
    (root / "lists").mkdir()
    for split, rels in lists.items():
        (root / "lists" / f"{split}.txt").write_text("\n".join(rels) + "\n")


def write_params(project: Path, args: argparse.Namespace, checkpoint: Path, captioner: Path) -> None:
    """This repository's params.yaml with the real-size keys a user would set with `-S`."""
    params = load_params(REPO / "params.yaml")
    params["stage"] = 2
    params["dataset"].update(name="folder", root=str(project / "videos"), annotations=str(project / "lists"))
    params["extract"].update(frames_per_video=16, short_side=224, workers=1)
    params["attributes"].update(keyframes=args.keyframes, device=args.device, batch_size=args.batch_size)
    params["attributes"]["clip"] = {"model": "ViT-B-16", "pretrained": "openai"}
    params["attributes"]["captioner"] = str(captioner)
    params["attributes"]["label"]["vocabulary"] = str(REPO / "eva" / "resources" / "objects.txt")
    params["attributes"]["gallery_videos"] = 2
    params["model"].update(method="eva", frames=args.frames, image_size=224, drop_path=0.2)
    params["model"]["backbone"].update(
        family="open_clip", name="ViT-B-16-quickgelu", pretrained=str(checkpoint)
    )
    params["train"].update(epochs=1, batch_size=args.batch_size, workers=0, nproc=1, warmup_epochs=0)
    if args.bf16 is not None:
        params["train"]["amp"] = args.bf16
    params["evaluate"].update(clips=1, crops=1, batch_size=args.batch_size)
    write_params_files(params, project / "params.yaml")


def run_stage(stage: str, project: Path, env: dict[str, str]) -> dict:
    out = project / f".bench-{stage}.json"
    done = subprocess.run(
        [sys.executable, "-c", STAGE_RUNNER, f"stages.{stage}", str(out)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"stage {stage} failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return {**json.loads(out.read_text()), "log": done.stderr}


def stage_items(stage: str, project: Path, args: argparse.Namespace) -> tuple[int, str]:
    """How many items the stage processed, read from its own outputs."""
    videos = args.train_videos + args.val_videos
    if stage in ("index", "extract"):
        return videos, "videos"
    if stage == "attributes":
        return videos * args.keyframes, "keyframes"
    if stage == "train":
        metrics = json.loads((project / "dvclive" / "train" / "metrics.json").read_text())
        # optimiser steps x global batch, plus the validation pass (val videos x keyframes views)
        return int(metrics["step"]) * args.batch_size + args.val_videos * args.keyframes, "clips"
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    return int(metrics["videos"]) * int(metrics["views"]), "views"


def attribute_model_costs(
    root: Path, args: argparse.Namespace
) -> list[tuple[str, float, float, float | None]]:
    """(model, load seconds, seconds per keyframe, CUDA max MB) of the detector and the mask model."""
    import torch

    from eva.attributes.detect import ObjectDetector
    from eva.attributes.label import read_vocabulary
    from eva.attributes.segment import SegmentationMasker
    from eva.demo.tiny_vision import save_random_clipseg, save_random_owlv2
    from eva.utils.dist import resolve_device

    device = resolve_device(args.device)
    keyframes = (args.train_videos + args.val_videos) * args.keyframes
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 224, 298), dtype=torch.uint8, generator=g) for _ in range(keyframes)]
    vocabulary = read_vocabulary(REPO / "eva" / "resources" / "objects.txt")
    builders = {
        "detector (OWLv2-B/16, 960 px)": lambda: ObjectDetector(
            str(save_random_owlv2(root / "owlv2", real_size=True)), vocabulary, device=device
        ),
        "mask model (CLIPSeg rd64)": lambda: SegmentationMasker(
            str(save_random_clipseg(root / "clipseg", real_size=True)), "the main subject", device=device
        ),
    }
    rows = []
    for name, build in builders.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        model = build()  # writing the random folder included: an upper bound on loading
        loaded = time.perf_counter() - start
        run = model.detect if isinstance(model, ObjectDetector) else model.masks
        run(images[:1])  # warm-up
        start = time.perf_counter()
        for b in range(0, len(images), args.batch_size):
            run(images[b : b + args.batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - start) / len(images)
        cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append((name, loaded, seconds, cuda))
        del model
    return rows


def print_attribute_model_costs(
    rows: list[tuple[str, float, float, float | None]], args: argparse.Namespace
) -> None:
    print(
        f"\noptional attribute models on {args.device} (random, real size), batch {args.batch_size}, 224x298 keyframes"
    )
    print(f"{'model':<30} {'write+load s':>12} {'s/keyframe':>11} {'keyframes/s':>12} {'CUDA max MB':>12}")
    for name, loaded, seconds, cuda in rows:
        shown = f"{cuda:.0f}" if cuda is not None else "-"
        print(f"{name:<30} {loaded:>12.1f} {seconds:>11.3f} {1 / seconds:>12.2f} {shown:>12}")


def measure_step(args: argparse.Namespace) -> dict:
    """One EVA training step of the real-size config in this process: seconds, FLOPs, TFLOP/s, MFU."""
    import copy
    import statistics

    import torch

    from benchmarks import train_step

    step_args = train_step.parse_args(
        ["--frames", str(args.frames), "--batch", str(args.batch_size), "--device", args.device]
    )
    device = torch.device(args.device)
    visual, mean, std = train_step.make_visual(step_args.backbone, 224)
    model = train_step.VideoClassifier(
        train_step.make_config("eva", step_args, 224),
        train_step.OpenClipBackbone(copy.deepcopy(visual), args.frames, mean, std),
    )
    flops = train_step.count_step_flops(model, args.batch_size)
    runner = train_step.StepRunner(
        model, args.batch_size, device, bf16=bool(args.bf16), compile="inductor" if args.compile else None
    )
    runner.step()  # warm-up (and compilation)
    seconds = statistics.median(runner.step() for _ in range(args.steps))
    name, peak = train_step.peak_tflops(device)
    tflops = flops / seconds / 1e12
    return {
        "device": name,
        "seconds": seconds,
        "flops": flops,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--train-videos", type=int, default=4)
    parser.add_argument("--val-videos", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--keyframes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the project here (default: a temp dir)"
    )
    parser.add_argument(
        "--skip-attribute-models", action="store_true", help="leave out the detector / mask model"
    )
    parser.add_argument(
        "--only-attribute-models", action="store_true", help="time only the detector and the mask model"
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train.amp (bf16 autocast) on or off",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the in-process train step")
    parser.add_argument("--steps", type=int, default=2, help="timed in-process train steps")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "real_size.md")
    args = parser.parse_args()
    if args.only_attribute_models:
        with tempfile.TemporaryDirectory(prefix="eva-real-size-") as tmp:
            print_attribute_model_costs(attribute_model_costs(Path(tmp), args), args)
        return

    with tempfile.TemporaryDirectory(prefix="eva-real-size-") as tmp:
        project = args.workdir or Path(tmp)
        project.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        cache, checkpoint = write_clip_weights(project)
        captioner = write_blip_base(project / "weights" / "blip-base")
        write_videos(project, args.train_videos, args.val_videos)
        write_params(project, args, checkpoint, captioner)
        print(f"set-up (random weights + videos): {time.perf_counter() - start:.0f} s")

        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # train / evaluate pick CUDA whenever it is visible
        rows = []
        for stage in ("index", "extract", "attributes", "train", "evaluate"):
            cost = run_stage(stage, project, env)
            items, unit = stage_items(stage, project, args)
            rows.append((stage, items, unit, cost))
        timings = project / "metrics" / "timings"  # what the stages measured of the machine
        evaluation = json.loads((project / "metrics" / "eval.json").read_text())
        evaluation |= json.loads((timings / "evaluate.json").read_text())
        phases = json.loads((timings / "attributes.json").read_text())["seconds"]
        optional = [] if args.skip_attribute_models else attribute_model_costs(project / "optional", args)

    print(f"\nreal-size pipeline on {args.device}: CLIP ViT-B/16 + BLIP-base (random), 224 px, "
          f"T={args.frames}, K={args.keyframes}, batch {args.batch_size}, eva stage 2")  # fmt: skip
    print(
        f"{'stage':<11} {'items':>12} {'seconds':>8} {'items/s':>8} {'peak RSS MB':>12} {'CUDA max MB':>12}"
    )
    for stage, items, unit, cost in rows:
        cuda = f"{cost['cuda_mb']:.0f}" if cost["cuda_mb"] is not None else "-"
        print(
            f"{stage:<11} {items:>4} {unit:<7} {cost['seconds']:>8.1f} {items / cost['seconds']:>8.2f} "
            f"{cost['rss_mb']:>12.0f} {cuda:>12}"
        )
    keyframes = (args.train_videos + args.val_videos) * args.keyframes
    print(
        "attributes, per phase: "
        + ", ".join(f"{name} {sec:.1f} s" for name, sec in sorted(phases.items(), key=lambda kv: -kv[1]))
        + f" (captioner {keyframes / max(phases.get('captioner', 0.0), 1e-9):.2f} keyframes/s)"
    )
    train_log = next(cost["log"] for stage, _, _, cost in rows if stage == "train")
    steps = re.findall(r"train epoch \d+/\d+: (\d+) done in ([\d.]+) s", train_log)
    if steps:
        count, seconds = int(steps[-1][0]), float(steps[-1][1])
        print(
            f"train, optimiser steps only: {count} steps in {seconds:.1f} s = "
            f"{count * args.batch_size / seconds:.2f} clips/s ({seconds / count:.1f} s per step of batch {args.batch_size})"
        )
    print(
        f"evaluate, model time only: {evaluation['throughput_clips_per_s']:.2f} views/s; "
        f"tunable {evaluation['tunable_params']:,} of {evaluation['total_params']:,} parameters"
    )
    if optional:
        print_attribute_model_costs(optional, args)
    step = measure_step(args)
    mfu = f"{100 * step['mfu']:.1f}%" if step["mfu"] is not None else "n/a"
    flags = ", ".join(f for f, on in (("bf16", args.bf16), ("compile", args.compile)) if on) or "fp32 eager"
    print(
        f"train step in process ({step['device']}, {flags}): {step['seconds']:.2f} s/step of batch {args.batch_size}, "
        f"{step['flops'] / 1e9:,.0f} GFLOP counted, {step['tflops']:.3f} TFLOP/s, MFU {mfu}"
    )
    lines = [
        f"Real-size pipeline on {args.device}: CLIP ViT-B/16 + BLIP-base (random), 224 px, T={args.frames}, "
        f"K={args.keyframes}, batch {args.batch_size}, eva stage 2.",
        "",
        "| stage | items | seconds | items/s | peak RSS MB | CUDA max MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, items, unit, cost in rows:
        cuda = f"{cost['cuda_mb']:.0f}" if cost["cuda_mb"] is not None else "-"
        lines.append(
            f"| {stage} | {items} {unit} | {cost['seconds']:.1f} | {items / cost['seconds']:.2f} "
            f"| {cost['rss_mb']:.0f} | {cuda} |"
        )
    lines += [
        "",
        "| EVA train step (in process) | s/step | GFLOP/step | TFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|",
        f"| {step['device']}, {flags} | {step['seconds']:.2f} | {step['flops'] / 1e9:,.0f} | {step['tflops']:.3f} | {mfu} |",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
