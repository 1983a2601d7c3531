"""The written record of an evaluation: ``metrics.json`` and a markdown model card (``README.md``)."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(metrics: dict, output_dir: str | Path, title: str, notes: str = "") -> tuple[Path, Path]:
    """``metrics.json`` and a markdown model card ``README.md`` in ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "metrics.json"
    json_path.write_text(json.dumps(metrics, indent=2, default=jsonable), encoding="utf-8")
    card = output_dir / "README.md"
    card.write_text(model_card(metrics, title, notes), encoding="utf-8")
    return json_path, card


def jsonable(value: object) -> object:
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
