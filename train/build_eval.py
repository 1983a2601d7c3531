"""The build's evaluations: every model on the held-out photos of every kind; thresholds and the damage rule.

Each step writes a model card (README.md) and metrics.json beside its model (or in ``eval-*``); the returned
headline numbers go to build_summary.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline import Settings
from pipeline.settings import ModelRef, ModelSet, Thresholds, runtime_options
from train.common import CAR_MODEL
from train.evaluate.classifiers import evaluate_classifier
from train.evaluate.damage_rules import damage_rules
from train.evaluate.damaged_parts import evaluate_damaged_parts
from train.evaluate.metrics import per_source
from train.evaluate.report import write_report
from train.evaluate.segmenter import evaluate_segmenter
from train.evaluate.severity import evaluate_severity

# The confidence at which the part model's (damaged-part) instances are named damaged parts on a photo judged
# damaged. Chosen through the CLI on the 242 held-out yb photos with the release's part model (F1 0.617-0.631 from
# 0.07 to 0.12, 0.594 at 0.05: docs/training.md); a fresh build has no sweep of its own for it.
DAMAGED_PART_CONFIDENCE = 0.1


def car_threshold(metrics: dict) -> float:
    """The sweep's threshold with the best source-balanced accuracy, at most 0.1: a missed car (often a close-up of
    a damaged panel) ends the cascade with no damage check, a non-vehicle let through only costs a check."""
    rows = [r for r in metrics["threshold_sweep"] if r["threshold"] <= 0.1]
    return max(rows, key=lambda r: (r["source_balanced_accuracy"], r["threshold"]))["threshold"]


def evaluate_car_check(car_model: Path, work: Path, out: Path) -> dict:
    metrics = evaluate_classifier(car_model, work / "car-check", role="car", threshold=0.01)
    chosen = car_threshold(metrics)
    metrics["chosen_threshold"] = chosen
    metrics["per_source_at_chosen"] = per_source(
        [Path(p) for p, _, _ in metrics["scores"]], [y for _, y, _ in metrics["scores"]],
        [s for _, _, s in metrics["scores"]], chosen,
    )  # fmt: skip
    write_report(
        metrics, out / "eval-car-check", "Car check: ImageNet EfficientNet-Lite0, P(car) = sum of car classes",
        "car = held-out photos of every car kind (damage close-ups included); not_car = non-vehicle ImageNet photos.",
    )  # fmt: skip
    return metrics


def evaluate_classifiers(args, data: dict, out: Path, models: dict) -> dict:
    """The damage check per held-out source and the grades (one-pass model or separate severity model)."""
    held = data["classify"] / "held-out"
    damage = evaluate_classifier(out / models["damage"], held, role="damage")
    write_report(
        damage, out / models["damage"], f"Damage classifier ({args.damage_model}), fine-tuned EfficientNet-Lite0",
        "Held-out photos of every source (no model trained on them, near-duplicates included); "
        "P(damaged) = 1 - P(whole) for a graded model. Its weights saw web-whole-cars photos.",
    )  # fmt: skip
    grade_model = out / models.get("severity", models["damage"])
    severity = evaluate_severity(grade_model, held)
    write_report(severity, out / "eval-severity", "Severity grade on held-out vds and lensor photos")
    return {"damage": damage, "severity": severity}


def evaluate_segmenters(args, data: dict, out: Path) -> dict:
    """Damage masks per held-out kind (class-agnostic) and parts per class."""
    seg = {
        kind: evaluate_segmenter(out / "segmenter" / "best.pt", yaml, args.seg_imgsz, single_cls=True)
        for kind, yaml in data["seg"].eval_yamls.items()
    }
    write_report(
        {"task": "segmenter", **{f"{k}_{m}": v[m] for k, v in seg.items() for m in ("box_map50", "mask_map50")},
         "per_kind": seg}, out / "segmenter", "Damage segmenter (YOLO11n-seg)",
        "Class-agnostic figures on held-out nm + pd photos (nmpd) and held-out lensor photos (lensor).",
    )  # fmt: skip
    parts = evaluate_segmenter(out / "parts" / "best.pt", data["parts"], args.part_imgsz)
    write_report(parts, out / "parts", "Part segmenter (YOLO11n-seg, dsmlr's 18 parts)", "Held-out dsmlr photos.")
    return {"segmenter": seg, "parts": parts}


def evaluate_combination(args, data: dict, shared: Path, out: Path, models: dict, car_t: float) -> dict:
    rules = damage_rules(
        out / models["damage"], out / "segmenter" / "best.pt", data["combine"], args.seg_imgsz,
        shared / CAR_MODEL, car_t,
    )  # fmt: skip
    write_report(rules, out / "eval-damage-rules", "Damage verdict: classifier, masks and their combinations")
    return rules


def profile_settings(car: Path, out: Path, models: dict, thresholds: dict, runtime: dict) -> Settings:
    """The settings the build's profile.toml will hold (``write_profile``, then ``load_profile``), before it is
    written: the build's end-to-end figures are measured on what a user of that profile gets."""
    refs = {role: ModelRef(str((out / path).resolve())) for role, path in models.items()}
    served, options = runtime_options(runtime)  # as load_profile reads them
    return Settings(
        models=ModelSet(car=ModelRef(str(Path(car).resolve())), **refs, **served),
        thresholds=Thresholds(**thresholds),
        **options,
    )


def evaluate_build(args, data: dict, shared: Path, out: Path, models: dict, lap: Callable[[str], None]) -> dict:
    """All evaluations; returns thresholds and runtime settings for the profile and the headline numbers."""
    car = evaluate_car_check(shared / CAR_MODEL, out / "work", out)
    lap("evaluate_car_check")
    classifiers = evaluate_classifiers(args, data, out, models)
    lap("evaluate_classifiers")
    segmenters = evaluate_segmenters(args, data, out)
    lap("evaluate_segmenters")
    rules = evaluate_combination(args, data, shared, out, models, car["chosen_threshold"])
    chosen = rules["rules"][rules["recommended_rule"]]
    lap("evaluate_damage_rules")
    thresholds = {"car": car["chosen_threshold"], "damage": chosen["damage_threshold"],
                  "mask": chosen["mask_threshold"] or 0.25,
                  "grade": classifiers["severity"]["grade_confidence_threshold"]}  # fmt: skip
    # One instance where two damage types overlap (held-out nm/pd mask mAP50 0.266 -> 0.269: docs/training.md)
    runtime = {"seg_image_size": args.seg_imgsz, "part_image_size": args.part_imgsz,
               "damage_rule": rules["recommended_rule"], "seg_agnostic_nms": args.seg_classes != "damage",
               "damaged_part_confidence": DAMAGED_PART_CONFIDENCE}  # fmt: skip
    parts = evaluate_damaged_parts(profile_settings(shared / CAR_MODEL, out, models, thresholds, runtime), data["yb"])
    write_report(parts, out / "eval-damaged-parts", "Damaged parts, end to end (the product), on held-out yb photos")
    lap("evaluate_damaged_parts")
    return {
        "thresholds": thresholds,
        "runtime": runtime,
        "headline": headline(car, classifiers, segmenters, rules, parts),
    }


def headline(car: dict, classifiers: dict, segmenters: dict, rules: dict, parts: dict) -> dict:
    damage, severity = classifiers["damage"], classifiers["severity"]
    chosen = rules["rules"][rules["recommended_rule"]]
    return {
        "car_check": {k: car[k] for k in ("chosen_threshold", "roc_auc")}
        | {"source_balanced_at_chosen": _sweep_row(car, car["chosen_threshold"])["source_balanced_accuracy"]},
        "damage_classifier_per_source": damage["per_source"],
        "damage_rule": {"rule": rules["recommended_rule"], **{k: chosen[k] for k in chosen if k != "per_kind"},
                        "per_kind": chosen["per_kind"], "segmenter_ms_per_whole_photo":
                        rules["segmenter_ms_per_whole_photo"]},
        "severity": {k: severity[k] for k in ("accuracy", "per_source", "grade_confidence_threshold",
                                               "coverage_at_threshold", "accuracy_at_threshold", "confusion_matrix")},
        "segmenter": {k: {m: v[m] for m in ("box_map50", "mask_map50", "mask_map50_95")}
                      for k, v in segmenters["segmenter"].items()},
        "parts": {"mask_map50": segmenters["parts"]["mask_map50"], "box_map50": segmenters["parts"]["box_map50"]},
        "damaged_parts": {k: parts[k] for k in ("f1", "precision", "recall", "photos_with_a_damage_mask")},
    }  # fmt: skip


def _sweep_row(metrics: dict, threshold: float) -> dict:
    return min(metrics["threshold_sweep"], key=lambda r: abs(r["threshold"] - threshold))
