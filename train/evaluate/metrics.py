"""The figures every evaluation shares: binary and multiclass metrics, threshold sweeps, accuracy per group (source,
kind, grade) and set F1. Pure NumPy / scikit-learn on scores and labels: no model is run here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.results import GRADES  # the grades the product gives
from train.common import source_of

# Finer at the low end: summed-class scores (P(car) over ImageNet car classes) are often small.
SWEEP = (0.005, 0.01, 0.02, 0.03, *(round(t, 2) for t in np.arange(0.05, 0.96, 0.05)))


def binary_metrics(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict:
    """Metrics of ``score >= threshold`` as the positive (1) prediction, plus ROC-AUC and a threshold sweep."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

    y_true, scores = np.asarray(y_true, dtype=int), np.asarray(scores, dtype=float)
    y_pred = (scores >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    metrics = {
        "n": len(y_true),
        "threshold": float(threshold),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if both else _recall(y_true, y_pred),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, scores)) if both else None,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
    }
    metrics["threshold_sweep"] = [_at_threshold(y_true, scores, t) for t in SWEEP]
    return metrics


def _recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """With one class present, balanced accuracy is that class's recall."""
    return float((y_pred == y_true).mean()) if len(y_true) else float("nan")


def _at_threshold(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    y_pred = scores >= threshold
    positives, negatives = y_true == 1, y_true == 0
    tpr = float(y_pred[positives].mean()) if positives.any() else None
    tnr = float((~y_pred[negatives]).mean()) if negatives.any() else None
    rates = [r for r in (tpr, tnr) if r is not None]
    return {"threshold": threshold, "tpr": tpr, "tnr": tnr, "balanced_accuracy": float(np.mean(rates))}


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """From a (N, C) probability matrix: binary metrics for C == 2 (class 1 positive), else multiclass."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        return binary_metrics(y_true, probabilities[:, 1], threshold)
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    y_true, y_pred = np.asarray(y_true, dtype=int), probabilities.argmax(axis=1)
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(probabilities.shape[1])).tolist(),
    }


def target_metrics(targets: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> dict:
    """Metrics from multi-hot targets (several 1s: "one of these labels") and a (N, C) probability matrix.

    Photos with one known label give the usual metrics. With a ``whole`` label among graded ones (whole, minor,
    moderate, severe) also the damage check (P(damaged) = 1 - P(whole), every photo) and the grade of the graded
    damaged photos (argmax over the grades). ``selection_score`` chooses checkpoints: the balanced accuracy, or for
    such a model the mean of the damage check's and the grades' balanced accuracies. Training reads it on the
    Trainer's logits (checkpoint choice, not a figure a user gets).
    """
    targets, probabilities = np.asarray(targets) > 0, np.asarray(probabilities, dtype=float)
    known = targets.sum(axis=1) == 1
    metrics = classification_metrics(targets[known].argmax(axis=1), probabilities[known])
    metrics["selection_score"] = metrics["balanced_accuracy"]
    grades = [i for i, label in enumerate(labels) if label in GRADES]
    if "whole" not in labels or not grades:
        return metrics
    whole = list(labels).index("whole")
    damage = binary_metrics((~targets[:, whole]).astype(int), 1 - probabilities[:, whole])
    graded = known & np.isin(targets.argmax(axis=1), grades)
    grade = classification_metrics(
        targets[graded][:, grades].argmax(axis=1), probabilities[graded][:, grades], threshold=0.5
    )
    metrics.update(
        damage_balanced_accuracy=damage["balanced_accuracy"],
        damage_roc_auc=damage["roc_auc"],
        grade_accuracy=grade["accuracy"],
        grade_balanced_accuracy=grade["balanced_accuracy"],
        selection_score=float(np.mean([damage["balanced_accuracy"], grade["balanced_accuracy"]])),
    )
    return metrics


def best_threshold(metrics: dict, key: str = "balanced_accuracy") -> float:
    """The sweep's threshold with the highest ``key`` (ties: the one nearest 0.5)."""
    sweep = metrics["threshold_sweep"]
    return max(sweep, key=lambda r: (r[key], -abs(r["threshold"] - 0.5)))["threshold"]


def accuracy_by(keys: np.ndarray, correct: np.ndarray) -> dict[str, dict]:
    """n and accuracy of each group of ``keys`` (sorted)."""
    keys, correct = np.asarray(keys), np.asarray(correct, dtype=bool)
    return {k: {"n": int((keys == k).sum()), "accuracy": float(correct[keys == k].mean())} for k in sorted(set(keys))}


def per_source(paths: Sequence[Path], y_true: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """Accuracy of each (source, label) group: where a classifier fails, and whether by source."""
    sides = ["positive" if y else "negative" for y in y_true]
    keys = [f"{source_of(p) or 'untagged'}/{side}" for p, side in zip(paths, sides, strict=True)]
    correct = (np.asarray(scores, dtype=float) >= threshold) == np.asarray(y_true, dtype=bool)
    return accuracy_by(np.asarray(keys), correct)


def source_balanced_accuracy(
    paths: Sequence[Path], y_true: Sequence[int], scores: Sequence[float], threshold: float
) -> float:
    """Balanced accuracy where each (source, class) group weighs the same within its class.

    A big seen source (e.g. 150 whole-cars-extra crops) cannot drown a small unseen one (18 ImageNet cars).
    """
    groups = per_source(paths, y_true, scores, threshold)
    by_class = [
        [g["accuracy"] for k, g in groups.items() if k.endswith(f"/{side}")] for side in ("positive", "negative")
    ]
    return float(np.mean([np.mean(c) for c in by_class if c]))


def set_f1(truth: Sequence[set], predicted: Sequence[set]) -> dict:
    """Micro precision / recall / F1 over (photo, group) pairs, and per group."""
    groups = sorted(set().union(*truth, *predicted)) if truth else []
    per_group = {}
    for group in [None, *groups]:
        tp = sum(len((t & p) if group is None else (t & p & {group})) for t, p in zip(truth, predicted, strict=True))
        n_pred = sum(len(p if group is None else p & {group}) for p in predicted)
        n_true = sum(len(t if group is None else t & {group}) for t in truth)
        precision, recall = tp / n_pred if n_pred else 0.0, tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_group[group or "all"] = {"precision": precision, "recall": recall, "f1": f1, "n_true": n_true}
    return per_group
