"""Queue the README's comparison runs as DVC experiments, and turn their metrics into the results table.

    python scripts/results_table.py queue     # dvc exp run --queue: 8 method configurations x 3 seeds
    python scripts/results_table.py queue --ablations         # + the 6 eva attribute-token ablations
    python scripts/results_table.py queue --only 'cmp-eva-*'  # a subset, by experiment-name pattern
    dvc queue start -j 1                      # run them (one at a time on a small machine)
    EVA_NUM_THREADS=1 dvc queue start -j 2    # two at a time, one thread each (other bits than -j 1)
    python scripts/results_table.py wait      # block until the queue is empty
    python scripts/results_table.py table     # markdown table from `dvc exp show --json`
    python scripts/results_table.py table --out results/demo.md         # ... into README's results file
    python scripts/results_table.py committed --out results/demo.md     # the one committed run instead

`make results` does the first four and writes results/demo.md; `committed` makes the same table from
the workspace's metrics/eval.json and params.yaml (the demo's own `dvc repro`, one run).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import time
from pathlib import Path

from eva.config import load_params
from eva.experiments import current_experiments
from eva.methods import METHODS
from eva.report import aggregate_runs, run_record, runs_from_exp_show

PREFIX = "cmp"
# (method, stage, extra `-S` settings, name tag). `METHOD_CONFIGS`, README's table: every registered
# method, those that read attributes once per `stage` (1: text, 2: + visual). `ABLATIONS` (`--ablations`):
# eva again with a gate per head and token (`model.eva.attribute_attention=gated_per_token`), with the
# paper's plain attention to the tokens (`joint`), and with the EVA authors' projection-free attribute
# mapping (`model.eva.attribute_projection=none`), beside the defaults.
Config = tuple[str, int, tuple[str, ...], str]
METHOD_CONFIGS: list[Config] = [
    (name, stage, (), "") for name, m in METHODS.items() for stage in ((1, 2) if m.uses_attributes else (1,))
]
ABLATIONS: list[Config] = [
    ("eva", stage, (setting,), tag)
    for setting, tag in (
        ("methods.yaml:model.eva.attribute_attention=gated_per_token", "-per-token"),
        ("methods.yaml:model.eva.attribute_attention=joint", "-joint"),
        ("methods.yaml:model.eva.attribute_projection=none", "-none"),
    )
    for stage in (1, 2)
]
SEEDS = (0, 1, 2)


def exp_show() -> list[dict]:
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True, check=True
    )
    return json.loads(shown.stdout)


def current_and_stale() -> tuple[set[str], set[str]]:
    """Names of our finished experiments that ran on today's code, data and models, and of the others.

    Matched by inputs, not by name: after new pretrained models (or shards, or code) every run is
    stale, and a table mixing old and new models would compare nothing.
    """
    shown = exp_show()
    current = {run["name"] for run in runs_from_exp_show(current_experiments(shown), name_prefix=PREFIX)}
    finished = {run["name"] for run in runs_from_exp_show(shown, name_prefix=PREFIX)}  # not queued/running
    return current, finished - current


def pending() -> set[str]:
    """Names of the experiments `dvc queue status` lists as queued or running (not yet in `dvc exp show`)."""
    status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout
    rows = (line.split() for line in status.splitlines())
    return {row[1] for row in rows if len(row) >= 4 and row[-1] in ("Queued", "Running")}


def queue(
    seeds: tuple[int, ...], only: tuple[str, ...] = ("*",), configs: list[Config] = METHOD_CONFIGS
) -> None:
    done, stale = current_and_stale()
    waiting = pending()
    if stale:  # DVC refuses a second experiment of one name; these measured other inputs
        print(
            f"removing {len(stale)} experiments run on other code, data or models: {', '.join(sorted(stale))}"
        )
        subprocess.run(["dvc", "exp", "remove", *sorted(stale)], check=True)
    for method, stage, settings, tag in configs:
        for seed in seeds:
            name = f"{PREFIX}-{method}-s{stage}{tag}-seed{seed}"
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in only):
                continue
            if name in done:
                print(f"{name}: already run on these inputs, kept (`dvc exp remove {name}` to run it again)")
                continue
            if name in waiting:  # queueing it again would run it twice
                print(f"{name}: already queued or running")
                continue
            overrides = (f"model.method={method}", f"stage={stage}", f"train.seed={seed}", *settings)
            subprocess.run(
                ["dvc", "exp", "run", "--queue", "--name", name, *(a for s in overrides for a in ("-S", s))],
                check=True,
            )


def wait(poll_s: float = 15.0) -> None:
    while pending():
        time.sleep(poll_s)


def table() -> str:
    runs = runs_from_exp_show(current_experiments(exp_show()), name_prefix=PREFIX)
    if not runs:
        raise SystemExit(
            f"no finished experiments named {PREFIX}-* on the current code, data and models: "
            "run `python scripts/results_table.py queue` first"
        )
    intro = (
        "`make results`: every method, at stage 1 and 2 where it reads attributes (and any `--ablations`), "
        f"as DVC experiments on the demo ({len(runs)} runs), mean ± std over the seeds listed."
    )
    return f"{intro}\n\n{aggregate_runs(runs)}"


def committed(metrics: str = "metrics/eval.json", params: str = "params.yaml") -> str:
    """The table's rows for the one run whose metrics are in the workspace (the demo's `dvc repro`)."""
    evaluated = json.loads(Path(metrics).read_text(encoding="utf-8"))
    run = run_record(evaluated, load_params(params))
    if (run["method"], run["stage"], run["seed"]) != (
        evaluated["method"],
        evaluated["stage"],
        evaluated["seed"],
    ):
        raise SystemExit(f"{metrics} was not written with {params}'s method, stage and seed: run `dvc repro`")
    intro = (
        f"The demo's own run (`dvc repro`, `{metrics}`): one seed of one configuration. "
        "`make results` replaces it with every method over three seeds."
    )
    return f"{intro}\n\n{aggregate_runs([run])}"


def write(text: str, out: str | None) -> None:
    if out is None:
        print(text)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    command = "make results" if "`make results`:" in text else "scripts/results_table.py committed"
    Path(out).write_text(f"<!-- written by {command}: do not edit -->\n{text}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["queue", "wait", "table", "committed"])
    parser.add_argument(
        "--out", help="write the table (table, committed) to this file instead of printing it"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--ablations", action="store_true", help="queue the eva attribute-token ablations too (18 more runs)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=["*"],
        metavar="PATTERN",
        help="queue only the runs whose name matches one of these shell patterns, e.g. 'cmp-eva-*'",
    )
    args = parser.parse_args()
    if args.action == "queue":
        configs = METHOD_CONFIGS + (ABLATIONS if args.ablations else [])
        queue(tuple(args.seeds), only=tuple(args.only), configs=configs)
    elif args.action == "wait":
        wait()
    elif args.action == "table":
        write(table(), args.out)
    else:
        write(committed(), args.out)


if __name__ == "__main__":
    main()
