"""Classification metrics over video-level scores (views already averaged)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from eva.utils.io import atomic_path

TOP5_MIN_CLASSES = 6  # with 5 classes or fewer every video is a top-5 hit: the number says nothing
TOP5_ABSENT_REASON = "top-5 is not reported with 5 classes or fewer (it would always be 100%)"


@dataclass(frozen=True)
class ClassificationReport:
    top1: float
    top5: float | None  # None with fewer than TOP5_MIN_CLASSES classes
    mean_class_accuracy: float
    per_class_accuracy: list[float | None]  # None for classes absent from the evaluated split
    per_class_support: list[int]
    confusion: torch.Tensor  # int64 [C, C], rows = actual, columns = predicted

    def as_dict(self) -> dict[str, float]:
        """The scalar metrics; `top5` is absent when it cannot miss (see TOP5_ABSENT_REASON)."""
        metrics = {"top1": self.top1}
        if self.top5 is not None:
            metrics["top5"] = self.top5
        metrics["mean_class_accuracy"] = self.mean_class_accuracy
        return metrics


def classification_report(scores: torch.Tensor, labels: torch.Tensor) -> ClassificationReport:
    """Top-1/top-5, mean class accuracy (classes present in `labels`) and the confusion matrix.

    `scores`: float [N, C] (probabilities or logits), `labels`: int [N].
    """
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be [N, C] and labels [N]; got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    num_classes = scores.shape[1]
    if len(labels) == 0:
        raise ValueError("no evaluated videos: the validation split is empty")
    topk = scores.topk(min(5, num_classes), dim=1).indices  # [N, k]
    hit_top1 = topk[:, 0] == labels
    top5 = (
        float((topk == labels[:, None]).any(dim=1).float().mean())
        if num_classes >= TOP5_MIN_CLASSES
        else None
    )
    predicted = topk[:, 0]
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    support = confusion.sum(dim=1)
    correct = confusion.diagonal()
    per_class: list[float | None] = [
        (float(c) / float(s)) if s > 0 else None
        for c, s in zip(correct.tolist(), support.tolist(), strict=True)
    ]
    present = [a for a in per_class if a is not None]
    return ClassificationReport(
        top1=float(hit_top1.float().mean()),
        top5=top5,
        mean_class_accuracy=sum(present) / len(present),
        per_class_accuracy=per_class,
        per_class_support=support.tolist(),
        confusion=confusion,
    )


def write_per_class_csv(path: str | Path, report: ClassificationReport, classes: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class_id", "class_name", "support", "correct", "accuracy"])
        for i, name in enumerate(classes):
            acc = report.per_class_accuracy[i]
            writer.writerow(
                [
                    i,
                    name,
                    report.per_class_support[i],
                    int(report.confusion[i, i]),
                    "" if acc is None else f"{acc:.6f}",
                ]
            )


def confusion_records(
    labels: torch.Tensor, predicted: torch.Tensor, classes: list[str]
) -> list[dict[str, str]]:
    """One {actual, predicted} record per video: the data shape of DVC's `confusion` template."""
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(labels.tolist(), predicted.tolist(), strict=True)
    ]
