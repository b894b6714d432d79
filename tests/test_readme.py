"""README is short, undated, and every number it shows is a copy of a generated file under results/.

`make readme` (scripts/readme_tables.py) copies results/*.md into README between
`<!-- generated: PATH -->` and `<!-- /generated -->`; these tests fail when a copy is stale, when
README grows past 300 lines, when it holds dated prose, or when a count, percentage, ratio or duration
appears outside the generated blocks that no generated file holds.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _script(name: str):
    """`scripts/<name>.py` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_tables = _script("readme_tables")

MAX_LINES = 300
GENERATED = ("results/demo.md", "results/params.md", "results/bench.md")
# numbers that must come from a file: counts with thousands separators, percentages, ratios, durations
MEASURED = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+(?:\.\d+)?\s?(?:%|x\b|s\b|min\b|GiB\b|MB\b|ms\b)")
DATED = re.compile(
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth) round\b|\bthis session\b"
    r"|\bthis machine\b|\bload average\b|\bissue's targets\b|\b20\d\d-\d\d-\d\d\b|\btoday\b",
    re.I,
)


def _outside_generated(text: str) -> str:
    return readme_tables.BLOCK.sub("", text)


def test_readme_fits_in_300_lines() -> None:
    assert len(README.splitlines()) <= MAX_LINES


def test_readme_includes_every_generated_table() -> None:
    assert sorted(path for path, _ in readme_tables.blocks(README)) == sorted(GENERATED)


def test_readme_copies_of_the_generated_tables_are_current() -> None:
    assert readme_tables.stale(README) == [], "run `make readme`"


def test_bench_md_is_assembled_from_the_per_benchmark_files() -> None:
    assert (REPO / "results" / "bench.md").read_text(encoding="utf-8") == readme_tables.assemble_bench()


def test_readme_has_no_dated_prose() -> None:
    assert not DATED.findall(README)


def test_every_measured_number_outside_the_generated_blocks_is_in_a_generated_file() -> None:
    sources = "\n".join((REPO / path).read_text(encoding="utf-8") for path in GENERATED)
    typed = [n for n in MEASURED.findall(_outside_generated(README)) if n.strip() not in sources]
    assert typed == [], f"numbers typed by hand in README: {typed}"


def test_fill_replaces_a_stale_copy(tmp_path: Path) -> None:
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    text = "x\n<!-- generated: t.md -->\nold\n<!-- /generated -->\ny\n"
    assert readme_tables.stale(text, tmp_path) == ["t.md"]
    filled = readme_tables.fill(text, tmp_path)
    assert filled == "x\n<!-- generated: t.md -->\n| a |\n|---|\n| 1 |\n<!-- /generated -->\ny\n"
    assert readme_tables.stale(filled, tmp_path) == []


def test_assemble_bench_collects_each_benchmark_under_its_name(tmp_path: Path) -> None:
    assert readme_tables.NO_BENCH in readme_tables.assemble_bench(tmp_path)
    (tmp_path / "train_step.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "extract.md").write_text("| b |\n")
    text = readme_tables.assemble_bench(tmp_path)
    assert text.index("#### extract") < text.index("#### train_step") and "| 1 |" in text
    # A file with a summary block contributes the block and a link to itself, not its full tables.
    (tmp_path / "extract.md").write_text("intro\n<!-- summary -->\n| b |\n<!-- /summary -->\n| detail |\n")
    text = readme_tables.assemble_bench(tmp_path)
    assert "| b |" in text and "| detail |" not in text and "intro" not in text
    assert "#### extract ([all of it](extract.md))\n| b |" in text  # the heading links the full file


def test_make_help_lists_every_target() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M)
    undocumented = [t for t in targets if not re.search(rf"^{t}:.*## \S", makefile, re.M)]
    assert "help" in targets and undocumented == []


def test_the_results_table_compares_every_method_at_each_stage_over_three_seeds() -> None:
    """README's results table is `make results`' comparison, not one run: every registered method (those that
    read attributes at stage 1 and 2), each over seeds 0, 1 and 2, as mean ± spread."""
    results_table = _script("results_table")
    from eva.methods import METHODS

    text = (REPO / "results" / "demo.md").read_text(encoding="utf-8")
    assert "written by make results" in text
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(("| method", "|---"))
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    expected = [
        f"{method} stage {stage}" if METHODS[method].uses_attributes else method
        for method, stage, settings, _ in results_table.METHOD_CONFIGS
        if not settings
    ]
    assert len(expected) == 8 and set(expected) <= set(rows), sorted(set(expected) - set(rows))
    for name in expected:
        assert rows[name][1] == ",".join(map(str, results_table.SEEDS)) == "0,1,2", name
        assert re.fullmatch(r"\d+\.\d ± \d+\.\d", rows[name][2]), rows[name]  # top-1 mean ± std
