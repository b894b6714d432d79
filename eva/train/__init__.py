"""Training: the warmup-cosine schedule (the demo's pretraining uses it too), the DDP loop
(`eva.train.loop`) and resume checkpoints (inputs: `eva.data.clips`)."""
