"""The whole pipeline's three verdicts (not a car, whole, damaged) on labeled folders, through
``pipeline.analyze_batch`` with a profile: the car check, the damage check on cars and the 3-way verdict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline import Analysis, load_profile
from train.common import list_images, offline_env
from train.evaluate.metrics import binary_metrics
from train.evaluate.product import analyses

VERDICTS = ("not_car", "whole", "damaged")


def verdict_of(analysis: Analysis) -> str:
    return "not_car" if not analysis.is_car else "damaged" if analysis.is_damaged else "whole"


def evaluate_pipeline(profile: str | Path, data: str | Path) -> dict:
    """The three verdicts on folders ``not_car/``, ``whole/``, ``damaged/`` (any may be missing)."""
    offline_env()
    paths, truth = [], []
    for verdict in VERDICTS:
        folder = Path(data) / verdict
        for path in list_images(folder) if folder.is_dir() else []:
            paths.append(path)
            truth.append(verdict)
    found = [(i, verdict_of(analysis)) for i, analysis in analyses(paths, load_profile(profile))]
    metrics = verdict_metrics([truth[i] for i, _ in found], [verdict for _, verdict in found])
    refused = len(paths) - len(found)
    return {"task": "pipeline", "profile": str(profile), "data": str(data), "refused": refused} | metrics


def verdict_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Car check (car vs not_car), damage check (on true cars) and the 3-way verdict."""
    from sklearn.metrics import confusion_matrix

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    is_car_true, is_car_pred = truth != "not_car", predicted != "not_car"
    cars = is_car_true
    car = binary_metrics(is_car_true.astype(int), is_car_pred.astype(float))
    damage = binary_metrics((truth[cars] == "damaged").astype(int), (predicted[cars] == "damaged").astype(float))
    return {
        "n": len(truth),
        "car_check": {k: car[k] for k in ("n", "accuracy", "balanced_accuracy", "confusion_matrix")},
        "damage_check_on_cars": {k: damage[k] for k in ("n", "accuracy", "balanced_accuracy", "confusion_matrix")},
        "verdict_accuracy": float((truth == predicted).mean()) if len(truth) else float("nan"),
        "verdict_confusion_matrix": {
            "labels": list(VERDICTS),
            "matrix": confusion_matrix(truth, predicted, labels=list(VERDICTS)).tolist(),
        },
    }
