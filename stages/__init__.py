"""Thin DVC stage entry points: `python -m stages.<name>` from the repository root.

Importing the package, before any stage module loads huggingface_hub, makes the run offline unless
the user says otherwise (`HF_HUB_OFFLINE=0`): a missing weight fails at once, naming its param key
and `python -m eva.weights fetch`, instead of a minute of hub retries. torch's numerics (a fixed
thread count, `eva.utils.numerics`) are applied in `run_stage`, which every stage's `main` goes
through; the package itself does not import torch, so the extract stage and its decode workers,
which re-import the stage's module, stay free of it.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
