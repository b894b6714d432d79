"""One way from a params.yaml section to a frozen config: `section_values` + the config's `from_params`.

A config dataclass names, per field, the key it reads inside its section (`field(metadata=
{"key": "adapter.ratio"})`; by default the field name). `section_values` reads exactly those keys
and rejects every other key of the section, so a typo such as `-S model.adaptr.ratio=0.5` fails
instead of being silently ignored. Every message names the full dotted key in backquotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def section_keys(cls: type) -> dict[str, str]:
    """field name -> key inside the section, for the fields of `cls` that come from params.yaml."""
    keys = {}
    for f in fields(cls):
        if f.metadata.get("derived"):  # filled from other inputs (data, other sections), not this section
            continue
        keys[f.name] = f.metadata.get("key", f.name)
    return keys


def _leaves(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, value in node.items():
        dotted = f"{prefix}{name}"
        out += _leaves(value, f"{dotted}.") if isinstance(value, Mapping) else [dotted]
    return out


def section_values(
    cls: type, params: Mapping[str, Any], section: str, *, opaque: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The values of `cls`'s keys in `params[section]`; a missing or unknown key names itself.

    `opaque`: sub-keys whose whole subtree one field (or another config) reads, e.g. `recipes`.
    """
    if not isinstance(params.get(section), Mapping):
        raise KeyError(f"params.yaml has no section `{section}`")
    node = params[section]
    keys = section_keys(cls)
    values: dict[str, Any] = {}
    for name, key in keys.items():
        value: Any = node
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(f"params.yaml has no key `{section}.{key}`")
            value = value[part]
        values[name] = value
    known = set(keys.values())
    unknown = sorted(
        leaf
        for leaf in _leaves(node)
        if leaf not in known and not any(leaf == o or leaf.startswith(f"{o}.") for o in opaque)
    )
    if unknown:
        raise ValueError(
            f"unknown keys {[f'{section}.{k}' for k in unknown]} in params.yaml `{section}`; "
            f"expected some of {sorted(f'{section}.{k}' for k in known | set(opaque))}"
        )
    return values
