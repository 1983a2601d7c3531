"""The grade (minor / moderate / severe) as the product gives it: accuracy, confusion, per source, and how much of
the damaged photos it grades at each confidence threshold (the build's grade threshold comes from here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.results import GRADES
from train.common import list_images, source_of
from train.evaluate.metrics import accuracy_by
from train.evaluate.product import grades

CONFIDENCE_SWEEP = tuple(round(t, 2) for t in np.arange(0.34, 0.96, 0.02))
MIN_GRADE_COVERAGE = 0.85  # the grade is given for at least this share of damaged photos


def coverage_sweep(y_true: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> list[dict]:
    """The grade given only when its probability >= t: share of photos graded and accuracy on them, per t."""
    correct = predicted == y_true
    return [
        {"confidence": t, "coverage": float((confidence >= t).mean()),
         "accuracy": float(correct[confidence >= t].mean()) if (confidence >= t).any() else None}
        for t in CONFIDENCE_SWEEP
    ]  # fmt: skip


def graded_when_found(
    correct: np.ndarray, confidence: np.ndarray, p_damaged: np.ndarray, damage_threshold: float, grade_threshold: float
) -> dict:
    """A one-pass model grades only the photos it finds damaged (P(damaged) >= the damage threshold)."""
    found = p_damaged >= damage_threshold
    graded = found & (confidence >= grade_threshold)
    return {
        "damage_found": float(found.mean()),
        "graded_when_damage_found": float(graded.mean()),
        "accuracy_graded_when_damage_found": float(correct[graded].mean()) if graded.any() else None,
    }


def evaluate_severity(model: str | Path, data: str | Path, damage_threshold: float = 0.5) -> dict:
    """Grade accuracy, confusion and coverage on ``data/{minor,moderate,severe}/`` (source-tagged photos), the
    grades being the product's (a graded damage model's one pass, or a severity model).

    The grade confidence threshold is the highest that still grades MIN_GRADE_COVERAGE of the photos: chosen
    from the scores alone (no labels), so the accuracy at it is no optimistic pick. For a damage model, also the
    grades of the photos it finds damaged (P(damaged) >= ``damage_threshold``).
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    every_path = [p for grade in GRADES if (Path(data) / grade).is_dir() for p in list_images(Path(data) / grade)]
    kept, given, p_damaged = grades(model, every_path)
    if not kept:
        raise ValueError(f"no photo the product reads under {data}/{{minor,moderate,severe}}/")
    if any(grade is None for grade in given):
        raise ValueError(f"{model}: the product reads no minor / moderate / severe grade from this model")
    paths = [every_path[i] for i in kept]
    y_true = np.asarray([GRADES.index(p.parent.name) for p in paths])
    predicted = np.asarray([GRADES.index(g.label) for g in given])
    confidence = np.asarray([g.score for g in given])
    sweep = coverage_sweep(y_true, predicted, confidence)
    chosen = max((r for r in sweep if r["coverage"] >= MIN_GRADE_COVERAGE), key=lambda r: r["confidence"])
    metrics = {
        "task": "severity", "model": str(model), "data": str(data), "n": len(paths), "labels": list(GRADES),
        "refused": len(every_path) - len(paths),
        "accuracy": float((predicted == y_true).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=[0, 1, 2]).tolist(),
        "per_source": accuracy_by(np.asarray([source_of(p) for p in paths]), predicted == y_true),
        "grade_confidence_threshold": chosen["confidence"],
        "coverage_at_threshold": chosen["coverage"],
        "accuracy_at_threshold": chosen["accuracy"],
        "coverage_sweep": sweep,
    }  # fmt: skip
    if p_damaged is not None:
        correct = predicted == y_true
        metrics |= graded_when_found(correct, confidence, p_damaged, damage_threshold, chosen["confidence"])
    return metrics
