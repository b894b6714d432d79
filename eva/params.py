"""params.yaml access for the stage scripts (the library itself takes plain arguments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def param(params: dict[str, Any], dotted: str) -> Any:
    """`param(p, "attributes.clip.model")`; a missing key names itself in the error."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params.yaml has no key '{dotted}'")
        node = node[part]
    return node
