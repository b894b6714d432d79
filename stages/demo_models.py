"""Stage `demo_models`: tiny random-initialised CLIP encoder, CLIP backbone and BLIP captioner -> models/tiny.

Saved with the libraries' own savers and read back by the same loaders as real weights, so the
demo runs the real code path offline. Their outputs (labels, captions, accuracy) mean nothing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from eva.attributes.label import read_vocabulary
from eva.models.tiny import mark_random_weights, save_tiny_captioner, save_tiny_open_clip
from eva.params import load_params, param
from eva.utils.log import setup_logging

log = logging.getLogger("eva.stages.demo_models")

README = """# Demo models: random weights

Written by the `demo_models` stage (`params.yaml: demo_models`) so the pipeline runs offline.

- `clip/`: tiny open_clip ViT (random init), the attribute encoder (`attributes.clip.model: local-dir:{out}/clip`)
- `backbone/`: another tiny open_clip ViT (other seed), the video backbone (`model.backbone.name`)
- `captioner/`: tiny BLIP captioner + processor (random init, BERT WordPiece vocabulary built from the
  object list), loaded through `transformers.AutoProcessor` / `AutoModelForImageTextToText`
  exactly like `Salesforce/blip-image-captioning-base` (`attributes.captioner`)

These are **random weights**. Their outputs — object labels, captions, features, and the accuracy
of models trained on them — are meaningless; they only show that the machinery works. Set the
params above to real hub names or checkpoints for real results.
"""


def main() -> None:
    setup_logging()
    params = load_params()
    seed = int(param(params, "demo_models.seed"))
    out = Path(param(params, "demo_models.out"))
    vocabulary = read_vocabulary(param(params, "attributes.label.vocabulary"))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then swap it in: a half-written model folder never looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, model_seed in (("clip", seed), ("backbone", seed + 1)):
            save_tiny_open_clip(tmp / name, seed=model_seed)
            mark_random_weights(tmp / name)
        save_tiny_captioner(tmp / "captioner", vocabulary, seed=seed + 2)
        (tmp / "README.md").write_text(README.format(out=out.as_posix()), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; models are shared artifacts
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("demo_models: wrote %s (%.1f MB of random weights)", out, size / 1e6)


if __name__ == "__main__":
    main()
