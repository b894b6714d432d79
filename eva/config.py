"""One way from a params.yaml section to a frozen config, and one way to check its values.

A config dataclass names, per field, the key it reads inside its section (`setting("adapter.ratio")`;
by default the field name) and the rule its value must meet (`setting(rule=integer(1))`).
`section_values` reads exactly those keys and rejects every other key of the section, so a typo such
as `-S model.adaptr.ratio=0.5` fails instead of being silently ignored; `check_fields` applies the
rules. A section may be nested (`section_values(cls, params, "pretrain.clip")`). Every message names
the full dotted key in backquotes:

    params.yaml has no key `extract.frames_per_video`
    unknown keys ['extract.frames_per_vido'] in params.yaml `extract`; expected some of [...]
    `extract.jpeg_quality` must be an integer in 1..100; got 101

The library's code receives the params dict through `from_params` classmethods; params.yaml itself is
read (with `load_params`) by the stages, the command-line tools that edit or inspect it (`eva.preset`,
`eva.weights`) and the scripts and benchmarks that set up runs. A field's default is the value
params.yaml holds (tests/test_config.py), so a reader meets one value per key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from eva.utils.trees import merge

# ----------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class Rule:
    """What a value must be: `ok(value)`, described by `expected` ("an integer >= 1")."""

    expected: str
    ok: Callable[[Any], bool]


def invalid(key: str, expected: str, value: Any) -> ValueError:
    """The one bad-value message: "`section.key` must be <expected>; got <value>"."""
    return ValueError(f"`{key}` must be {expected}; got {value!r}")


def check(key: str, value: Any, rule: Rule) -> None:
    """Raise `invalid(key, ...)` unless `value` meets `rule`."""
    if not rule.ok(value):
        raise invalid(key, rule.expected, value)


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    return f" <= {hi}" if hi is not None else ""


def _within(value: Any, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def integer(lo: int | None = None, hi: int | None = None, what: str = "") -> Rule:
    """An int (not a bool) in lo..hi; `what` says what it counts ("(worker processes)")."""
    return Rule(
        f"an integer{_bounds(lo, hi)}{f' {what}' if what else ''}",
        lambda v: isinstance(v, Integral) and not isinstance(v, bool) and _within(v, lo, hi),
    )


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> Rule:
    """A real number (not a bool) in lo..hi, and > `above` / < `below` where given."""
    parts = [_bounds(lo, hi).strip()]
    parts += [f"> {above}"] if above is not None else []
    parts += [f"< {below}"] if below is not None else []
    parts = [p for p in parts if p]
    return Rule(
        "a number" + (f" {' and '.join(parts)}" if parts else ""),
        lambda v: (
            isinstance(v, Real)
            and not isinstance(v, bool)
            and _within(v, lo, hi)
            and (above is None or v > above)
            and (below is None or v < below)
        ),
    )


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a string", lambda v: isinstance(v, str))
OPTIONAL_TEXT = Rule('a string ("" for none)', lambda v: v is None or isinstance(v, str))


def one_of(*choices: Any) -> Rule:
    """One of `choices` (compared with ==, bools never equal to 0/1)."""
    return Rule(
        f"one of {', '.join(map(str, choices))}",
        lambda v: any(v == c and isinstance(v, bool) == isinstance(c, bool) for c in choices),
    )


def setting(key: str | None = None, *, rule: Rule | None = None, **kwargs: Any) -> Any:
    """A config field read from params.yaml key `key` (default: the field name), checked by `rule`."""
    metadata: dict[str, Any] = {}
    if key is not None:
        metadata["key"] = key
    if rule is not None:
        metadata["rule"] = rule
    return field(metadata=metadata, **kwargs)


def derived(**kwargs: Any) -> Any:
    """A config field filled from other inputs (the data, another section), not from its own section."""
    return field(metadata={"derived": True}, **kwargs)


def check_fields(config: Any, section: str) -> None:
    """Apply every field's `rule` to its value; the message names `section.key`."""
    for f in fields(config):
        rule = f.metadata.get("rule")
        if rule is not None:
            check(f"{section}.{f.metadata.get('key', f.name)}", getattr(config, f.name), rule)


# ----------------------------------------------------------------------------- reading sections


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


# Sections kept in their own files beside params.yaml, by file: settled tables a researcher rarely
# changes (the demo's data, the demo's pretraining, each method's published optimiser recipe and its
# own model settings). Out of params.yaml they stay out of `dvc exp show`, which lists every key of
# params.yaml: demo_data and pretrain depend on their file as a whole, train on the one recipe and the
# one `model.<method>` section `model.method` names (dvc.yaml).
# `load_params` merges them back, so the code sees one params tree with the same dotted keys.
METHOD_SECTIONS = ("linear", "vpt", "aim", "eva", "full", "adaptformer", "lora")  # eva.methods.METHODS
SIDE_FILES: dict[str, tuple[str, ...]] = {
    "demo.yaml": ("demo",),
    "pretrain.yaml": ("pretrain",),
    "recipes.yaml": ("train.recipes",),
    "methods.yaml": tuple(f"model.{name}" for name in METHOD_SECTIONS),
}


def params_file(dotted: str) -> str:
    """The file that holds params key `dotted`: a side file for its sections, else params.yaml."""
    for name, sections in SIDE_FILES.items():
        if any(dotted == s or dotted.startswith(f"{s}.") for s in sections):
            return name
    return "params.yaml"


def read_yaml(text: str) -> Any:
    """YAML as DVC reads it: PyYAML's safe loader, plus YAML 1.2's exponent floats without a dot.

    `dvc exp run -S key=1e-6` (and DVC's own writes through ruamel) store `1e-06`, which YAML 1.1 and so
    plain PyYAML read as a string; DVC reads it as the float it is, and so does this.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of params sections")
    return data


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml with the side files beside it (`SIDE_FILES`) merged in: one tree, the same keys.

    A side file holds exactly its sections, and then params.yaml holds none of them; without the side
    file (a generated project), its sections may stay in params.yaml. Anything else names the key and
    the file it belongs in.
    """
    path = Path(path)
    params = _read_yaml(path)
    for name, sections in SIDE_FILES.items():
        side_path = path.with_name(name)
        if not side_path.is_file():
            continue
        side = _read_yaml(side_path)
        stray = sorted(key for key in _leaves(side) if params_file(key) != name)
        if stray:
            raise ValueError(f"unknown keys {stray} in {name}; it holds only {list(sections)}")
        doubled = [section for section in sections if _has(params, section)]
        if doubled:
            raise ValueError(f"`{doubled[0]}` is in both {path.name} and {name}; keep it in {name}")
        params = merge(params, side)  # its keys are all under its own sections (checked above)
    return params


def _has(params: Mapping[str, Any], dotted: str) -> bool:
    try:
        value_at(params, dotted)
    except KeyError:
        return False
    return True


def write_params(params: Mapping[str, Any], path: str | Path = "params.yaml") -> None:
    """Write a whole params tree as params.yaml (`path`) and its side files beside it (plain YAML,
    without comments: for generated projects; edit the committed files through `dvc exp run -S`)."""
    import yaml

    path = Path(path)
    for name, tree in split_params(params).items():
        target = path if name == "params.yaml" else path.with_name(name)
        target.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def value_at(params: Mapping[str, Any], dotted: str) -> Any:
    """The value of one dotted key (`attributes.caption.max_new_tokens`); a missing key names itself."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"{params_file(dotted)} has no key `{dotted}`")
        node = node[part]
    return node


def split_params(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The inverse of `load_params`: file name -> the tree it holds (params.yaml first)."""
    import copy

    rest = copy.deepcopy(dict(params))
    files: dict[str, dict[str, Any]] = {"params.yaml": rest}
    for name, sections in SIDE_FILES.items():
        side: dict[str, Any] = {}
        for section in sections:
            *parents, last = section.split(".")
            node, target = rest, side
            for part in parents:
                node = node[part]
                target = target.setdefault(part, {})
            target[last] = node.pop(last)
        files[name] = side
    return files


def section_values(
    cls: type, params: Mapping[str, Any], section: str, *, opaque: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The values of `cls`'s keys in `params[section]` (dotted for a nested section); a missing or
    unknown key names itself.

    `opaque`: sub-keys whose whole subtree another config reads, e.g. `recipes`.
    """
    node = value_at(params, section) if "." in section else params.get(section)
    if not isinstance(node, Mapping):
        raise KeyError(f"{params_file(section)} has no section `{section}`")
    keys = section_keys(cls)
    values: dict[str, Any] = {}
    for name, key in keys.items():
        value: Any = node
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(f"{params_file(f'{section}.{key}')} has no key `{section}.{key}`")
            value = value[part]
        values[name] = value
    known = set(keys.values())
    unknown = sorted(
        leaf
        for leaf in _leaves(node)
        if leaf not in known and not any(leaf == o or leaf.startswith(f"{o}.") for o in opaque)
    )
    if unknown:  # named with the file they are in (a section's method keys live in methods.yaml)
        stray = [f"{section}.{k}" for k in unknown]
        file = params_file(stray[0])
        expected = (f"{section}.{k}" for k in known | set(opaque))
        raise ValueError(
            f"unknown keys {[k for k in stray if params_file(k) == file]} in {file} `{section}`; "
            f"expected some of {sorted(k for k in expected if params_file(k) == file)}"
        )
    return values
