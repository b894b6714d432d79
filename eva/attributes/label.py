"""Object label of a keyframe by CLIP zero-shot classification over a fixed object vocabulary.

The vocabulary's prompts are encoded once per run, at every text layer: the last layer scores the
keyframes, and the chosen object's per-layer tensor IS its `label` attribute, so labelling costs no
text forward at all after start-up. Only the image, never the action class, decides the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from eva.attributes.encode import HierarchicalEncoder

PROMPT = "This is a photo of a {}."


def read_vocabulary(path: str | Path, *, param: str = "attributes.label.vocabulary") -> list[str]:
    """One object noun per line; blank lines and `#` comments ignored, duplicates rejected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Object vocabulary '{path}' does not exist; set `{param}` to a text file")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w and not w.startswith("#")]
    if not words:
        raise ValueError(f"Object vocabulary '{path}' (`{param}`) is empty")
    seen = {w for w in words if words.count(w) > 1}
    if seen:
        raise ValueError(f"Object vocabulary '{path}' (`{param}`) repeats {sorted(seen)}")
    return words


@dataclass
class LabelResult:
    index: torch.Tensor  # long [B], vocabulary index
    score: torch.Tensor  # float [B], softmax probability of the chosen object
    texts: list[str]  # the chosen objects
    boxes: torch.Tensor | None = None  # float [B, 4] pixel x0, y0, x1, y1 of the top box (detector only)


class ZeroShotLabeler:
    def __init__(self, encoder: HierarchicalEncoder, vocabulary: list[str], batch_size: int = 256) -> None:
        self.vocabulary = vocabulary
        self.prompts = [PROMPT.format(w) for w in vocabulary]
        chunks = [
            encoder.encode_texts(self.prompts[i : i + batch_size])
            for i in range(0, len(self.prompts), batch_size)
        ]
        self.layers = torch.cat(chunks)  # [V, Lt, D], per-layer prompt embeddings
        self.classifier = F.normalize(self.layers[:, -1], dim=-1)  # [V, D] == normalised encode_text
        self.logit_scale = encoder.logit_scale

    def classify(self, image_features: torch.Tensor) -> LabelResult:
        """Final-layer image features `[B, D]` (encode_image) -> most likely object per image."""
        logits = self.logit_scale * F.normalize(image_features.float(), dim=-1) @ self.classifier.T  # [B, V]
        probs = logits.softmax(dim=-1)
        score, index = probs.max(dim=-1)
        return LabelResult(index=index, score=score, texts=[self.vocabulary[i] for i in index.tolist()])
