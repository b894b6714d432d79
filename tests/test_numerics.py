"""The pinned numerics: each library's ISA cap set before it loads, and a fixed thread count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eva.utils.numerics import PINNED_ISA, cpu_flags, pin_cpu_isa, pinned_threads

REPO = Path(__file__).resolve().parents[1]


def test_the_pin_fills_unset_variables_and_keeps_the_users() -> None:
    env = {"MKL_CBWR": "AUTO"}
    pinned = pin_cpu_isa(env, flags={"avx2", "fma", "sse2"})
    assert pinned == env
    assert env["MKL_CBWR"] == "AUTO"  # the user's choice wins
    assert {k: v for k, v in env.items() if k != "MKL_CBWR"} == {
        k: v for k, v in PINNED_ISA.items() if k != "MKL_CBWR"
    }


def test_a_cpu_without_avx2_keeps_its_own_code_paths() -> None:
    env: dict[str, str] = {}
    assert pin_cpu_isa(env, flags={"sse2", "sse4_2"}) == {} and env == {}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t: none\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_the_thread_count_is_pinned_not_taken_from_the_machine() -> None:
    assert pinned_threads({}) == 2
    assert pinned_threads({"EVA_NUM_THREADS": "4", "OMP_NUM_THREADS": "1"}) == 4
    with pytest.raises(ValueError, match="EVA_NUM_THREADS must be an integer >= 1"):
        pinned_threads({"EVA_NUM_THREADS": "0"})


def test_a_stage_process_runs_the_pinned_numerics() -> None:
    """Importing `stages` (what `python -m stages.x` does first) pins the ISA before torch loads;
    `run_stage`, which every stage's main goes through, applies torch's settings."""
    code = (
        "import os, stages, sys; from stages._entry import run_stage; assert 'torch' not in sys.modules; "
        "import torch; "
        "run_stage('x', lambda: print(torch.get_num_threads(), torch.backends.mkldnn.enabled, "
        "os.environ.get('MKL_CBWR'), torch.backends.cpu.get_cpu_capability()))"
    )
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    threads, mkldnn, cbwr, capability = out.stdout.split()
    assert (threads, mkldnn) == ("2", "False")
    if {"avx2", "fma"} <= cpu_flags():
        assert (cbwr, capability) == ("COMPATIBLE", "AVX2")
