"""Training: what a run is given (`eva.train.config`), its optimiser (`eva.train.optim`), the
warmup-cosine schedule (the demo's pretraining uses it too), the DDP loop in named phases
(`eva.train.loop`) and resume checkpoints (inputs: `eva.data.clips`)."""
