"""A classifier as the product's car check or damage check, on a labeled folder: accuracy, balanced accuracy,
ROC-AUC, the threshold sweep (overall and source-balanced), accuracy per source and the misclassified files."""

from __future__ import annotations

from pathlib import Path

from train.common import list_images
from train.evaluate.metrics import best_threshold, binary_metrics, per_source, source_balanced_accuracy
from train.evaluate.product import check_scores


def labeled_images(root: Path, positive_label: str | None, negative_label: str | None = None) -> tuple[list, list]:
    """Images under ``root/<label>/``: 1 for the positive label's folder, 0 for every other folder; or, with
    ``negative_label``, 0 for that folder and 1 for every other (whole vs minor/moderate/severe/damaged)."""
    paths, labels = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for path in list_images(folder):
            paths.append(path)
            labels.append(int(folder.name != negative_label if negative_label else folder.name == positive_label))
    if not paths:
        raise ValueError(f"no images under {root}/<label>/")
    return paths, labels


def evaluate_classifier(
    model: str | Path, data: str | Path, role: str = "damage", positive_label: str | None = None, threshold: float = 0.5
) -> dict:
    """The product's score (``role`` car: P(car); damage: P(damaged)) of every photo under ``data/<label>/``."""
    negative_label = "whole" if role == "damage" and not positive_label and (Path(data) / "whole").is_dir() else None
    positive_label = positive_label or ("car" if role == "car" else "damaged")
    every_path, every_label = labeled_images(Path(data), positive_label, negative_label)
    kept, scores = check_scores(model, every_path, role)
    paths, y_true = [every_path[i] for i in kept], [every_label[i] for i in kept]
    metrics = binary_metrics(y_true, scores, threshold)
    metrics["best_threshold"] = best_threshold(metrics)
    metrics["per_source"] = per_source(paths, y_true, scores, threshold)
    metrics["source_balanced_accuracy"] = source_balanced_accuracy(paths, y_true, scores, threshold)
    for row in metrics["threshold_sweep"]:
        row["source_balanced_accuracy"] = source_balanced_accuracy(paths, y_true, scores, row["threshold"])
    metrics["best_threshold_source_balanced"] = best_threshold(metrics, "source_balanced_accuracy")
    metrics["errors"] = [
        {"path": str(p), "label": y, "score": round(float(s), 4)}
        for p, y, s in zip(paths, y_true, scores, strict=True)
        if (s >= threshold) != bool(y)
    ]
    metrics["scores"] = [[str(p), y, round(float(s), 5)] for p, y, s in zip(paths, y_true, scores, strict=True)]
    metrics["refused"] = len(every_path) - len(paths)  # photos the product does not read (see product.py)
    metrics.update({"task": "classifier", "role": role, "model": str(model), "data": str(data)})
    return metrics
