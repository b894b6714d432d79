"""Each stage's code dependency is its import closure (eva/utils/code_deps.py), written by `check`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eva.config import SIDE_FILES
from eva.utils.code_deps import ROOT, import_closure, listing
from stages.check import STAGES

REPO = Path(__file__).resolve().parents[1]

LOADED = """
import importlib, json, sys
from pathlib import Path
importlib.import_module(sys.argv[1])
root = Path(sys.argv[2])
files = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
print(json.dumps(sorted(str(f.relative_to(root)) for f in files if f.is_relative_to(root / "eva") or f.is_relative_to(root / "stages"))))
"""


@pytest.mark.parametrize("stage", STAGES)
def test_the_closure_holds_every_project_file_a_stage_loads(stage: str) -> None:
    """Importing the stage module (what `python -m stages.<name>` does first) loads no project file the
    listing lacks; the listing may hold more (imports inside functions, not run at import)."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, f"stages.{stage}", str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(done.stdout))
    listed = {str(p) for p in import_closure(f"stages.{stage}")}
    assert loaded and loaded <= listed, sorted(loaded - listed)


def _package(root: Path) -> None:
    files = {
        "eva/__init__.py": "",
        "eva/a/__init__.py": "from . import b\n",
        "eva/a/b.py": "import json\nfrom .c import thing\n",
        "eva/a/c.py": "thing = 1\n",
        "eva/late.py": "",
        "eva/unused.py": "",
        "stages/__init__.py": "",
        "stages/run.py": "import os\nfrom eva.a import b\n\ndef main():\n    from eva import late\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_closure_follows_packages_relative_and_function_level_imports(tmp_path: Path) -> None:
    _package(tmp_path)
    assert [str(p) for p in import_closure("stages.run", tmp_path)] == [
        "eva/__init__.py",
        "eva/a/__init__.py",
        "eva/a/b.py",
        "eva/a/c.py",
        "eva/late.py",  # imported inside main(): it runs when the stage does
        "stages/__init__.py",
        "stages/run.py",
    ]
    with pytest.raises(ValueError, match="not a module of this project"):
        import_closure("json", tmp_path)


def test_listing_is_sha256sum_of_the_closure_and_follows_each_file(tmp_path: Path) -> None:
    _package(tmp_path)
    text = listing("stages.run", tmp_path)
    lines = [line.split("  ") for line in text.splitlines()]
    assert [path for _, path in lines] == [str(p) for p in import_closure("stages.run", tmp_path)]
    assert all(digest == hashlib.sha256((tmp_path / path).read_bytes()).hexdigest() for digest, path in lines)
    (tmp_path / "eva/unused.py").write_text("# not imported by the stage\n")
    assert listing("stages.run", tmp_path) == text
    (tmp_path / "eva/a/c.py").write_text("thing = 2\n")
    assert listing("stages.run", tmp_path) != text


def test_dvc_yaml_stages_depend_on_their_listing_not_on_source_files() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert set(STAGES) == set(stages) - {"check"}
    check = stages["check"]
    assert [next(iter(out)) for out in check["outs"]] == [f"data/code/{s}.sha256" for s in STAGES]
    assert {"eva", "stages", *SIDE_FILES} <= set(check["deps"])
    for name in STAGES:
        deps = stages[name]["deps"]
        assert f"data/code/{name}.sha256" in deps
        assert not [d for d in deps if d.startswith(("eva/", "stages/")) and d.endswith(".py")], name
