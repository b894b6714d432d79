"""Queue the README's comparison runs as DVC experiments, and turn their metrics into the results table.

    python scripts/results_table.py queue     # dvc exp run --queue: 12 configurations x 3 seeds
    python scripts/results_table.py queue --no-ablations  # only the 8 rows of the methods (24 runs)
    dvc queue start -j 1                      # run them (one at a time on a small machine)
    python scripts/results_table.py wait      # block until the queue is empty
    python scripts/results_table.py table     # markdown table from `dvc exp show --json`

`make results` does all four.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from eva.experiments import current_experiments
from eva.methods import METHODS
from eva.report import aggregate_runs, runs_from_exp_show

PREFIX = "cmp"
# (method, stage, extra `-S` settings, name tag): every registered method, those that read attributes
# once per `stage` (1: text, 2: + visual), and eva again with the paper's plain attention to the
# tokens (`model.attribute_attention=joint`) beside the default gated one, and with the EVA authors'
# projection-free attribute mapping (`model.attribute_projection=none`) beside the default Linear one.
Config = tuple[str, int, tuple[str, ...], str]
CONFIGS: list[Config] = [
    (name, stage, (), "") for name, m in METHODS.items() for stage in ((1, 2) if m.uses_attributes else (1,))
] + [
    ("eva", stage, (setting,), tag)
    for setting, tag in (
        ("model.attribute_attention=joint", "-joint"),
        ("model.attribute_projection=none", "-none"),
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


def queue(seeds: tuple[int, ...], ablations: bool = True) -> None:
    done, stale = current_and_stale()
    if stale:  # DVC refuses a second experiment of one name; these measured other inputs
        print(
            f"removing {len(stale)} experiments run on other code, data or models: {', '.join(sorted(stale))}"
        )
        subprocess.run(["dvc", "exp", "remove", *sorted(stale)], check=True)
    for method, stage, settings, tag in CONFIGS:
        if tag and not ablations:
            continue
        for seed in seeds:
            name = f"{PREFIX}-{method}-s{stage}{tag}-seed{seed}"
            if name in done:
                print(f"{name}: already run on these inputs, kept (`dvc exp remove {name}` to run it again)")
                continue
            overrides = (f"model.method={method}", f"stage={stage}", f"train.seed={seed}", *settings)
            subprocess.run(
                ["dvc", "exp", "run", "--queue", "--name", name, *(a for s in overrides for a in ("-S", s))],
                check=True,
            )


def wait(poll_s: float = 15.0) -> None:
    while True:
        status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return
        time.sleep(poll_s)


def table() -> str:
    runs = runs_from_exp_show(current_experiments(exp_show()), name_prefix=PREFIX)
    if not runs:
        raise SystemExit(
            f"no finished experiments named {PREFIX}-* on the current code, data and models: "
            "run `python scripts/results_table.py queue` first"
        )
    return aggregate_runs(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["queue", "wait", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--no-ablations",
        action="store_true",
        help="queue only every method's own rows, not eva's attention-joint and projection-none ablations",
    )
    args = parser.parse_args()
    if args.action == "queue":
        queue(tuple(args.seeds), ablations=not args.no_ablations)
    elif args.action == "wait":
        wait()
    else:
        print(table())


if __name__ == "__main__":
    main()
