"""The pinned numerics: a fixed thread count, and each library's own CPU dispatch left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eva.utils.numerics import pinned_threads

REPO = Path(__file__).resolve().parents[1]


def test_the_thread_count_is_pinned_not_taken_from_the_machine() -> None:
    assert pinned_threads({}) == 2
    assert pinned_threads({"EVA_NUM_THREADS": "4", "OMP_NUM_THREADS": "1"}) == 4
    with pytest.raises(ValueError, match="EVA_NUM_THREADS must be an integer >= 1"):
        pinned_threads({"EVA_NUM_THREADS": "0"})


def test_a_stage_process_fixes_the_threads_and_leaves_the_isa_dispatch_alone() -> None:
    """`run_stage`, which every stage's main goes through, fixes torch's thread count; no ISA cap is set
    (each cost 1.2-2.8x on the demo's steps and bought no identity across CPU models: docs/reproducibility.md)."""
    code = (
        "import os, stages, sys; from stages._entry import run_stage; assert 'torch' not in sys.modules; "
        "import torch; "
        "run_stage('x', lambda: print(torch.get_num_threads(), torch.backends.mkldnn.enabled, "
        "os.environ.get('MKL_CBWR', '-'), os.environ.get('ATEN_CPU_CAPABILITY', '-')))"
    )
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "True", "-", "-"]


@pytest.mark.parametrize("stage", ["pretrain", "train"])
def test_waiting_threads_sleep_beside_a_loader_worker_unless_the_caller_says_otherwise(stage: str) -> None:
    """dvc.yaml's pretrain and train commands set OMP_WAIT_POLICY=PASSIVE (a scheduling choice: same
    bytes, measured in docs/performance.md) and keep a value the caller exported."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:  # the command as DVC resolves it (`\${` is DVC's escape for a shell `${`)
        cmd = next(s.cmd for s in repo.index.stages if s.name == stage)
    assert cmd.endswith(f"python -m stages.{stage}")
    probe = cmd.replace(
        f"python -m stages.{stage}", "python3 -c 'import os; print(os.environ[\"OMP_WAIT_POLICY\"])'"
    )
    for exported, seen in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        env = {"PATH": "/usr/bin:/bin"} | ({} if exported is None else {"OMP_WAIT_POLICY": exported})
        out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == seen
