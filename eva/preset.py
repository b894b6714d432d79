"""Named presets: one command sets every params.yaml key that a published setup fixes.

    python -m eva.preset --list            # the presets and their first comment line
    python -m eva.preset ucf101 --dry-run  # what would change
    python -m eva.preset ucf101            # write it into params.yaml, then `dvc exp run` / `dvc repro`
    python -m eva.preset --reference-table # presets/reference/table.yaml -> docs/reference-deviations.md

A preset is a YAML file in `presets/` holding a part of params.yaml, optionally `extends:` one preset
or a list of them (resolved first, in order, later wins; the file's own keys win over all). Files
named `_*.yaml` are building blocks, not meant to be applied alone. Applying one writes params.yaml
the way `dvc exp run -S` does (DVC's own round-trip YAML writer: comments, order and quoting kept),
after checking the result through the same validation as the pipeline's `check` stage. Every key a
preset sets must already exist in params.yaml, so a typo in a preset cannot add a stray key.

Each real preset is held to the published setup it claims by presets/reference/table.yaml: per key,
the reference's value with its file, line and commit, or the preset's deliberate difference and why
(`reference_checks`, tests/test_presets.py).

`demo` sets the same keys back to the embedded demo's values: every real preset sets exactly the keys
the demo preset does (tests/test_presets.py), so `python -m eva.preset demo` undoes any of them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from eva.config import read_yaml
from eva.utils.trees import merge

PRESETS = Path(__file__).resolve().parents[1] / "presets"
EXTENDS = "extends"


def names(folder: Path = PRESETS) -> list[str]:
    """The presets meant to be applied (building blocks `_*.yaml` excluded), sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def _read(name: str, folder: Path) -> dict[str, Any]:
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no preset '{name}' in {folder}; presets: {', '.join(names(folder))}")
    data = read_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset is a mapping of params.yaml sections")
    return data


def resolve(name: str, folder: Path = PRESETS, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset `name` with its `extends` chain applied: the params it sets."""
    if name in _seen:
        raise ValueError(f"preset '{name}' extends itself: {' -> '.join((*_seen, name))}")
    data = _read(name, folder)
    parents = data.pop(EXTENDS, [])
    resolved: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        resolved = merge(resolved, resolve(parent, folder, (*_seen, name)))
    return merge(resolved, data)


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, f"{dotted}.")
        else:
            yield dotted, value


def changes(params: Mapping[str, Any], preset: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, current, new) for each key the preset sets to another value; KeyError for a key params lacks."""
    from eva.config import value_at

    out = []
    for key, new in leaves(preset):
        old = value_at(params, key)  # KeyError naming the key params.yaml lacks
        if old != new or type(old) is not type(new):
            out.append((key, old, new))
    return out


def _set(tree: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    if isinstance(tree[last], list) and isinstance(value, list):
        del tree[last][:]  # in place: the YAML writer keeps the list's style
        tree[last].extend(value)
    else:
        tree[last] = value


def apply(
    name: str, params_path: Path = Path("params.yaml"), folder: Path = PRESETS, *, dry_run: bool = False
) -> list[tuple[str, Any, Any]]:
    """Write preset `name` into `params_path` and the side files beside it (unless `dry_run`): each key
    into the file that holds it (`eva.config.SIDE_FILES`: `train.recipes.*` into recipes.yaml);
    return what changes.

    The result is validated first (`eva.params.check_params`: every section through its config
    class), so a preset that does not fit the code leaves params.yaml untouched.
    """
    from dvc.utils.serialize import modify_yaml

    from eva.config import load_params, params_file
    from eva.params import check_params

    preset = resolve(name, folder)
    current = load_params(params_path)
    diff = changes(current, preset)
    updated = copy.deepcopy(current)
    for key, _, new in diff:
        _set(updated, key, new)
    check_params(updated)
    if diff and not dry_run:
        for file in sorted({params_file(key) for key, _, _ in diff}):  # params.yaml or a side file
            with modify_yaml(params_path.with_name(file)) as data:
                for key, _, new in diff:
                    if params_file(key) == file:
                        _set(data, key, new)
    return diff


# ----------------------------------------------------------------------------- the reference table

REFERENCE_TABLE = PRESETS / "reference" / "table.yaml"
REFERENCE_DOC = PRESETS.parent / "docs" / "reference-deviations.md"
_DOC_BLOCK = ("<!-- generated: python -m eva.preset --reference-table -->\n", "<!-- /generated -->")


def reference_table(path: Path = REFERENCE_TABLE) -> dict[str, Any]:
    """presets/reference/table.yaml: per published setup, the value each key must have in its presets."""
    table = read_yaml(path.read_text(encoding="utf-8"))
    for setup_id, setup in table["setups"].items():
        for row in setup["values"]:
            if "why" in row and "reference" not in row:
                raise ValueError(
                    f"{path}: {setup_id} {row['key']}: a `why` needs the `reference` value it departs from"
                )
    return table


def reference_checks(
    table: Mapping[str, Any], params: Mapping[str, Any], folder: Path = PRESETS
) -> Iterator[tuple[str, str, str, Any, Any]]:
    """(setup, preset, key, value the table gives, value params.yaml gets from the preset) per row and preset."""
    from eva.config import value_at

    for setup_id, setup in table["setups"].items():
        for name in (*setup["presets"], *setup.get("derived", ())):
            applied = merge(params, resolve(name, folder))
            for row in setup["values"]:
                yield setup_id, name, row["key"], row["value"], value_at(applied, row["key"])


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _where(row: Mapping[str, Any], setup: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    source = sources[row.get("source", setup["source"])]
    lines = f" L{row['lines']}" if "lines" in row else ""
    return f"`{row.get('file', setup['file'])}`{lines} @{source['commit'][:7]}"


def reference_markdown(table: Mapping[str, Any]) -> str:
    """The table as docs/reference-deviations.md shows it: one section per published setup."""
    sources = table["sources"]
    parts = []
    for setup in table["setups"].values():
        source = sources[setup["source"]]
        claimed = ", ".join(f"`{p}`" for p in setup["presets"])
        derived = ", ".join(f"`{p}`" for p in setup.get("derived", ()))
        parts.append(f"### {setup['title']}\n")
        parts.append(
            f"{source['repo']} `{setup['file']}` at {source['commit'][:7]}. Presets: {claimed}"
            + (f"; carried over to {derived} (no published setup of their own)." if derived else ".")
            + "\n"
        )
        parts.append("| key | preset value | reference | where | why it differs |")
        parts.append("|---|---|---|---|---|")
        for row in setup["values"]:
            reference = _cell(row.get("reference", row["value"]))
            why = _cell(row.get("why", ""))
            parts.append(
                f"| `{row['key']}` | {_cell(row['value'])} | {reference} | {_where(row, setup, sources)} | {why} |"
            )
        if setup.get("missing"):
            parts.append("\nWhat the reference does that no params key expresses yet:\n")
            for row in setup["missing"]:
                parts.append(f"- {row['setting']} ({_where(row, setup, sources)}): {row['status']}")
        parts.append("")
    return "\n".join(parts)


def _block_span(text: str) -> tuple[int, int]:
    """Where the generated table sits between the doc's markers."""
    return text.index(_DOC_BLOCK[0]) + len(_DOC_BLOCK[0]), text.index(_DOC_BLOCK[1])


def reference_doc_block(doc: Path = REFERENCE_DOC) -> str:
    """The doc's copy of the generated table."""
    text = doc.read_text(encoding="utf-8")
    start, end = _block_span(text)
    return text[start:end]


def write_reference_doc(doc: Path = REFERENCE_DOC, table: Path = REFERENCE_TABLE) -> bool:
    """Put `reference_markdown` between the doc's generated markers; True when the doc changed."""
    text = doc.read_text(encoding="utf-8")
    start, end = _block_span(text)
    updated = text[:start] + reference_markdown(reference_table(table)) + "\n" + text[end:]
    doc.write_text(updated, encoding="utf-8")
    return updated != text


def _first_comment(name: str, folder: Path) -> str:
    for line in (folder / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eva.preset",
        description="Write a named preset (presets/<name>.yaml) into params.yaml.",
    )
    parser.add_argument("name", nargs="?", help="preset to apply (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    parser.add_argument(
        "--reference-table",
        action="store_true",
        help="write presets/reference/table.yaml into docs/reference-deviations.md",
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)
    if args.reference_table:
        changed = write_reference_doc()
        print(f"{REFERENCE_DOC}: {'updated' if changed else 'already up to date'}")
        return 0
    if args.list or not args.name:
        for name in names():
            print(f"{name:18s} {_first_comment(name, PRESETS)}")
        return 0
    try:
        diff = apply(args.name, args.params, dry_run=args.dry_run)
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    for key, old, new in diff:
        print(f"{key}: {old!r} -> {new!r}")
    verb = "would change" if args.dry_run else "changed"
    print(f"{args.params}: preset '{args.name}' {verb} {len(diff)} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
