"""Pipeline benchmark: cost of a no-op `dvc repro` and of `dvc exp run -S stage=2` against a full run.

Runs in a fresh clone of this repository (committed state) in a temporary folder, so the user's
workspace and DVC cache are untouched:
  1. full `dvc repro` (every stage, demo params)       -> baseline
  2. `dvc repro` again with nothing changed            -> goal <= 3 s, no stage runs
  3. `dvc exp run -S stage=2`                           -> must run train + evaluate only
Prints wall times, the stages each run executed, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAN = re.compile(r"Running stage '([^']+)'")


def run(cmd: list[str], cwd: Path) -> tuple[float, list[str], str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
    )
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-4000:]}")
    return seconds, RAN.findall(out), out


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline",
        description="Full `dvc repro` of the demo in a fresh clone, then a no-op repro and "
        "`dvc exp run -S stage=2` (about an hour on 2 cores); prints the times and ratios.",
    ).parse_args(argv)  # no options: --help describes the run before it starts
    venv_bin = Path(sys.executable).parent
    os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    dvc = str(venv_bin / "dvc")
    with tempfile.TemporaryDirectory(prefix="eva-bench-") as tmp:
        clone = Path(tmp) / "eva"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "config", "user.email", "bench@example.com"], cwd=clone, check=True)
        subprocess.run(["git", "config", "user.name", "bench"], cwd=clone, check=True)
        full, full_stages, _ = run([dvc, "repro"], clone)
        # Commit the lock file so the experiment has a baseline to diff against.
        subprocess.run(["git", "add", "dvc.lock"], cwd=clone, check=True)
        subprocess.run(["git", "commit", "-qm", "baseline"], cwd=clone, check=True)
        noop, noop_stages, noop_out = run([dvc, "repro"], clone)
        exp, exp_stages, _ = run([dvc, "exp", "run", "-S", "stage=2"], clone)

    print(f"full dvc repro           : {full:7.1f} s  stages: {', '.join(full_stages)}")
    print(
        f"no-op dvc repro          : {noop:7.1f} s  stages: {', '.join(noop_stages) or 'none'}  (goal <= 3 s)"
    )
    print(f"dvc exp run -S stage=2   : {exp:7.1f} s  stages: {', '.join(exp_stages)}")
    print(f"ratio no-op / full       : {noop / full:.3f}")
    print(f"ratio stage=2 exp / full : {exp / full:.3f}")
    skipped = sorted({"extract", "attributes", "index"} & set(exp_stages))
    print("stage=2 skipped extract and attributes: " + ("yes" if not skipped else f"NO, re-ran {skipped}"))
    if "Data and pipelines are up to date" not in noop_out:
        print("warning: no-op repro did not report 'Data and pipelines are up to date'")


if __name__ == "__main__":
    main()
