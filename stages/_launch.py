"""How a DDP stage (train, evaluate) starts its `train.nproc` workers: torchrun's elastic launcher,
`--standalone`, from the stage process itself.

The stage process checks the params and inputs once, then calls `launch_workers`; each worker runs
the same `python -m stages.<stage>` with RANK set (`launched()`), so a user error ends with one line
naming the param, not a torchrun `ChildFailedError` report per rank. Under an outer torchrun / SLURM
launch the stage runs as one worker. Not in stages/_entry.py: every stage runs that file, and a
change here should re-run only the stages that launch workers.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

from eva.utils.dist import worker_slot
from stages._entry import USER_ERROR_DIR, USER_ERROR_EXIT


def launched() -> bool:
    """Whether this process is a worker of a launch (ours, torchrun's or srun's), not the stage itself."""
    return "RANK" in os.environ or worker_slot().world_size > 1


def launch_workers(stage: str, nproc: int) -> None:
    """Run `python -m stages.<stage>` in `nproc` DDP workers (torchrun --standalone); exit as they did.

    A worker that stops on a user error writes its message to a report folder and exits
    USER_ERROR_EXIT; this process then prints the lowest failing rank's message as the one line and
    exits with the same status. (Rank 0 cannot be relied on to print it: once one worker fails, the
    agent stops the others with a signal.) Any other failure is summarised in one line; the
    worker's traceback is above it.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log = logging.getLogger(f"eva.stages.{stage}")
    # The elastic agent reports every failed worker at length; the workers speak for themselves.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"eva-{stage}-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    with tempfile.TemporaryDirectory(prefix=f"eva-{stage}-errors-") as report_dir:
        os.environ[USER_ERROR_DIR] = report_dir  # the workers inherit it (see stages/_entry.py)
        try:
            elastic_launch(config, entrypoint=sys.executable)("-m", f"stages.{stage}")
        except ChildFailedError as err:
            codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
            reports = sorted(Path(report_dir).glob("rank*.txt"), key=lambda f: int(f.stem[4:]))
            # The agent stops the other workers with a signal (negative code) once one has failed.
            if reports and all(code == USER_ERROR_EXIT or code < 0 for code in codes.values()):
                log.error("%s stage: %s", stage, reports[0].read_text(encoding="utf-8"))
                sys.exit(USER_ERROR_EXIT)
            log.error("%s stage: worker rank(s) %s failed with exit code(s) %s", stage, sorted(codes), codes)
            sys.exit(1)
        finally:
            del os.environ[USER_ERROR_DIR]
