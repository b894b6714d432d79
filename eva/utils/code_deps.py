"""The source files a pipeline stage runs, found from its imports, as one small file DVC can depend on.

A stage's code dependencies are the transitive closure of its module's imports inside the project's
packages (`eva`, `stages`), found statically: every `import` statement anywhere in a module counts
(inside functions, under `TYPE_CHECKING`), with the packages' `__init__.py` files that importing a
submodule runs. The project imports nothing dynamically, so the closure holds every file a stage can
execute; listing more (a type-only import) re-runs a stage at worst, never skips one.

The `check` stage writes one listing per stage, `data/code/<stage>.sha256` (`sha256sum` format), and
each stage depends on its listing instead of on a hand-kept list of files: a stage re-runs exactly
when a file it runs changes, `git diff data/code/` says which, and `dvc exp show` carries one column
per stage instead of one per source file.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGES = ("eva", "stages")
ROOT = Path(__file__).resolve().parents[2]  # the folder holding eva/ and stages/


def _module_file(root: Path, module: str) -> Path | None:
    """`eva.data.shards` -> eva/data/shards.py (or the package's __init__.py); None outside the project."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """A module and the packages above it: importing `eva.data.shards` runs eva/ and eva/data/ too."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported_modules(path: Path, module: str, is_package: bool) -> list[str]:
    """Every module name an `import` or `from ... import` in `path` can load (a `from` name may be a
    submodule; which of them are files is decided by the caller)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def import_closure(module: str, root: str | Path = ROOT) -> list[Path]:
    """The project files (relative to `root`, sorted) that running `module` can import."""
    root = Path(root)
    seen: set[Path] = set()
    pending = _with_parents(module)
    while pending:
        name = pending.pop()
        path = _module_file(root, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for imported in _imported_modules(path, name, path.name == "__init__.py"):
            pending.extend(_with_parents(imported))
    if not seen:
        raise ValueError(f"`{module}` is not a module of this project ({', '.join(PACKAGES)}) under {root}")
    return sorted(p.relative_to(root) for p in seen)


def listing(module: str, root: str | Path = ROOT) -> str:
    """`sha256sum`-style lines, one per file of the module's import closure."""
    root = Path(root)
    return "".join(
        f"{hashlib.sha256((root / path).read_bytes()).hexdigest()}  {path.as_posix()}\n"
        for path in import_closure(module, root)
    )
