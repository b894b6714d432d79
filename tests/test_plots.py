"""`dvc plots show` writes a page that works offline: vega, vega-lite and vega-embed inline.

DVC's default page loads the three libraries from a CDN; `.dvc/config` points `plots.html_template`
at vendor/vega/dvc_plots.html (written by scripts/vega_template.py), which carries them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "vendor" / "vega" / "dvc_plots.html"
# a URL the browser would fetch: a src/href attribute, a CSS url() or @import
FETCHED_URL = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)(?:https?:)?//""", re.I
)


def test_the_template_carries_the_libraries_and_loads_nothing() -> None:
    page = TEMPLATE.read_text(encoding="utf-8")
    for name in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):
        assert f"<!-- {name} (npm)" in page
    assert "{plot_divs}" in page and "{scripts}" not in page  # no placeholder for DVC's CDN tags
    assert not FETCHED_URL.search(page)


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_dvc_plots_show_writes_a_page_without_network_urls(tmp_path: Path) -> None:
    """In a project with this repo's .dvc/config and template, as `dvc plots show` runs it."""
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    (tmp_path / "vendor" / "vega").mkdir(parents=True)
    shutil.copy(TEMPLATE, tmp_path / "vendor" / "vega" / TEMPLATE.name)
    (tmp_path / "loss.json").write_text(json.dumps([{"step": s, "loss": 1 / (s + 1)} for s in range(4)]))

    subprocess.run(
        [*dvc, "plots", "show", "loss.json", "-x", "step", "-y", "loss", "-o", "out"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )

    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "vegaEmbed(" in page and "<!-- vega-embed 6.18.2 (npm)" in page
    assert not FETCHED_URL.search(page), FETCHED_URL.search(page)
    assert "cdn.jsdelivr.net" not in page
