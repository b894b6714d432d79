"""requirements.lock pins every distribution installed, so a fresh install gets exactly what CI tested."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
PROJECT = "eva"
# What `python -m venv` itself brings, which `pip freeze` leaves out too: the installer is not a
# dependency, and a 3.11 venv's own setuptools is never upgraded because nothing there needs it.
BOOTSTRAP = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    """PEP 503 name: `Flufl.Lock` and `flufl-lock` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """Canonical name -> pinned version, for the lines whose environment marker holds here."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # one exact pin per line
        assert spec.operator == "==", f"{path.name}:{number} is not an exact pin: {raw!r}"
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonical(requirement.name)] = spec.version
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_every_installed_distribution_is_pinned_at_its_installed_version() -> None:
    pins = read_lock()
    present = {name: v for name, v in installed().items() if name not in BOOTSTRAP | {PROJECT}}
    missing = sorted(f"{name}=={v}" for name, v in present.items() if name not in pins)
    assert not missing, f"installed but not in requirements.lock (run `make lock`): {missing}"
    differ = sorted(
        f"{name}: installed {v}, locked {pins[name]}" for name, v in present.items() if pins[name] != v
    )
    assert not differ, f"installed versions differ from requirements.lock: {differ}"


def test_the_packages_that_matter_most_are_pinned() -> None:
    """The ones the old lock left out, so every install took whatever was newest that day."""
    pins = read_lock()
    for name in (
        "torch",
        "torchvision",
        "open-clip-torch",
        "transformers",
        "dvc",
        "dvclive",
        "timm",
        "tokenizers",
    ):
        assert name in pins, name


def test_lock_markers_select_per_python_version(tmp_path: Path) -> None:
    """A pin that differs by Python version is written twice with markers; only the one for us counts."""
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# header\n"
        'numpy==2.4.6 ; python_version < "3.13"\n'
        'numpy==9.9.9 ; python_version >= "3.13"\n'
        "Flufl.Lock==9.2.0  # comment\n"
    )
    expected = "9.9.9" if sys.version_info >= (3, 13) else "2.4.6"
    assert read_lock(lock) == {"numpy": expected, "flufl-lock": "9.2.0"}
