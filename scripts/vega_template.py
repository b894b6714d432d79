"""Write the HTML template `dvc plots show` renders into, with vega, vega-lite and vega-embed inline.

DVC's own page loads the three libraries from a CDN, so its plots are blank offline. This template
carries them (the versions DVC's page names), and `.dvc/config` points `plots.html_template` at it.

    make plots-template    # npm pack the three packages, then this script

    python scripts/vega_template.py DIR    # DIR holds vega-<v>.tgz, vega-lite-<v>.tgz, vega-embed-<v>.tgz
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

# The versions dvc_render's VegaRenderer.SCRIPTS loads (its templates are vega-lite v5 specs).
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
OUT = Path(__file__).resolve().parents[1] / "vendor" / "vega"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def member(folder: Path, name: str, version: str, path: str) -> str:
    with tarfile.open(folder / f"{name}-{version}.tgz") as archive:
        extracted = archive.extractfile(f"package/{path}")
        assert extracted is not None, path
        return extracted.read().decode("utf-8")


def main(folder: str) -> None:
    scripts, licenses = [], []
    for name, version in PACKAGES.items():
        code = member(Path(folder), name, version, f"build/{name}.min.js")
        code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", code)  # no map to fetch
        if "</script" in code:
            raise SystemExit(f"{name}.min.js contains '</script': it cannot be inlined")
        scripts.append(
            f"    <!-- {name} {version} (npm), BSD-3-Clause: vendor/vega/LICENSE -->\n<script>{code}</script>"
        )
        licenses.append(f"{name} {version}\n\n{member(Path(folder), name, version, 'LICENSE')}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dvc_plots.html").write_text(PAGE.format(scripts="\n".join(scripts)), encoding="utf-8")
    (OUT / "LICENSE").write_text(("\n" + "=" * 72 + "\n\n").join(licenses), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
