"""Measure a classifier, a segmenter or the whole pipeline; write metrics JSON and a markdown model card.

    # a classifier on a labeled folder (<data>/<label>/**); the positive label's folder vs all others
    python -m train.evaluate --task classifier --model models/offline/damage-classifier \
        --data /tmp/damage/val --role damage --output_dir models/offline/eval-damage
    # the ImageNet model as the car check (P(car) = sum of the car classes), folders car/ and not_car/
    python -m train.evaluate --task classifier --model ../shared/models/imagenet-efficientnet-lite0 \
        --data /tmp/car-check --role car --threshold 0.1
    # a segmenter against YOLO (data yaml) or COCO (json) ground truth
    python -m train.evaluate --task segmenter --model models/offline/segmenter/best.pt --data /tmp/seg/data.yaml
    # does the segmenter's evidence help the damage check? (classifier, segmenter, combinations)
    python -m train.evaluate --task combine --model models/offline/damage-classifier \
        --segmenter models/offline/segmenter/best.pt --data models/offline/work/damage/val --imgsz 512
    # the whole pipeline on folders not_car/, whole/, damaged/
    python -m train.evaluate --task pipeline --model models/offline/profile.toml --data /tmp/verdicts
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.common import list_images, offline_env, open_rgb, source_of

GRADES = ("minor", "moderate", "severe")

# Finer at the low end: summed-class scores (P(car) over ImageNet car classes) are often small.
SWEEP = (0.005, 0.01, 0.02, 0.03, *(round(t, 2) for t in np.arange(0.05, 0.96, 0.05)))


# --- classification metrics ----------------------------------------------------------------------


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
    such a model the mean of the damage check's and the grades' balanced accuracies.
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


def best_threshold(metrics: dict) -> float:
    """The sweep's threshold with the highest balanced accuracy (ties: the one nearest 0.5)."""
    sweep = metrics["threshold_sweep"]
    return max(sweep, key=lambda r: (r["balanced_accuracy"], -abs(r["threshold"] - 0.5)))["threshold"]


def per_source(paths: Sequence[Path], y_true: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """Accuracy of each (source, label) group: where a classifier fails, and whether by source."""
    groups: dict[str, list[bool]] = {}
    for path, y, s in zip(paths, y_true, scores, strict=True):
        key = f"{source_of(path) or 'untagged'}/{'positive' if y else 'negative'}"
        groups.setdefault(key, []).append(bool((s >= threshold) == bool(y)))
    return {k: {"n": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(groups.items())}


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


# --- classifiers ---------------------------------------------------------------------------------


def positive_ids(id2label: dict[int, str], role: str) -> list[int]:
    """Label ids whose probabilities add up to the positive score, with the pipeline's own label rules."""
    if role == "car":
        from pipeline.car import car_label_ids

        return car_label_ids(id2label)
    from pipeline.damage import damage_label_ids

    damaged, _ = damage_label_ids(id2label)
    return damaged


def classifier_probabilities(
    model_dir: str | Path, paths: Sequence[Path], batch_size: int = 32
) -> tuple[np.ndarray, dict[int, str]]:
    """(N, C) softmax probabilities as the pipeline computes them, and the model's id2label."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    rows = []
    for start in range(0, len(paths), batch_size):
        images = [open_rgb(path, min_side=448) for path in paths[start : start + batch_size]]
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            rows.append(model(pixel_values=pixels).logits.float().softmax(-1).numpy())
    return (np.concatenate(rows) if rows else np.zeros((0, len(id2label)))), id2label


def classifier_scores(model_dir: str | Path, paths: Sequence[Path], role: str, batch_size: int = 32) -> np.ndarray:
    """The positive score of each image, computed as the pipeline does (softmax, sum of positive labels)."""
    probabilities, id2label = classifier_probabilities(model_dir, paths, batch_size)
    ids = positive_ids(id2label, role)
    if not ids:
        raise ValueError(f"{model_dir}: no label of the model counts as positive for the {role} check")
    return np.clip(probabilities[:, ids].sum(axis=1), 0.0, 1.0)


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
    negative_label = "whole" if role == "damage" and not positive_label and (Path(data) / "whole").is_dir() else None
    positive_label = positive_label or ("car" if role == "car" else "damaged")
    paths, y_true = labeled_images(Path(data), positive_label, negative_label)
    scores = classifier_scores(model, paths, role)
    metrics = binary_metrics(y_true, scores, threshold)
    metrics["best_threshold"] = best_threshold(metrics)
    metrics["per_source"] = per_source(paths, y_true, scores, threshold)
    metrics["source_balanced_accuracy"] = source_balanced_accuracy(paths, y_true, scores, threshold)
    for row in metrics["threshold_sweep"]:
        row["source_balanced_accuracy"] = source_balanced_accuracy(paths, y_true, scores, row["threshold"])
    metrics["best_threshold_source_balanced"] = max(
        metrics["threshold_sweep"], key=lambda r: (r["source_balanced_accuracy"], -abs(r["threshold"] - 0.5))
    )["threshold"]
    metrics["errors"] = [
        {"path": str(p), "label": y, "score": round(float(s), 4)}
        for p, y, s in zip(paths, y_true, scores, strict=True)
        if (s >= threshold) != bool(y)
    ]
    metrics["scores"] = [[str(p), y, round(float(s), 5)] for p, y, s in zip(paths, y_true, scores, strict=True)]
    metrics.update({"task": "classifier", "role": role, "model": str(model), "data": str(data)})
    return metrics


def segmenter_evidence(
    model: str | Path, paths: Sequence[Path], imgsz: int = 512, batch_size: int = 8
) -> tuple[np.ndarray, float]:
    """The highest damage-instance confidence the segmenter finds in each image (0 when none), and the
    segmenter's time per photo in ms (PyTorch, batches of ``batch_size``, decoding excluded)."""
    import time

    offline_env()
    from ultralytics import YOLO

    seg = YOLO(str(model))
    best, seconds = [], 0.0
    for start in range(0, len(paths), batch_size):
        images = [np.asarray(open_rgb(p, min_side=imgsz))[:, :, ::-1] for p in paths[start : start + batch_size]]
        began = time.perf_counter()
        results = seg.predict(images, imgsz=imgsz, conf=0.01, device=_device(), verbose=False)
        seconds += time.perf_counter() - began
        for result in results:
            confidences = result.boxes.conf.cpu().numpy() if result.boxes is not None else np.zeros(0)
            best.append(float(confidences.max()) if len(confidences) else 0.0)
    return np.asarray(best), 1000 * seconds / max(len(paths), 1)


def _device() -> str:
    from train.train_segmenter import default_device

    return default_device()


# The rules that turn the classifier's P(damaged) and the segmenter's masks into the verdict's damage score; a
# photo is damaged when that score >= the damage threshold. Masks count when their confidence >= the mask threshold
# (the masks the product draws).
DAMAGE_RULES = ("classifier", "noisy_or", "max", "any_mask")
MASK_SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
DAMAGED_KINDS = ("nmpd", "lensor", "vds")  # what the damage check's targets are measured on
WHOLE_KINDS = ("web", "dsmlr")


def rule_scores(rule: str, p_cls: np.ndarray, p_mask: np.ndarray, mask_threshold: float) -> np.ndarray:
    """classifier: P(damaged); noisy_or: 1 - (1 - P)(1 - best mask); max: the larger; any_mask: 1 when a mask is
    drawn, else P(damaged) (i.e. "classifier OR any mask")."""
    shown = np.where(p_mask >= mask_threshold, p_mask, 0.0)
    if rule == "classifier":
        return p_cls
    if rule == "noisy_or":
        return 1 - (1 - p_cls) * (1 - shown)
    if rule == "max":
        return np.maximum(p_cls, shown)
    if rule == "any_mask":
        return np.where(shown > 0, 1.0, p_cls)
    raise ValueError(f"unknown damage rule {rule!r}; one of {DAMAGE_RULES}")


def kind_of(path: Path) -> str:
    """The held-out kind of a tagged photo: nm and pd are one kind (street photos with polygons)."""
    source = source_of(path)
    return "nmpd" if source in ("nm", "pd") else source


def kind_accuracies(kinds: np.ndarray, y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Per kind: recall of the damaged kinds, true-negative rate of the whole ones."""
    return {k: float((predicted[kinds == k] == y_true[kinds == k]).mean()) for k in sorted(set(kinds))}


def damage_objective(accuracies: dict[str, float]) -> float:
    """Source-balanced accuracy: mean of (mean recall over the damaged kinds, mean TNR over the whole kinds)."""
    damaged = [accuracies[k] for k in DAMAGED_KINDS if k in accuracies]
    whole = [accuracies[k] for k in WHOLE_KINDS if k in accuracies]
    return float(np.mean([np.mean(side) for side in (damaged, whole) if side]))


def best_rule_thresholds(rule, kinds, y_true, p_cls, p_mask, rows) -> tuple[float, float, float]:
    """(objective, damage threshold, mask threshold) maximising ``damage_objective`` on ``rows``."""
    best = (-1.0, 0.5, 0.25)
    for mask_t in MASK_SWEEP if rule != "classifier" else (1.01,):
        scores = rule_scores(rule, p_cls[rows], p_mask[rows], mask_t)
        for damage_t in SWEEP:
            objective = damage_objective(kind_accuracies(kinds[rows], y_true[rows], scores >= damage_t))
            best = max(best, (objective, damage_t, mask_t), key=lambda b: (b[0], -abs(b[1] - 0.5)))
    return best


def cross_validated_objective(rule, kinds, y_true, p_cls, p_mask, seed: int = 0) -> float:
    """Thresholds chosen on one half of the photos, measured on the other, both ways: an honest estimate."""
    halves = np.random.default_rng(seed).permutation(len(y_true)) % 2
    scores = []
    for fold in (0, 1):
        _, damage_t, mask_t = best_rule_thresholds(rule, kinds, y_true, p_cls, p_mask, halves == fold)
        test = halves != fold
        predicted = rule_scores(rule, p_cls[test], p_mask[test], mask_t) >= damage_t
        scores.append(damage_objective(kind_accuracies(kinds[test], y_true[test], predicted)))
    return float(np.mean(scores))


def rule_report(rule, kinds, y_true, p_cls, p_mask) -> dict:
    """One rule: its best thresholds, the cross-validated objective and the per-kind figures at those thresholds."""
    every = np.ones(len(y_true), dtype=bool)
    objective, damage_t, mask_t = best_rule_thresholds(rule, kinds, y_true, p_cls, p_mask, every)
    accuracies = kind_accuracies(kinds, y_true, rule_scores(rule, p_cls, p_mask, mask_t) >= damage_t)
    damaged_recall = float(np.mean([accuracies[k] for k in DAMAGED_KINDS if k in accuracies]))
    return {
        "damage_threshold": damage_t,
        "mask_threshold": None if rule == "classifier" else mask_t,
        "source_balanced_accuracy": objective,
        "cv_source_balanced_accuracy": cross_validated_objective(rule, kinds, y_true, p_cls, p_mask),
        "per_kind": accuracies,
        "balanced_accuracy_vs": {k: (damaged_recall + accuracies[k]) / 2 for k in WHOLE_KINDS if k in accuracies},
    }


def mask_rates(kinds: np.ndarray, p_mask: np.ndarray, passed_car: np.ndarray) -> list[dict]:
    """Per mask threshold and kind: photos with at least one mask drawn (after the car check, if given)."""
    return [
        {"mask_threshold": t, **{k: float(((p_mask >= t) & passed_car)[kinds == k].mean()) for k in sorted(set(kinds))}}
        for t in MASK_SWEEP
    ]


def damage_rules(
    classifier: str | Path,
    segmenter: str | Path,
    data: str | Path,
    imgsz: int = 512,
    car_model: str | Path | None = None,
    car_threshold: float = 0.01,
) -> dict:
    """Which rule should decide "damaged" when the segmenter runs on every car? Every rule of DAMAGE_RULES with
    its best thresholds, per held-out kind; the recommended one has the best cross-validated source-balanced
    accuracy. ``data``: ``damaged/`` and ``whole/`` folders of source-tagged photos that neither model trained on.
    """
    paths, y = labeled_images(Path(data), None, negative_label="whole")
    y_true, kinds = np.asarray(y), np.asarray([kind_of(p) for p in paths])
    p_cls = classifier_scores(classifier, paths, "damage")
    p_mask, _ = segmenter_evidence(segmenter, paths, imgsz)
    _, ms_whole = segmenter_evidence(segmenter, [p for p, t in zip(paths, y_true, strict=True) if not t][:64], imgsz)
    passed = np.ones(len(paths), dtype=bool)
    if car_model:
        passed = classifier_scores(car_model, paths, "car") >= car_threshold
    reports = {rule: rule_report(rule, kinds, y_true, p_cls, p_mask) for rule in DAMAGE_RULES}
    recommended = max(DAMAGE_RULES, key=lambda r: round(reports[r]["cv_source_balanced_accuracy"], 3))
    return {
        "task": "damage_rules",
        "classifier": str(classifier),
        "segmenter": str(segmenter),
        "n": {k: int((kinds == k).sum()) for k in sorted(set(kinds))},
        "rules": reports,
        "recommended_rule": recommended,
        "photos_with_a_mask": mask_rates(kinds, p_mask, passed),
        "car_check_passed": {k: float(passed[kinds == k].mean()) for k in sorted(set(kinds))},
        "segmenter_ms_per_whole_photo": round(ms_whole, 1),
        "scores": [
            [str(p), int(t), round(float(c), 5), round(float(m), 5)]
            for p, t, c, m in zip(paths, y_true, p_cls, p_mask, strict=True)
        ],
    }


# --- segmenter -----------------------------------------------------------------------------------


def evaluate_segmenter(
    model: str | Path, data: str | Path, imgsz: int = 640, split: str = "val", batch: int = 8, single_cls: bool = False
) -> dict:
    """Box and mask mAP50 / mAP50-95, overall and per class, with Ultralytics' validator.

    ``data`` is a YOLO data yaml, or a COCO json (converted to a temporary YOLO dataset first). ``single_cls``:
    class-agnostic figures (every label and prediction counts as one class), comparable across class sets.
    """
    offline_env()
    import tempfile

    from ultralytics import YOLO

    data = Path(data)
    if data.suffix == ".json":
        from train.prepare import build_yolo_dataset, read_coco

        target = Path(tempfile.mkdtemp(prefix="coco-as-yolo-"))
        data = build_yolo_dataset({"": read_coco(data)}, target, val_fraction=0.0)
        split = "train"  # everything went to the one split
    seg = YOLO(str(model))
    results = seg.val(
        data=str(data),
        imgsz=imgsz,
        split=split,
        batch=batch,
        device="cpu",
        plots=False,
        verbose=False,
        single_cls=single_cls,
        project=tempfile.mkdtemp(prefix="seg-val-"),  # not ./runs in the caller's working directory
    )
    names = {0: "all (class-agnostic)"} if single_cls else results.names
    per_class = {}
    for i, class_id in enumerate(results.seg.ap_class_index):
        per_class[names[int(class_id)]] = {
            "box_map50": float(results.box.all_ap[i, 0]),
            "box_map50_95": float(results.box.all_ap[i].mean()),
            "mask_map50": float(results.seg.all_ap[i, 0]),
            "mask_map50_95": float(results.seg.all_ap[i].mean()),
        }
    return {
        "task": "segmenter",
        "model": str(model),
        "data": str(data),
        "split": split,
        "imgsz": imgsz,
        "class_agnostic": single_cls,
        "box_map50": float(results.box.map50),
        "box_map50_95": float(results.box.map),
        "mask_map50": float(results.seg.map50),
        "mask_map50_95": float(results.seg.map),
        "per_class": per_class,
    }


# --- severity ------------------------------------------------------------------------------------

CONFIDENCE_SWEEP = tuple(round(t, 2) for t in np.arange(0.34, 0.96, 0.02))
MIN_GRADE_COVERAGE = 0.85  # the grade is given for at least this share of damaged photos


def grade_probabilities(probabilities: np.ndarray, id2label: dict[int, str]) -> np.ndarray:
    """P(minor, moderate, severe | damaged): the grade labels' probabilities, renormalised."""
    ids = [next(i for i, label in id2label.items() if label == grade) for grade in GRADES]
    grades = probabilities[:, ids]
    return grades / np.clip(grades.sum(axis=1, keepdims=True), 1e-12, None)


def coverage_sweep(y_true: np.ndarray, p_grade: np.ndarray) -> list[dict]:
    """The grade given only when its probability >= t: share of photos graded and accuracy on them, per t."""
    confidence, correct = p_grade.max(axis=1), p_grade.argmax(axis=1) == y_true
    return [
        {"confidence": t, "coverage": float((confidence >= t).mean()),
         "accuracy": float(correct[confidence >= t].mean()) if (confidence >= t).any() else None}
        for t in CONFIDENCE_SWEEP
    ]  # fmt: skip


def accuracy_by(keys: np.ndarray, correct: np.ndarray) -> dict[str, dict]:
    return {k: {"n": int((keys == k).sum()), "accuracy": float(correct[keys == k].mean())} for k in sorted(set(keys))}


def evaluate_severity(model: str | Path, data: str | Path, damage_threshold: float = 0.5) -> dict:
    """Grade accuracy, confusion and coverage on ``data/{minor,moderate,severe}/`` (source-tagged photos).

    The grade confidence threshold is the highest that still grades MIN_GRADE_COVERAGE of the photos: chosen
    from the scores alone (no labels), so the accuracy at it is no optimistic pick. For a model with a ``whole``
    label, also the grades of the photos it finds damaged (P(damaged) = 1 - P(whole) >= ``damage_threshold``).
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    paths = [p for grade in GRADES if (Path(data) / grade).is_dir() for p in list_images(Path(data) / grade)]
    y_true = np.asarray([GRADES.index(p.parent.name) for p in paths])
    probabilities, id2label = classifier_probabilities(model, paths)
    p_grade = grade_probabilities(probabilities, id2label)
    predicted, sweep = p_grade.argmax(axis=1), coverage_sweep(y_true, p_grade)
    chosen = max((r for r in sweep if r["coverage"] >= MIN_GRADE_COVERAGE), key=lambda r: r["confidence"])
    sources = np.asarray([source_of(p) for p in paths])
    metrics = {
        "task": "severity", "model": str(model), "data": str(data), "n": len(paths), "labels": list(GRADES),
        "accuracy": float((predicted == y_true).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=[0, 1, 2]).tolist(),
        "per_source": accuracy_by(sources, predicted == y_true),
        "grade_confidence_threshold": chosen["confidence"],
        "coverage_at_threshold": chosen["coverage"],
        "accuracy_at_threshold": chosen["accuracy"],
        "coverage_sweep": sweep,
    }  # fmt: skip
    if "whole" in id2label.values():
        whole = next(i for i, label in id2label.items() if label == "whole")
        found = 1 - probabilities[:, whole] >= damage_threshold
        graded = found & (p_grade.max(axis=1) >= chosen["confidence"])
        metrics.update(
            damage_found=float(found.mean()),
            graded_when_damage_found=float(graded.mean()),
            accuracy_graded_when_damage_found=float((predicted == y_true)[graded].mean()) if graded.any() else None,
        )
    return metrics


# --- parts ---------------------------------------------------------------------------------------

# Part names (the part segmenter's, dsmlr's) and yb's damaged-part names -> the groups both can be compared in.
# Mirrors and wheels have no yb group: a damage on them is left out of the comparison.
PART_GROUPS = {
    "hood": "bonnet/hood", "bonnet": "bonnet/hood",
    "front_bumper": "bumper", "back_bumper": "bumper", "bumper": "bumper",
    "trunk": "dickey/trunk/tailgate", "tailgate": "dickey/trunk/tailgate", "dickey": "dickey/trunk/tailgate",
    "front_left_door": "door", "front_right_door": "door", "back_left_door": "door", "back_right_door": "door",
    "door": "door",
    "fender": "fender",
    "front_left_light": "light", "front_right_light": "light", "back_left_light": "light",
    "back_right_light": "light", "light": "light",
    "front_glass": "windshield/glass", "back_glass": "windshield/glass", "windshield": "windshield/glass",
}  # fmt: skip


def part_group(name: str) -> str | None:
    return PART_GROUPS.get(name.lower())


def masks_of(model, image: np.ndarray, imgsz: int, conf: float) -> tuple[np.ndarray, list[str]]:
    """(K, H, W) bool masks at the photo's size and their class names."""
    result = model.predict(image, imgsz=imgsz, conf=conf, retina_masks=True, device=_device(), verbose=False)[0]
    if result.masks is None or not len(result.masks.data):
        return np.zeros((0, *image.shape[:2]), dtype=bool), []
    names = [result.names[int(c)] for c in result.boxes.cls.cpu().numpy()]
    return result.masks.data.cpu().numpy() > 0.5, names


def damaged_part_names(damage_masks: np.ndarray, part_masks: np.ndarray, part_names: Sequence[str]) -> list[str]:
    """Each damage instance's part: the part instance whose mask overlaps the damage mask most (by area); none
    when no part mask touches it. Close to, not the same as, the product's rule (pipeline.parts.on_parts sums the
    overlap per part class, at PART_CONFIDENCE 0.2): measuring through the pipeline's own stages is still to do."""
    found = []
    for damage in damage_masks:
        overlaps = (part_masks & damage).reshape(len(part_masks), -1).sum(axis=1) if len(part_masks) else []
        if len(overlaps) and max(overlaps) > 0:
            found.append(part_names[int(np.argmax(overlaps))])
    return found


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


def evaluate_damaged_parts(
    damage_model: str | Path, part_model: str | Path, data: str | Path, imgsz: int = 512, part_imgsz: int = 512,
    mask_threshold: float = 0.25, part_threshold: float = 0.25,
) -> dict:  # fmt: skip
    """End to end: per photo, the set of damaged-part groups under the damage segmenter's masks (each mask's part
    by the part segmenter, largest overlap) vs the photo's yb labels, both mapped by PART_GROUPS; F1 over them.

    ``data``: a YOLO data yaml whose val split holds yb-style photos and labels (yb class names)."""
    import yaml

    offline_env()
    from ultralytics import YOLO

    from train.sources import read_yolo_seg

    config = yaml.safe_load(Path(data).read_text())
    names = (
        config["names"] if isinstance(config["names"], list) else [config["names"][i] for i in sorted(config["names"])]
    )
    samples = read_yolo_seg(Path(config["path"]) / config["val"], names)
    damage, parts = YOLO(str(damage_model)), YOLO(str(part_model))
    truth, predicted, with_mask = [], [], 0
    for sample in samples:
        image = np.asarray(open_rgb(sample.image))[:, :, ::-1]
        damage_masks, _ = masks_of(damage, image, imgsz, mask_threshold)
        part_masks, part_names = masks_of(parts, image, part_imgsz, part_threshold)
        with_mask += bool(len(damage_masks))
        truth.append({g for name, _ in sample.polygons if (g := part_group(name))})
        predicted.append(
            {g for name in damaged_part_names(damage_masks, part_masks, part_names) if (g := part_group(name))}
        )
    scores = set_f1(truth, predicted)
    return {
        "task": "damaged_parts", "damage_model": str(damage_model), "part_model": str(part_model), "data": str(data),
        "n": len(samples), "photos_with_a_damage_mask": with_mask / max(len(samples), 1),
        "f1": scores["all"]["f1"], "precision": scores["all"]["precision"], "recall": scores["all"]["recall"],
        "per_group": scores, "mask_threshold": mask_threshold, "part_threshold": part_threshold,
    }  # fmt: skip


# --- whole pipeline ------------------------------------------------------------------------------

VERDICTS = ("not_car", "whole", "damaged")


def evaluate_pipeline(profile: str | Path, data: str | Path, batch_size: int = 8) -> dict:
    """The three verdicts on folders ``not_car/``, ``whole/``, ``damaged/`` (any may be missing)."""
    offline_env()
    from PIL import Image

    import pipeline
    from pipeline.settings import load_profile

    settings = load_profile(profile)
    paths, truth = [], []
    for verdict in VERDICTS:
        folder = Path(data) / verdict
        for path in list_images(folder) if folder.is_dir() else []:
            paths.append(path)
            truth.append(verdict)
    predicted: list[str] = []
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch_size]]
        for analysis in pipeline.analyze_batch(images, settings):
            predicted.append("not_car" if not analysis.is_car else "damaged" if analysis.is_damaged else "whole")
    return {"task": "pipeline", "profile": str(profile), "data": str(data), **verdict_metrics(truth, predicted)}


def verdict_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Car check (car vs not_car), damage check (on true cars) and the 3-way verdict."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    is_car_true, is_car_pred = truth != "not_car", predicted != "not_car"
    cars = is_car_true
    car = binary_metrics(is_car_true.astype(int), is_car_pred.astype(float))
    damage = binary_metrics((truth[cars] == "damaged").astype(int), (predicted[cars] == "damaged").astype(float))
    from sklearn.metrics import confusion_matrix

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


# --- reports -------------------------------------------------------------------------------------


def write_report(metrics: dict, output_dir: str | Path, title: str, notes: str = "") -> tuple[Path, Path]:
    """``metrics.json`` and a markdown model card ``README.md`` in ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "metrics.json"
    json_path.write_text(json.dumps(metrics, indent=2, default=_jsonable), encoding="utf-8")
    card = output_dir / "README.md"
    card.write_text(model_card(metrics, title, notes), encoding="utf-8")
    return json_path, card


def _jsonable(value: object) -> object:
    return value.item() if hasattr(value, "item") else str(value)


def model_card(metrics: dict, title: str, notes: str = "") -> str:
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if scalars:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
        lines.append("")
    for key in ("model", "data", "profile"):
        if key in metrics:
            lines.append(f"- {key}: `{metrics[key]}`")
    if "confusion_matrix" in metrics:
        lines += ["", f"Confusion matrix (rows true 0/1, columns predicted 0/1): `{metrics['confusion_matrix']}`"]
    if metrics.get("per_source"):
        lines += ["", "| source / true class | n | accuracy |", "|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['accuracy']:.3f} |" for k, v in metrics["per_source"].items()]
    if metrics.get("per_class"):
        lines += ["", "| class | box mAP50 | box mAP50-95 | mask mAP50 | mask mAP50-95 |", "|---|---|---|---|---|"]
        lines += [
            f"| {k} | "
            + " | ".join(f"{v[m]:.3f}" for m in ("box_map50", "box_map50_95", "mask_map50", "mask_map50_95"))
            + " |"
            for k, v in metrics["per_class"].items()
        ]
    if metrics.get("threshold_sweep"):
        lines += ["", "| threshold | TPR | TNR | balanced accuracy | source-balanced |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['threshold']:.2f} | {_fmt(r['tpr'])} | {_fmt(r['tnr'])} | {r['balanced_accuracy']:.3f} "
            f"| {_fmt(r.get('source_balanced_accuracy'))} |"
            for r in metrics["threshold_sweep"]
        ]
    for key in ("car_check", "damage_check_on_cars"):
        if key in metrics:
            lines += ["", f"- {key}: " + ", ".join(f"{k} {v}" for k, v in metrics[key].items())]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- CLI -------------------------------------------------------------------------------------------


TASKS = ("classifier", "segmenter", "pipeline", "combine", "severity", "parts", "damaged_parts")


@dataclass
class EvaluateArguments:
    task: str = field(metadata={"choices": list(TASKS)})
    model: str = field(
        metadata={"help": "classifier folder, segmenter .pt (damage segmenter for damaged_parts), or profile .toml"}
    )
    data: str = field(metadata={"help": "labeled folder, YOLO data yaml or COCO json"})
    role: str = field(default="damage", metadata={"choices": ["car", "damage"]})
    positive_label: str | None = field(default=None, metadata={"help": "default: car / damaged"})
    threshold: float = field(default=0.5, metadata={"help": "classifier threshold; severity: the damage threshold"})
    imgsz: int = field(default=640)
    part_imgsz: int = field(default=512)
    split: str = field(default="val")
    single_cls: bool = field(default=False, metadata={"help": "segmenter: class-agnostic figures"})
    segmenter: str | None = field(default=None, metadata={"help": "combine: the segmenter .pt beside --model"})
    car_model: str | None = field(default=None, metadata={"help": "combine: the car check, for the cascade"})
    car_threshold: float = field(default=0.01)
    parts: str | None = field(default=None, metadata={"help": "damaged_parts: the part segmenter .pt"})
    mask_threshold: float = field(default=0.25)
    output_dir: str | None = field(default=None, metadata={"help": "write metrics.json and README.md here"})


def run_task(args: EvaluateArguments) -> dict:
    if args.task == "classifier":
        return evaluate_classifier(args.model, args.data, args.role, args.positive_label, args.threshold)
    if args.task in ("segmenter", "parts"):
        return evaluate_segmenter(args.model, args.data, args.imgsz, args.split, single_cls=args.single_cls)
    if args.task == "combine":
        return damage_rules(args.model, args.segmenter, args.data, args.imgsz, args.car_model, args.car_threshold)
    if args.task == "severity":
        return evaluate_severity(args.model, args.data, args.threshold)
    if args.task == "damaged_parts":
        return evaluate_damaged_parts(
            args.model, args.parts, args.data, args.imgsz, args.part_imgsz, args.mask_threshold
        )
    return evaluate_pipeline(args.model, args.data)


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    offline_env()
    metrics = run_task(args)
    if args.output_dir:
        write_report(metrics, args.output_dir, f"{args.task} evaluation")
    hidden = {"threshold_sweep", "errors", "scores", "coverage_sweep"}
    print(json.dumps({k: v for k, v in metrics.items() if k not in hidden}, indent=2, default=_jsonable))


if __name__ == "__main__":
    main()
