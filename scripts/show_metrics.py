"""Print the evaluate stage's metrics as a table (the last step of `make demo`).

Throughput and peak memory come from the stage's timings file (metrics/timings/evaluate.json),
which is not a declared output: it describes the machine of the last run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eva.report import format_run_table


def main(
    path: str = "metrics/eval.json",
    timings: str = "metrics/timings/evaluate.json",
    summary: str = "metrics/evaluate.json",  # how it was scored: videos, clips, crops, keyframes, views
) -> None:
    metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    if Path(summary).is_file():
        metrics |= json.loads(Path(summary).read_text(encoding="utf-8"))
    if Path(timings).is_file():
        metrics |= json.loads(Path(timings).read_text(encoding="utf-8"))
        print(format_run_table(metrics))
        return
    # evaluate did not run here (DVC found its inputs unchanged, e.g. on a fresh clone that rebuilt
    # the committed model byte for byte): no machine facts to show
    lines = [line for line in format_run_table(metrics).splitlines() if not line.endswith("  nan")]
    print("\n".join(lines))
    print(f"\n(throughput and peak memory: {timings} is written when the evaluate stage runs here)")


if __name__ == "__main__":
    main(*sys.argv[1:])
