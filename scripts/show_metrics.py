"""Print the evaluate stage's metrics as a table (the last step of `make demo`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eva.report import format_run_table


def main(path: str = "metrics/eval.json") -> None:
    metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    print(format_run_table(metrics))


if __name__ == "__main__":
    main(*sys.argv[1:])
