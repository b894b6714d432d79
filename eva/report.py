"""Plain-text tables of evaluation metrics: one run, and mean ± std over experiment runs."""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from eva.methods import METHODS
from eva.metrics import TOP5_ABSENT_REASON
from eva.model_card import DEMO_WARNING
from eva.models.classifier import ModelConfig

METHOD_ORDER = tuple(METHODS)  # the registry's order
# Settings of the attribute tokens that make a run another row of the table (field: its row label),
# each shown only when not ModelConfig's default.
ATTRIBUTE_VARIANTS: dict[str, str] = {
    "attribute_projection": "projection",
    "attribute_attention": "attention",
}
VARIANT_DEFAULTS: dict[str, str] = {
    f.name: str(f.default) for f in dataclasses.fields(ModelConfig) if f.name in ATTRIBUTE_VARIANTS
}


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def format_run_table(metrics: Mapping[str, Any]) -> str:
    """The metrics of one evaluate run as an aligned two-column table."""
    rows = [
        ("dataset", str(metrics.get("dataset", "?"))),
        ("method", str(metrics.get("method", "?"))),
        ("stage", str(metrics.get("stage", "?"))),
        ("videos", str(metrics.get("videos", "?"))),
        (
            "views / video",
            f"{metrics.get('clips', 1)} clips x {metrics.get('crops', 1)} crops"
            + (f" x {metrics['keyframes']} keyframes" if metrics.get("keyframes", 1) > 1 else ""),
        ),
        ("top-1 (%)", _pct(metrics["top1"])),
        ("top-5 (%)", _pct(metrics["top5"]) if "top5" in metrics else "n/a (5 classes or fewer)"),
        ("mean class acc. (%)", _pct(metrics["mean_class_accuracy"])),
        ("tunable params", f"{metrics['tunable_params']:,}"),
        ("total params", f"{metrics['total_params']:,}"),
        ("tunable (%)", f"{100.0 * metrics['tunable_params'] / metrics['total_params']:.2f}"),
        ("throughput (clips/s)", f"{metrics.get('throughput_clips_per_s', float('nan')):.1f}"),
        ("peak memory (MB)", f"{metrics.get('peak_memory_mb', float('nan')):.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if "top5" not in metrics:
        lines += ["", f"NOTE: {TOP5_ABSENT_REASON}."]
    if metrics.get("dataset") == "demo":
        lines += ["", f"NOTE: {DEMO_WARNING}"]
    return "\n".join(lines)


def _mean_std(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:  # one seed: no spread to report
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def _row_key(run: Mapping[str, Any]) -> tuple[str, int | None, str]:
    """A run's row: (method, stage, variant), variant e.g. "projection none" ("" for the defaults).

    Stage and variant count only for the methods that read attributes, and a variant setting only
    when it is not the default: rows without a suffix use the default tokens.
    """
    method = METHODS.get(run["method"])
    if method is None or not method.uses_attributes:
        return run["method"], None, ""
    variant = ", ".join(
        f"{label} {run[name]}"
        for name, label in ATTRIBUTE_VARIANTS.items()
        if run.get(name, VARIANT_DEFAULTS[name]) != VARIANT_DEFAULTS[name]
    )
    return run["method"], run["stage"], variant


def aggregate_runs(runs: Iterable[Mapping[str, Any]]) -> str:
    """Markdown table: one row per (method, stage, attribute-token variant), mean ± std over seeds of each metric.

    Each run is the flat dict of one experiment: method, stage, seed, the `ATTRIBUTE_VARIANTS` settings
    (absent: the default) and the eval.json metrics.
    """
    groups: dict[tuple[str, int | None, str], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[_row_key(run)].append(run)

    def order(key: tuple[str, int | None, str]) -> tuple[int, int, str]:
        method, stage, variant = key
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return rank, stage or 0, variant

    lines = [
        "| method | seeds | top-1 (%) | top-5 (%) | mean class acc. (%) | tunable params | tunable (%) | recipe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=order):
        method, stage, variant = key
        group = groups[key]
        name = f"{method} stage {stage}" if stage is not None else method
        if variant:
            name += f", {variant}"
        tunable, total = group[0]["tunable_params"], group[0]["total_params"]
        seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
        lines.append(
            f"| {name} | {seeds} | {_mean_std([r['top1'] for r in group])} "
            f"| {_mean_std([r.get('top5') for r in group])} "
            f"| {_mean_std([r['mean_class_accuracy'] for r in group])} | {tunable:,} | {100 * tunable / total:.2f} "
            f"| {format_recipe(group[0].get('recipe'), group[0].get('lr_scale'))} |"
        )
    if any(r.get("top5") is None for group in groups.values() for r in group):
        lines += ["", f"top-5 n/a: {TOP5_ABSENT_REASON}."]
    return "\n".join(lines)


def format_recipe(recipe: Mapping[str, Any] | None, lr_scale: Mapping[str, float] | None = None) -> str:
    """`adamw lr 0.0003 x10, wd 0.05` (+ `backbone lr` when the backbone trains) from a `train.recipes` entry.

    `lr_scale` is `train.lr_scale` (optimiser -> factor); a factor other than 1 is printed after the rates.
    """
    if not recipe:
        return "?"
    optimizer = recipe.get("optimizer", "?")
    factor = (lr_scale or {}).get(optimizer, 1)
    times = f" x{factor:g}" if factor != 1 else ""
    text = f"{optimizer} lr {recipe.get('lr', 0):g}{times}"
    if recipe.get("backbone_lr"):
        text += f", backbone lr {recipe['backbone_lr']:g}{times}"
    return text + f", wd {recipe.get('weight_decay', 0):g}"


def run_record(metrics: Mapping[str, Any], params: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """One run for `aggregate_runs`: its eval.json metrics and the params that name its row and recipe."""
    model, train = params["model"], params["train"]
    return {
        **metrics,  # first: the run's own params name its method, stage and seed
        "name": name,
        "method": model["method"],
        "stage": params["stage"],
        "seed": train["seed"],
        "recipe": (train.get("recipes") or {}).get(model["method"]),
        "lr_scale": train.get("lr_scale"),
        **{variant: model.get(variant, VARIANT_DEFAULTS[variant]) for variant in ATTRIBUTE_VARIANTS},
    }


def _params_tree(data: Mapping[str, Any]) -> dict[str, Any]:
    """One `dvc exp show --json` row's params as one tree: params.yaml with the keys the side files add
    (recipes.yaml's `train.recipes.<method>`)."""
    from eva.utils.trees import merge

    tree: dict[str, Any] = {}
    for shown in (data.get("params") or {}).values():
        tree = merge(tree, (shown or {}).get("data") or {})
    return tree


def runs_from_exp_show(states: list[Mapping[str, Any]], name_prefix: str = "") -> list[dict[str, Any]]:
    """Flatten `dvc exp show --json` into one dict per finished experiment (params + eval metrics).

    Only finished experiments whose name starts with `name_prefix` and that have `metrics/eval.json`
    are kept. A queued or running experiment is listed with its own params but its baseline's metrics
    (measured with dvc 3: a running `vpt` showed the baseline `eva`'s top-1), so an experiment whose
    executor state is anything but `success` is skipped.
    """
    runs: list[dict[str, Any]] = []

    def visit(state: Mapping[str, Any]) -> None:
        data = state.get("data") or {}
        name = state.get("name") or ""
        params = _params_tree(data)
        metrics = ((data.get("metrics") or {}).get("metrics/eval.json") or {}).get("data")
        if metrics and params and name.startswith(name_prefix) and not state.get("error"):
            runs.append(run_record(metrics, params, name))
        for group in state.get("experiments") or []:
            if (group.get("executor") or {}).get("state", "success") != "success":
                continue  # queued, running or failed: its metrics are not its own
            for rev in group.get("revs") or []:
                visit(rev)

    for state in states:
        visit(state)
    return runs
