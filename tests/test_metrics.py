import csv
import json
from pathlib import Path

import pytest
import torch

from eva.metrics import classification_report, confusion_records, write_per_class_csv
from eva.model_card import render_model_card
from eva.report import aggregate_runs, format_run_table


def test_report_counts_topk_and_mean_class_accuracy():
    # 3 classes; class 0: 2/2 right, class 1: 1/2 right, class 2 absent.
    scores = torch.tensor(
        [
            [0.9, 0.05, 0.05],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.5, 0.2, 0.3],  # label 1 ranked last -> top-1 and top-2 miss
        ]
    )
    labels = torch.tensor([0, 0, 1, 1])
    report = classification_report(scores, labels)
    assert report.top1 == pytest.approx(3 / 4)
    assert report.top5 is None  # with 3 classes top-5 cannot miss: not reported
    assert list(report.as_dict()) == ["top1", "mean_class_accuracy"]
    assert report.per_class_accuracy == [1.0, 0.5, None]
    assert report.mean_class_accuracy == pytest.approx(0.75)
    assert report.confusion.tolist() == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert report.per_class_support == [2, 2, 0]


@pytest.mark.parametrize(("classes", "reported"), [(5, False), (6, True)])
def test_top5_is_reported_only_when_it_can_miss(classes: int, reported: bool) -> None:
    # Label 0 ranked last of `classes`: a top-5 miss once there are 6 classes.
    scores = torch.arange(classes, dtype=torch.float32).repeat(3, 1)  # [3, C], class C-1 ranked first
    labels = torch.tensor([0, classes - 1, classes - 2])
    report = classification_report(scores, labels)
    assert report.top1 == pytest.approx(1 / 3)
    if reported:
        assert report.top5 == pytest.approx(2 / 3) and "top5" in report.as_dict()
    else:
        assert report.top5 is None and "top5" not in report.as_dict()
        metrics = {**METRICS, **report.as_dict()}
        metrics.pop("top5")
        assert "n/a (5 classes or fewer)" in format_run_table(metrics)
        card = render_model_card(
            config={"backbone": "b", "pretrained": "", "method": "aim", "attributes": [], "frames": 8,
                    "image_size": 224},
            dataset="x", stage=1, metrics=metrics, classes=["a"] * classes, train_params={}, demo=False,
        )  # fmt: skip
        assert "| top-5 | n/a (5 classes or fewer) |" in card


def test_report_rejects_bad_shapes_and_empty_split():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        classification_report(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        classification_report(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_per_class_csv_and_confusion_records(tmp_path):
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    labels = torch.tensor([0, 1])
    report = classification_report(scores, labels)
    write_per_class_csv(tmp_path / "pc.csv", report, ["left", "right"])
    rows = list(csv.DictReader((tmp_path / "pc.csv").read_text().splitlines()))
    assert [(r["class_name"], r["support"], r["correct"], r["accuracy"]) for r in rows] == [
        ("left", "1", "1", "1.000000"),
        ("right", "1", "0", "0.000000"),
    ]
    assert confusion_records(labels, scores.argmax(1), ["left", "right"]) == [
        {"actual": "left", "predicted": "left"},
        {"actual": "right", "predicted": "left"},
    ]


METRICS = {
    "dataset": "demo",
    "method": "eva",
    "stage": 2,
    "top1": 0.5,
    "top5": 0.9,
    "mean_class_accuracy": 0.45,
    "tunable_params": 1000,
    "total_params": 10000,
    "clips": 2,
    "crops": 3,
    "videos": 64,
}


def test_run_table_says_what_the_demo_models_are():
    table = format_run_table(METRICS)
    assert "top-1 (%)" in table and "50.00" in table and "10.00" in table
    assert "pretrained by the pipeline on synthetic stills" in table


def test_aggregate_runs_mean_std_per_method_and_stage():
    runs = [
        {**METRICS, "method": "eva", "stage": 1, "seed": 0, "top1": 0.4},
        {**METRICS, "method": "eva", "stage": 1, "seed": 1, "top1": 0.6},
        {**METRICS, "method": "eva", "stage": 2, "seed": 0, "top1": 0.7},
        {**METRICS, "method": "linear", "stage": 1, "seed": 0, "top1": 0.2},
        {**METRICS, "method": "linear", "stage": 2, "seed": 1, "top1": 0.3},  # stage is irrelevant for linear
    ]
    runs[0]["recipe"] = runs[1]["recipe"] = {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.05}
    runs[3]["recipe"] = {"optimizer": "adamw", "lr": 1e-3, "backbone_lr": 1e-5, "weight_decay": 0.05}
    runs[4]["recipe"] = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4}
    runs[0]["lr_scale"] = runs[1]["lr_scale"] = {"adamw": 10.0, "sgd": 1.0}  # the demo's
    table = aggregate_runs(runs).splitlines()
    assert table[0].endswith("| recipe |")
    assert table[2].startswith("| linear | 0,1 | 25.0 ± 7.1 |")
    assert table[2].endswith("| adamw lr 0.001, backbone lr 1e-05, wd 0.05 |")
    assert table[3].endswith("| adamw lr 0.0003 x10, wd 0.05 |")  # the rate run: recipe x train.lr_scale
    assert table[3].startswith("| eva stage 1 | 0,1 | 50.0 ± 14.1 |")
    assert table[4].startswith("| eva stage 2 | 0 | 70.0 |")


def test_aggregate_runs_separates_the_attribute_projection_of_attribute_methods_only():
    runs = [
        {**METRICS, "method": "eva", "stage": 1, "seed": 0, "top1": 0.4, "attribute_projection": "linear"},
        {**METRICS, "method": "eva", "stage": 1, "seed": 0, "top1": 0.8, "attribute_projection": "none"},
        {**METRICS, "method": "eva", "stage": 1, "seed": 1, "top1": 0.6, "attribute_projection": "none"},
        {**METRICS, "method": "aim", "stage": 1, "seed": 0, "top1": 0.5, "attribute_projection": "none"},
        {**METRICS, "method": "aim", "stage": 1, "seed": 1, "top1": 0.7},  # absent: the default
        {**METRICS, "method": "eva", "stage": 1, "seed": 0, "top1": 0.3, "attribute_attention": "joint"},
        {**METRICS, "method": "eva", "stage": 1, "seed": 1, "top1": 0.5, "attribute_attention": "gated"},
        {**METRICS, "method": "eva", "stage": 1, "seed": 2, "top1": 0.2, "attribute_projection": "none",
         "attribute_attention": "joint"},
    ]  # fmt: skip
    rows = [line.split(" | ")[:3] for line in aggregate_runs(runs).splitlines()[2:]]
    assert rows == [
        ["| aim", "0,1", "60.0 ± 14.1"],  # aim reads no attributes: the setting does not split it
        ["| eva stage 1", "0,1", "45.0 ± 7.1"],  # gated is the default attention: no suffix
        ["| eva stage 1, attention joint", "0", "30.0"],
        ["| eva stage 1, projection none", "0,1", "70.0 ± 14.1"],
        ["| eva stage 1, projection none, attention joint", "2", "20.0"],
    ]


def test_model_card_has_yaml_header_with_run_facts():
    import yaml

    config = {
        "backbone": "ViT-B-16",
        "pretrained": "openai",
        "method": "eva",
        "attributes": ["label", "caption"],
        "frames": 8,
        "image_size": 224,
    }
    text = render_model_card(
        config=config,
        dataset="ucf101",
        stage=1,
        metrics=METRICS,
        classes=["a", "b"],
        train_params={"lr": 0.001},
        demo=False,
    )
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["base_model"] == "ViT-B-16 (openai)"
    assert header["parameters"] == {"tunable": 1000, "total": 10000, "tunable_percent": 10.0}
    assert header["metrics"]["top1"] == 0.5 and header["stage"] == 1
    assert "synthetic stills" not in text


def test_runs_from_exp_show_reads_nested_experiments():
    from eva.report import runs_from_exp_show

    def state(name, method, seed, metrics):
        data = {
            "params": {
                "params.yaml": {
                    "data": {
                        "stage": 1,
                        "model": {
                            "method": method,
                            "attribute_projection": "none" if seed == 2 else "linear",
                        },
                        "train": {"seed": seed},
                    }
                }
            },
            "metrics": {"metrics/eval.json": {"data": metrics}} if metrics else {},
        }
        return {"rev": name, "name": name, "data": data, "error": None, "experiments": None}

    shown = [
        {
            **state("workspace", "eva", 0, METRICS),
            "experiments": [
                {"revs": [state("cmp-eva-s1-seed0", "eva", 0, METRICS)], "name": "cmp-eva-s1-seed0"},
                {
                    "revs": [state("cmp-vpt-s1-seed1", "vpt", 1, None)],
                    "name": "cmp-vpt-s1-seed1",
                },  # unfinished
                {"revs": [state("other", "aim", 0, METRICS)], "name": "other"},
                {  # running: dvc shows its params with the baseline's metrics
                    "revs": [state("cmp-aim-s1-seed1", "aim", 1, METRICS)],
                    "name": "cmp-aim-s1-seed1",
                    "executor": {"state": "running"},
                },
                {
                    "revs": [state("cmp-aim-s1-seed2", "aim", 2, METRICS)],
                    "name": "cmp-aim-s1-seed2",
                    "executor": {"state": "success"},
                },
            ],
        }
    ]
    runs = runs_from_exp_show(shown, name_prefix="cmp")
    assert [(r["name"], r["method"], r["seed"], r["top1"], r["attribute_projection"]) for r in runs] == [
        ("cmp-eva-s1-seed0", "eva", 0, 0.5, "linear"),
        ("cmp-aim-s1-seed2", "aim", 2, 0.5, "none"),
    ]


def test_only_experiments_on_the_workspaces_inputs_count():
    """A run on older pretrained models is stale whatever its name; of two current runs of a name, the newest counts."""
    from eva.experiments import current_experiments
    from eva.report import runs_from_exp_show

    def state(name, deps, top1, timestamp="2026-12-01T10:00:00"):
        data = {
            "timestamp": timestamp,
            "params": {
                "params.yaml": {"data": {"stage": 1, "model": {"method": "aim"}, "train": {"seed": 0}}}
            },
            "metrics": {"metrics/eval.json": {"data": {**METRICS, "top1": top1}}},
            "deps": {path: {"hash": h, "size": 1, "nfiles": None} for path, h in deps.items()},
            "outs": {"models/trained/model.pt": {"hash": name}},  # each run's own model
        }
        return {"rev": name, "name": name, "data": data, "error": None, "experiments": None}

    now = {"models/pretrained": "new", "shards": "s", "eva/models": "c", "models/trained/model.pt": "m"}
    old = now | {"models/pretrained": "old"}
    shown = [
        {
            **state("workspace", now, 0.1),
            "experiments": [
                {
                    "revs": [state("cmp-aim-s1-seed0", now, 0.8, "2026-12-01T16:00:00")],
                    "name": "cmp-aim-s1-seed0",
                },
                {  # evaluate read the model this run trained, not the workspace's: still current
                    "revs": [state("cmp-aim-s1-seed1", now | {"models/trained/model.pt": "own"}, 0.7)],
                    "name": "cmp-aim-s1-seed1",
                },
            ],
        },
        {  # an older commit: the same names, run on the old models (and one current rerun, older)
            **state("abc123", old, 0.4),
            "experiments": [
                {"revs": [state("cmp-aim-s1-seed0", old, 0.4)], "name": "cmp-aim-s1-seed0"},
                {
                    "revs": [state("cmp-aim-s1-seed1", now, 0.6, "2026-12-01T09:00:00")],
                    "name": "cmp-aim-s1-seed1",
                },
                {"revs": [state("cmp-aim-s1-seed2", old, 0.5)], "name": "cmp-aim-s1-seed2"},
            ],
        },
    ]
    runs = {r["name"]: r["top1"] for r in runs_from_exp_show(current_experiments(shown), name_prefix="cmp")}
    assert runs == {"cmp-aim-s1-seed0": 0.8, "cmp-aim-s1-seed1": 0.7}
    with pytest.raises(ValueError, match="workspace"):
        current_experiments(shown[1:])


def test_timings_and_cache_facts_leave_the_tracked_summary(tmp_path: Path, monkeypatch) -> None:
    """A re-run on another machine must not change a tracked byte: seconds, rates, memory and cache
    facts go to the untracked metrics/timings/<stage>.json, at the nesting they had."""
    from stages._entry import write_summary

    monkeypatch.chdir(tmp_path)
    summary = {
        "top1": 0.5,
        "seconds": 3.0,
        "clip": {"steps": 2, "seconds": 1.0},
        "config": {"cache_key": "abc", "keyframes": 4},
    }
    write_summary("summary.json", summary, "stage", sort_keys=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "top1": 0.5,
        "clip": {"steps": 2},
        "config": {"keyframes": 4},
    }
    assert next(iter(json.loads((tmp_path / "summary.json").read_text()))) == "top1"  # order kept
    assert json.loads((tmp_path / "metrics/timings/stage.json").read_text()) == {
        "seconds": 3.0,
        "clip": {"seconds": 1.0},
        "config": {"cache_key": "abc"},
    }


def test_code_listings_decide_currency_and_recipes_reach_the_record():
    """A run is stale when a stage's code listing differs, not when only the check stage's inputs do
    (an edit no stage runs); the recipe of the run's method comes from recipes.yaml's params."""
    from eva.experiments import current_experiments
    from eva.report import runs_from_exp_show

    listing = "data/code/train.sha256"  # an output of `check` and a dependency of `train`
    recipe = {"optimizer": "adamw", "lr": 0.0003, "backbone_lr": 0.0, "weight_decay": 0.05, "momentum": 0.9}

    def state(name, deps):
        data = {
            "timestamp": "2026-12-01T10:00:00",
            "params": {
                "params.yaml": {"data": {"stage": 1, "model": {"method": "aim"}, "train": {"seed": 0}}},
                "recipes.yaml": {"data": {"train": {"recipes": {"aim": recipe}}}},
            },
            "metrics": {"metrics/eval.json": {"data": METRICS}},
            "deps": {path: {"hash": h} for path, h in deps.items()},
            "outs": {listing: {"hash": deps[listing]}},
        }
        return {"rev": name, "name": name, "data": data, "error": None, "experiments": None}

    now = {listing: "code", "eva": "tree", "stages": "tree", "shards": "s"}
    groups = [
        {"revs": [state("cmp-edit-elsewhere", now | {"eva": "other tree"})], "name": "cmp-edit-elsewhere"},
        {"revs": [state("cmp-old-code", now | {listing: "old code"})], "name": "cmp-old-code"},
    ]
    shown = [{**state("workspace", now), "experiments": groups}]
    runs = runs_from_exp_show(current_experiments(shown), name_prefix="cmp")
    assert [r["name"] for r in runs] == ["cmp-edit-elsewhere"]
    assert runs[0]["recipe"] == recipe
