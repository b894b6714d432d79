"""Which DVC experiments still describe the pipeline: those that ran on the workspace's inputs.

`make results` keeps an experiment only while every file and folder it depended on (code, data,
pretrained models) has the hash it has in the workspace now. Matching by name alone kept runs on
older pretrained models in the table beside new ones (seen: a new CLIP, 30 old runs kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eva.config import SIDE_FILES

# The check stage's own inputs. What reaches a stage from them is in the stage's code listing
# (data/code/<stage>.sha256, compared) and its params: an edit that no stage runs, or a recipe of
# another method, leaves every run current.
CHECK_INPUTS = frozenset({"eva", "stages", *SIDE_FILES})
CODE_LISTINGS = "data/code/"


def dependency_hashes(state: Mapping[str, Any]) -> dict[str, Any]:
    """`path -> hash` of what a `dvc exp show --json` row's pipeline ran on: its dependencies, less
    those it made itself (`evaluate` depends on the model `train` wrote, which is each run's own) but
    with the code listings `check` writes, and less the check stage's own inputs."""
    data = state.get("data") or {}
    made = {path for path in data.get("outs") or {} if not path.startswith(CODE_LISTINGS)}
    return {
        path: (dep or {}).get("hash")
        for path, dep in (data.get("deps") or {}).items()
        if path not in made and path not in CHECK_INPUTS
    }


def current_experiments(states: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`dvc exp show --json` output cut down to the experiments that ran on the workspace's inputs.

    Every baseline row stays (with no experiments but the current ones); of current experiments that
    share a name (one per commit they were run on), only the newest is kept.
    """
    workspace = next((s for s in states if s.get("rev") == "workspace"), None)
    if workspace is None:
        raise ValueError("`dvc exp show --json` output without its workspace row")
    now = dependency_hashes(workspace)
    newest: dict[str, tuple[str, int]] = {}  # name -> (timestamp, id of its group)
    for state in states:
        for group in state.get("experiments") or []:
            final = (group.get("revs") or [{}])[0]
            if dependency_hashes(final) == now:
                stamp = str((final.get("data") or {}).get("timestamp") or "")
                name = group.get("name") or final.get("name") or ""
                if stamp >= newest.get(name, ("", 0))[0]:
                    newest[name] = (stamp, id(group))
    keep = {group_id for _, group_id in newest.values()}
    return [
        {**state, "experiments": [g for g in state.get("experiments") or [] if id(g) in keep]}
        for state in states
    ]
