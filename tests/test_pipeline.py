"""The user's loop, end to end: `dvc repro` on a tiny demo, a no-op re-run, `dvc exp run -S stage=2`.

Runs the real dvc.yaml in a copy of this checkout (tracked and untracked-but-not-ignored files),
with the demo shrunk through params so the whole pipeline takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from eva.config import load_params, write_params
from eva.utils.trees import merge

REPO = Path(__file__).resolve().parents[1]
RAN = re.compile(r"Running stage '([^']+)'")
ENV = os.environ | {
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
}
TINY = {
    "demo": {"train_per_class": 2, "val_per_class": 1, "frames": 12, "size": 64},
    "pretrain": {
        "held_out": 16,
        "workers": 0,
        "clip": {"steps": 2, "batch_size": 16, "warmup_steps": 1},
        "captioner": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
        "videomae": {"frames": 4},  # = model.frames below
    },
    "extract": {"frames_per_video": 8, "short_side": 64, "workers": 1},
    "attributes": {"keyframes": 2, "caption": {"max_new_tokens": 4}, "gallery_videos": 2},
    "model": {"frames": 4},
    "train": {"epochs": 1, "batch_size": 8, "workers": 0},
    "evaluate": {"clips": 2, "crops": 3},
}


def _in_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """What `args` prints in a pseudo-terminal `columns` wide (a user's shell), colours stripped."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait() == 0, b"".join(chunks).decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")


def _run(args: list[str], cwd: Path) -> tuple[list[str], str]:
    """Run a command with the venv first on PATH; return the stages it ran and its whole output."""
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-5000:]}"
    return RAN.findall(out), out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is needed for dvc experiments")
    root = tmp_path_factory.mktemp("pipeline") / "eva"
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    skip = ("data/", "shards/", "attributes/", "models/", "dvclive/", "metrics/", "dvc.lock")
    for rel in filter(None, files):
        if rel.startswith(skip) or not (REPO / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    write_params(merge(load_params(root / "params.yaml"), TINY), root / "params.yaml")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A"],
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "tiny demo"],
    ):
        subprocess.run(cmd, cwd=root, check=True)
    return root


@pytest.mark.slow
def test_repro_then_noop_then_stage2_experiment(project: Path) -> None:
    ran, _ = _run(["dvc", "repro"], project)
    assert ran == ["check", "demo_data", "pretrain", "index", "extract", "attributes", "train", "evaluate"]

    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert metrics["dataset"] == "demo" and metrics["stage"] == 1 and metrics["method"] == "eva"
    assert list(metrics)[:3] == ["top1", "top5", "mean_class_accuracy"]  # the column exp show keeps
    assert metrics["seed"] == 0 and metrics["loss"] > 0
    assert "throughput_clips_per_s" not in metrics  # machine facts: metrics/timings/evaluate.json
    assert "throughput_clips_per_s" in json.loads((project / "metrics/timings/evaluate.json").read_text())
    # eva scores each of the 2 clips x 3 crops once per attribute keyframe (TINY attributes.keyframes: 2)
    protocol = json.loads((project / "metrics/evaluate.json").read_text())  # how it was scored: not compared
    assert protocol == {"clips": 2, "crops": 3, "keyframes": 2, "videos": 8, "views": 6 * 2}
    assert not set(protocol) & set(metrics)
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert 0 < metrics["tunable_params"] < metrics["total_params"]
    confusion = json.loads((project / "metrics/plots/confusion.json").read_text())
    assert len(confusion) == 8 and set(confusion[0]) == {"actual", "predicted"}
    assert len((project / "metrics/per_class.csv").read_text().splitlines()) == 1 + 8
    card = (project / "models/trained/README.md").read_text()
    assert card.startswith("---\n") and "method: eva" in card and "pretrained by the pipeline" in card
    assert pq.read_metadata(project / "attributes/val.parquet").num_rows == 8
    assert sorted(p.name for p in (project / "shards").iterdir()) == [  # each shard with its sample count
        "train-000000.json",
        "train-000000.tar",
        "val-000000.json",
        "val-000000.tar",
    ]
    assert "pretrained on synthetic stills" in (project / "metrics/attributes_gallery.html").read_text()
    scores = json.loads((project / "metrics/pretrain.json").read_text())
    assert scores["held_out_stills"] == 16 and 0.0 <= scores["zero_shot_shape_top1"] <= 1.0
    assert scores["clip"]["steps"] == 2 and scores["captioner"]["steps"] == 2
    # `dvc plots show` draws each curve once (not again from a stage's `plots:`), the per-step and
    # per-epoch ones on one step axis, and the confusion matrix as counts and normalised.
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=project, env=ENV, capture_output=True, text=True, check=True
    ).stdout
    plots = json.loads(shown)["data"]
    assert sorted(plots) == [
        "accuracy",
        "confusion",
        "confusion_normalized",
        "epoch",
        "learning_rate",
        "loss",
        "metrics/plots/pretrain_loss.json",
    ]
    assert all(len(renders) == 1 for renders in plots.values())
    loss_points = plots["loss"][0]["content"]["data"]["values"]
    assert {p["filename::field"] for p in loss_points} == {
        "train/loss.tsv::loss",
        "train/epoch_loss.tsv::epoch_loss",
        "val/loss.tsv::loss",
    }
    assert all("step" in p for p in loss_points)
    normalized = plots["confusion_normalized"][0]["content"]["spec"]
    row_sums = [t for t in normalized["transform"] if "joinaggregate" in t]
    assert normalized["encoding"]["y"]["field"] == "actual" and row_sums[0]["groupby"] == ["actual"]

    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "baseline"],
        cwd=project,
        check=True,
    )
    ran, out = _run(["dvc", "repro"], project)
    assert ran == [] and "Data and pipelines are up to date" in out

    # A code change re-runs exactly the stages that run the changed file (data/code/<stage>.sha256);
    # extract writes the same shards, so nothing after it re-runs.
    source = project / "eva/data/extract.py"
    source.write_text(source.read_text() + "\n# an edit that changes no behaviour\n")
    ran, _ = _run(["dvc", "repro"], project)
    assert ran == ["check", "extract"]
    assert "eva/data/extract.py" in (project / "data/code/extract.sha256").read_text()
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "edit"],
        cwd=project,
        check=True,
    )

    ran, _ = _run(["dvc", "exp", "run", "-S", "stage=2"], project)
    # every params change is checked; nothing else re-runs for it
    assert ran == ["check", "train", "evaluate"]
    assert json.loads((project / "metrics/eval.json").read_text())["stage"] == 2
    diff = subprocess.run(
        ["dvc", "metrics", "diff", "--json"], cwd=project, env=ENV, capture_output=True, text=True, check=True
    ).stdout
    changed = json.loads(diff)["metrics/eval.json"]
    assert changed["stage"] == {"old": 1, "new": 2, "diff": 1}
    assert set(json.loads(diff)) == {"metrics/eval.json"}  # the one declared metrics file
    # `dvc exp show` in a 160-column terminal, no flags (--no-pager: print as it renders, without less):
    # the table fits, top-1 is the first metric column (after Created, which may fold), and its value
    # shows on every row.
    screen = _in_terminal(["dvc", "exp", "show", "--no-pager"], project, columns=160).splitlines()
    header = next(line for line in screen if "Experiment" in line)
    rows = [line for line in screen if line.strip().startswith(("workspace", "main", "master", "├", "└"))]
    assert max(len(line) for line in screen) <= 160 and len(rows) >= 3  # workspace, baseline, experiment
    at = header.index("top1")
    assert header.split()[0] == "Experiment" and "top1" in header.split()[1:3], "\n".join(screen)
    assert all(re.fullmatch(r"\s*[01]\.\d+|\s*[01]", row[at - 4 : at + 4]) for row in rows), rows

    # The demo's random VideoMAE stand-in, written by `pretrain`, runs through the real VideoMAE loader.
    videomae = project / "models/pretrained/videomae"
    assert (videomae / "config.json").is_file() and "stand-in" in (videomae / "README.md").read_text()
    ran, _ = _run(
        [
            "dvc", "exp", "run", "-S", "model.backbone.family=videomae",
            "-S", "model.backbone.name=models/pretrained/videomae", "-S", "model.backbone.pretrained=",
        ],
        project,
    )  # fmt: skip
    assert ran == ["check", "train", "evaluate"]
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert (
        json.loads((project / "metrics/evaluate.json").read_text())["videos"] == 8
        and 0.0 <= metrics["top1"] <= 1.0
    )
    card = (project / "models/trained/README.md").read_text()
    assert "backbone_family: videomae" in card and "base_model: models/pretrained/videomae" in card
    assert "backbone has random weights" in card


def _tracked_outputs(project: Path) -> dict[str, bytes]:
    """Every file a stage wrote that DVC or git tracks (the last good state of the workspace)."""
    roots = ("models/trained", "dvclive", "metrics", "data/index", "attributes", "shards")
    files = [p for root in roots for p in (project / root).rglob("*") if p.is_file()]
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in files
        if "timings" not in p.parts and p.name != ".gitignore"
    }


def _at_baseline(project: Path) -> None:
    """The committed params, lock and outputs in the workspace (the tests above leave experiments there)."""
    tracked = subprocess.run(["git", "ls-files", "dvc.lock"], cwd=project, capture_output=True, text=True)
    if not tracked.stdout.strip():  # run alone: make and commit the baseline first
        _run(["dvc", "repro"], project)
        subprocess.run(["git", "add", "-A"], cwd=project, check=True)
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "baseline"],
            cwd=project,
            check=True,
        )
    # Every tracked file rewritten from HEAD (`checkout-index -f` ignores git's stat cache, which
    # `dvc exp run` leaves believing some rewritten files unchanged), then the cached outputs.
    subprocess.run(["git", "reset", "-q", "HEAD"], cwd=project, check=True)
    subprocess.run(["git", "checkout-index", "-a", "-f"], cwd=project, check=True)
    _run(["dvc", "checkout", "--force"], project)
    status = subprocess.run(["dvc", "status"], cwd=project, env=ENV, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def _run_failing(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0, f"{' '.join(args)} succeeded:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.method=nonsense", "`model.method` must be one of"),
        ("stage=3", "`stage` must be 1 (text attributes) or 2 (text + visual)"),
        ("train.epochs=0", "`train.epochs` must be an integer >= 1"),
        (
            "methods.yaml:model.lora.targets=[bogus]",
            "`model.lora.targets` must be a non-empty list",
        ),  # eva reads none
        ("attributes.mask.method=grabcut", "`attributes.mask.method` must be one of"),
        (
            "recipes.yaml:train.recipes.lora.lr=0",
            "`train.recipes.lora.lr` must be",
        ),  # a recipe training does not read
        ("+train.bogus=1", "unknown keys ['train.bogus']"),
        ("+bogus=1", "unknown top-level keys ['bogus']"),
        ("dataset.root=/data/does-not-exist", "`dataset.root`: folder '/data/does-not-exist' does not exist"),
        ("attributes.captioner=models/pretrained/captionr", "`attributes.captioner`: no config.json in"),
    ],
)
def test_a_failed_experiment_costs_nothing(project: Path, setting: str, message: str) -> None:
    """The check stage fails before DVC removes any output: the last good state stays, unchanged."""
    _at_baseline(project)
    before = _tracked_outputs(project)
    params = {name: (project / name).read_bytes() for name in ("params.yaml", "recipes.yaml", "methods.yaml")}
    out = _run_failing(["dvc", "exp", "run", "-S", setting], project)
    assert message in out, out[-3000:]
    assert "Running stage 'check'" in out and "Running stage 'train'" not in out
    # DVC leaves the failed value in the params file (with its old size and mtime, so `git checkout`
    # may see no change): put the good params back as a user would.
    for name, data in params.items():
        (project / name).write_bytes(data)
    assert _tracked_outputs(project) == before
    status = subprocess.run(["dvc", "status"], cwd=project, env=ENV, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_another_methods_keys_change_nothing(project: Path) -> None:
    """The train stage depends on `model.<model.method>` only: a lora key changes nothing for eva."""
    _at_baseline(project)
    params = (project / "methods.yaml").read_bytes()
    edited = yaml.safe_load(params)
    edited["model"]["lora"]["targets"] = ["q", "k", "v"]
    (project / "methods.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    status = subprocess.run(
        ["dvc", "status", "train", "evaluate"], cwd=project, env=ENV, capture_output=True, text=True
    )
    (project / "methods.yaml").write_bytes(params)
    assert status.returncode == 0 and "train:" not in status.stdout and "evaluate:" not in status.stdout, (
        status.stdout
    )


@pytest.mark.slow
def test_checkout_restores_what_training_wrote_and_a_forced_run_retrains(project: Path) -> None:
    _at_baseline(project)
    before = _tracked_outputs(project)
    shutil.rmtree(project / "dvclive")
    (project / "models/trained/model.pt").unlink()
    _run(["dvc", "checkout"], project)
    assert _tracked_outputs(project) == before

    ran, out = _run(["dvc", "repro", "-f", "-s", "train"], project)
    assert ran == ["train"] and "resuming" not in out  # a finished run leaves nothing to resume
    assert _tracked_outputs(project) == before  # and retraining from scratch gives the same bytes


@pytest.mark.slow
def test_switching_dataset_warns_of_nothing_and_switching_back_restores_the_demo(
    project: Path, tmp_path: Path
) -> None:
    """`dvc exp run -S dataset.name=...` on a user's folder of videos, then back to the demo.

    DVC checks out every stage's outputs before it runs an experiment; an output path the lock has
    no entry for printed "No file hash info found for '<path>'. It won't be created." once per path.
    """
    _at_baseline(project)
    before = _tracked_outputs(project)
    videos = sorted((project / "data/demo/videos").glob("*.mp4"))[:6]
    for i, video in enumerate(videos):  # any 6 videos make a 2-class folder dataset
        (tmp_path / "clips" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(video, tmp_path / "clips" / "ab"[i % 2] / video.name)
    switch = [
        "-S",
        "dataset.name=folder",
        "-S",
        f"dataset.root={tmp_path / 'clips'}",
        "-S",
        "dataset.annotations=",
    ]
    ran, out = _run(["dvc", "exp", "run", *switch], project)
    assert "No file hash info" not in out and "won't be created" not in out, out[-3000:]
    assert ran == ["check", "index", "extract", "attributes", "train", "evaluate"]
    assert json.loads((project / "metrics/eval.json").read_text())["dataset"] == "folder"
    assert json.loads((project / "metrics/evaluate.json").read_text())["videos"] == 2  # 1 val video per class

    back = [
        "-S",
        "dataset.name=demo",
        "-S",
        "dataset.root=data/demo/videos",
        "-S",
        "dataset.annotations=data/demo/annotations",
    ]
    ran, out = _run(["dvc", "exp", "run", *back], project)
    assert "No file hash info" not in out and "won't be created" not in out, out[-3000:]
    # train's outputs come back from DVC's run cache; DVC keeps no run cache for a stage with an
    # uncached output (its run summary in metrics/), so those re-run, writing the same bytes
    assert ran == ["check", "index", "extract", "attributes", "evaluate"]
    assert "Stage 'train' is cached - skipping run" in out
    assert _tracked_outputs(project) == before
