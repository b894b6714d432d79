"""Copy the generated tables under results/ into README.md, between their markers.

    <!-- generated: results/params.md -->
    ...the file's text, copied by `make readme`...
    <!-- /generated -->

    python scripts/readme_tables.py           # assemble results/bench.md, then fill README's blocks
    python scripts/readme_tables.py --check   # exit 1, naming the blocks, where README differs
    python scripts/readme_tables.py bench     # only assemble results/bench.md (`make bench`)

Every number README shows comes from one of these files: `make results` (results/demo.md),
`make counts` (results/params.md), `make bench` (results/bench/<name>.md, one per benchmark, and
results/bench.md). tests/test_readme.py fails when a copy is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BENCH_DIR, BENCH = REPO / "results" / "bench", REPO / "results" / "bench.md"
BLOCK = re.compile(r"(<!-- generated: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)
NO_BENCH = (
    "No benchmark has written its table yet: `make bench` runs them; each writes `results/bench/<name>.md`."
)


SUMMARY = re.compile(r"<!-- summary -->\n(?P<body>.*?)<!-- /summary -->", re.S)


def bench_part(path: Path) -> str:
    """One benchmark's part of results/bench.md: its summary block (the whole file if it has none),
    under a heading that links a summary to the full file (two lines fewer of README's 300)."""
    text = path.read_text(encoding="utf-8")
    if match := SUMMARY.search(text):
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
        return f"#### {path.stem} ([all of it]({rel}))\n{match['body'].strip()}\n"
    return f"#### {path.stem}\n\n{text.strip()}\n"


def assemble_bench(folder: Path = BENCH_DIR) -> str:
    """results/bench.md: every benchmark's summary, in name order, under a heading of its name."""
    parts = [bench_part(path) for path in sorted(folder.glob("*.md"))]
    return "<!-- assembled by `make bench` from results/bench/*.md: do not edit -->\n" + (
        "\n".join(parts) if parts else f"{NO_BENCH}\n"
    )


def blocks(text: str) -> list[tuple[str, str]]:
    """(path, README's copy) of every generated block."""
    return [(m["path"], m["body"]) for m in BLOCK.finditer(text)]


def fill(text: str, root: Path = REPO) -> str:
    """README's text with every generated block holding its file's current text."""

    def body(match: re.Match[str]) -> str:
        content = (root / match["path"]).read_text(encoding="utf-8")
        return f"{match[1]}{content if content.endswith(chr(10)) else content + chr(10)}{match[4]}"

    return BLOCK.sub(body, text)


def stale(text: str, root: Path = REPO) -> list[str]:
    """Paths whose README copy differs from the file (or whose file is missing)."""
    out = []
    for path, copy in blocks(text):
        file = root / path
        if not file.is_file() or file.read_text(encoding="utf-8").rstrip("\n") + "\n" != copy:
            out.append(path)
    return out


def main(args: list[str]) -> None:
    if args == ["bench"]:
        BENCH.write_text(assemble_bench(), encoding="utf-8")
        return
    text = README.read_text(encoding="utf-8")
    if args == ["--check"]:
        if paths := stale(text):
            raise SystemExit(f"README.md's copies of {', '.join(paths)} are stale: run `make readme`")
        return
    if args:
        raise SystemExit(__doc__)
    BENCH.write_text(assemble_bench(), encoding="utf-8")
    README.write_text(fill(text), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
