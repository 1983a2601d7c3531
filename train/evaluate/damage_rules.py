"""Which rule should turn the classifier's P(damaged) and the segmenter's masks into the verdict's damage score?
Every rule of the product (``pipeline.settings.DAMAGE_RULES``) with its best thresholds, per held-out kind.

The scores are the product's (its damage check, its segmenter's best instance); the thresholds are swept here
on them, so the rule is vectorised (``rule_scores``), and a test holds it to the product's own verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.settings import DAMAGE_RULES
from train.common import source_of
from train.evaluate.classifiers import labeled_images
from train.evaluate.metrics import SWEEP
from train.evaluate.product import best_instances, classifier_check, photo_batches, segmenter_stage

# Masks count when their confidence >= the mask threshold (the masks the product draws).
MASK_SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
EVIDENCE_CONFIDENCE = 0.01  # the segmenter's floor while collecting evidence: below every mask threshold swept
DAMAGED_KINDS = ("nmpd", "lensor", "vds")  # what the damage check's targets are measured on
WHOLE_KINDS = ("web", "dsmlr")


def rule_scores(rule: str, p_cls: np.ndarray, p_mask: np.ndarray, mask_threshold: float) -> np.ndarray:
    """classifier: P(damaged); noisy_or: 1 - (1 - P)(1 - best mask); max: the larger; any_mask: 1 when a mask is
    drawn, else P(damaged) (i.e. "classifier OR any mask"). The verdicts of ``pipeline.analyze`` (its _verdict)."""
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


def rule_evidence(classifier, segmenter, paths, imgsz: int, car_model=None) -> dict[str, np.ndarray]:
    """Per photo the product reads (``kept``: indices into ``paths``), decoded once for every model: its damage
    check's P(damaged), its segmenter's best instance and seconds, and its car check's P(car) (1 without one)."""
    damage, seg = classifier_check(classifier, "damage"), segmenter_stage(segmenter, imgsz)
    car = classifier_check(car_model, "car") if car_model else None
    found: dict[str, list] = {"kept": [], "p_cls": [], "p_mask": [], "seconds": [], "p_car": []}
    for indices, photos in photo_batches(paths):
        images = [p.image for p in photos]
        best, seconds = best_instances(seg, photos, EVIDENCE_CONFIDENCE)
        found["kept"] += indices
        found["p_cls"] += [c.score for c in damage.scores(images, 0.5)]
        found["p_mask"] += best
        found["seconds"] += seconds
        found["p_car"] += [c.score for c in car.scores(images, 0.5)] if car else [1.0] * len(photos)
    return {k: np.asarray(v) for k, v in found.items()}


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
    every_path, y = labeled_images(Path(data), None, negative_label="whole")
    evidence = rule_evidence(classifier, segmenter, every_path, imgsz, car_model)
    paths = [every_path[i] for i in evidence["kept"]]
    y_true, kinds = np.asarray([y[i] for i in evidence["kept"]]), np.asarray([kind_of(p) for p in paths])
    p_cls, p_mask, passed = evidence["p_cls"], evidence["p_mask"], evidence["p_car"] >= car_threshold
    reports = {rule: rule_report(rule, kinds, y_true, p_cls, p_mask) for rule in DAMAGE_RULES}
    recommended = max(DAMAGE_RULES, key=lambda r: round(reports[r]["cv_source_balanced_accuracy"], 3))
    whole_seconds = evidence["seconds"][y_true == 0]
    return {
        "task": "damage_rules",
        "classifier": str(classifier),
        "segmenter": str(segmenter),
        "n": {k: int((kinds == k).sum()) for k in sorted(set(kinds))},
        "refused": len(every_path) - len(paths),
        "rules": reports,
        "recommended_rule": recommended,
        "photos_with_a_mask": mask_rates(kinds, p_mask, passed),
        "car_check_passed": {k: float(passed[kinds == k].mean()) for k in sorted(set(kinds))},
        "segmenter_ms_per_whole_photo": round(1000 * float(whole_seconds.mean()), 1) if len(whole_seconds) else None,
        "scores": [
            [str(p), int(t), round(float(c), 5), round(float(m), 5)]
            for p, t, c, m in zip(paths, y_true, p_cls, p_mask, strict=True)
        ],
    }
