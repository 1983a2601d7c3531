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

# Finer at the low end: summed-class scores (P(car) over ImageNet car classes) are often small.
SWEEP = (0.01, 0.02, 0.03, *(round(t, 2) for t in np.arange(0.05, 0.96, 0.05)))


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


def classifier_scores(model_dir: str | Path, paths: Sequence[Path], role: str, batch_size: int = 32) -> np.ndarray:
    """The positive score of each image, computed as the pipeline does (softmax, sum of positive labels)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    ids = positive_ids(id2label, role)
    if not ids:
        raise ValueError(f"{model_dir}: no label of the model counts as positive for the {role} check")
    scores = []
    for start in range(0, len(paths), batch_size):
        images = [open_rgb(path, min_side=448) for path in paths[start : start + batch_size]]
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            probabilities = model(pixel_values=pixels).logits.float().softmax(-1).numpy()
        scores.extend(np.clip(probabilities[:, ids].sum(axis=1), 0.0, 1.0))
    return np.asarray(scores)


def labeled_images(root: Path, positive_label: str) -> tuple[list[Path], list[int]]:
    """Images under ``root/<label>/``: 1 for the positive label's folder, 0 for every other folder."""
    paths, labels = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for path in list_images(folder):
            paths.append(path)
            labels.append(int(folder.name == positive_label))
    if not paths:
        raise ValueError(f"no images under {root}/<label>/")
    return paths, labels


def evaluate_classifier(
    model: str | Path, data: str | Path, role: str = "damage", positive_label: str | None = None, threshold: float = 0.5
) -> dict:
    positive_label = positive_label or ("car" if role == "car" else "damaged")
    paths, y_true = labeled_images(Path(data), positive_label)
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


def segmenter_evidence(model: str | Path, paths: Sequence[Path], imgsz: int = 512, batch_size: int = 8) -> np.ndarray:
    """The highest damage-instance confidence the segmenter finds in each image (0 when none)."""
    offline_env()
    from ultralytics import YOLO

    seg = YOLO(str(model))
    best = []
    for start in range(0, len(paths), batch_size):
        images = [np.asarray(open_rgb(p, min_side=imgsz))[:, :, ::-1] for p in paths[start : start + batch_size]]
        for result in seg.predict(images, imgsz=imgsz, conf=0.01, device="cpu", verbose=False):
            confidences = result.boxes.conf.numpy() if result.boxes is not None else np.zeros(0)
            best.append(float(confidences.max()) if len(confidences) else 0.0)
    return np.asarray(best)


def combined_damage_metrics(
    classifier: str | Path, segmenter: str | Path, data: str | Path, imgsz: int = 512, threshold: float = 0.5
) -> dict:
    """Does the segmenter's evidence help the damage check? Classifier alone, segmenter alone, and combinations."""
    paths, y_true = labeled_images(Path(data), "damaged")
    p_cls = classifier_scores(classifier, paths, "damage")
    p_seg = segmenter_evidence(segmenter, paths, imgsz)
    combos = {
        "classifier_only": p_cls,
        "segmenter_max_conf": p_seg,
        "mean": (p_cls + p_seg) / 2,
        "noisy_or": 1 - (1 - p_cls) * (1 - p_seg),
        "max": np.maximum(p_cls, p_seg),
    }
    results = {}
    for name, scores in combos.items():
        m = binary_metrics(y_true, scores, threshold)
        results[name] = {
            "balanced_accuracy": m["balanced_accuracy"],
            "roc_auc": m["roc_auc"],
            "best_threshold": best_threshold(m),
            "best_balanced_accuracy": max(r["balanced_accuracy"] for r in m["threshold_sweep"]),
            "per_source": per_source(paths, y_true, scores, threshold),
        }
    return {"task": "damage_combination", "classifier": str(classifier), "segmenter": str(segmenter), **results}


# --- segmenter -----------------------------------------------------------------------------------


def evaluate_segmenter(
    model: str | Path, data: str | Path, imgsz: int = 640, split: str = "val", batch: int = 8
) -> dict:
    """Box and mask mAP50 / mAP50-95, overall and per class, with Ultralytics' validator.

    ``data`` is a YOLO data yaml, or a COCO json (converted to a temporary YOLO dataset first).
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
        project=tempfile.mkdtemp(prefix="seg-val-"),  # not ./runs in the caller's working directory
    )
    names = results.names
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
        "box_map50": float(results.box.map50),
        "box_map50_95": float(results.box.map),
        "mask_map50": float(results.seg.map50),
        "mask_map50_95": float(results.seg.map),
        "per_class": per_class,
    }


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


@dataclass
class EvaluateArguments:
    task: str = field(metadata={"choices": ["classifier", "segmenter", "pipeline", "combine"]})
    model: str = field(metadata={"help": "classifier folder, segmenter .pt, or profile .toml (pipeline)"})
    data: str = field(metadata={"help": "labeled folder, YOLO data yaml or COCO json"})
    role: str = field(default="damage", metadata={"choices": ["car", "damage"]})
    positive_label: str | None = field(default=None, metadata={"help": "default: car / damaged"})
    threshold: float = field(default=0.5)
    imgsz: int = field(default=640)
    split: str = field(default="val")
    segmenter: str | None = field(default=None, metadata={"help": "combine: the segmenter .pt beside --model"})
    output_dir: str | None = field(default=None, metadata={"help": "write metrics.json and README.md here"})


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    offline_env()
    if args.task == "classifier":
        metrics = evaluate_classifier(args.model, args.data, args.role, args.positive_label, args.threshold)
    elif args.task == "segmenter":
        metrics = evaluate_segmenter(args.model, args.data, args.imgsz, args.split)
    elif args.task == "combine":
        metrics = combined_damage_metrics(args.model, args.segmenter, args.data, args.imgsz, args.threshold)
    else:
        metrics = evaluate_pipeline(args.model, args.data)
    if args.output_dir:
        write_report(metrics, args.output_dir, f"{args.task} evaluation")
    shown = {k: v for k, v in metrics.items() if k not in {"threshold_sweep", "errors", "scores"}}
    print(json.dumps(shown, indent=2, default=_jsonable))


if __name__ == "__main__":
    main()
