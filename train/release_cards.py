"""Model cards of the release: a README.md per model folder with Hub metadata (licence, base model, datasets,
pipeline tag, held-out figures), what it saw and under which licence, how it was trained and for how long."""

from __future__ import annotations

import json
from pathlib import Path

from train.release_models import DATASETS, RELEASE, ReleaseModel

TRAIN_COMMAND = (
    "python -m train.build_profile --shared ../shared --out BUILD --resume models --keep_thresholds\n"
    "python -m train.release_eval --shared ../shared --work BUILD/work --profile BUILD/profile.toml --out eval.json\n"
    "python -m train.release --build BUILD --out models --evaluation eval.json"
)
# What each figure of the release evaluation means (all on held-out photos, through `python -m pipeline`).
FIGURE_NAMES = {
    "car_balanced_accuracy": "car check, balanced accuracy (cars of every kind vs non-vehicle ImageNet photos)",
    "damage_balanced_accuracy_vs_dsmlr": "damage check, balanced accuracy, damaged vs whole cars like dsmlr",
    "damage_balanced_accuracy_vs_web": "damage check, balanced accuracy, damaged vs whole cars like web-whole-cars",
    "severity_accuracy": "severity accuracy on the damaged photos it grades (vds + lensor)",
    "severity_graded_share": "share of damaged photos given a grade",
    "mask_map50_nmpd": "mask mAP50, class-agnostic, nm/pd-style photos",
    "mask_map50_lensor": "mask mAP50, class-agnostic, lensor close-ups",
    "damaged_with_mask": "damaged photos with at least one mask",
    "type_accuracy_lensor": "damage type accuracy (dent / scratch / broken) of matched lensor masks",
    "damaged_part_f1": "damaged-part F1 (yb vocabulary), held-out yb photos",
}


def card_metadata(model: ReleaseModel, evaluation: dict) -> list[str]:
    lines = ["---", f"license: {model.licence}", f"pipeline_tag: {model.pipeline_tag}", "library_name: "
             + ("ultralytics" if model.pipeline_tag == "image-segmentation" else "transformers")]  # fmt: skip
    lines.append(f"base_model: {json.dumps(model.base_model)}")
    seen = [DATASETS[key] for key in model.trained_on]
    if seen:
        lines += ["datasets:", *(f"  - {data.folder}" for data in seen)]
    figures = {k: evaluation.get(k) for k in model.figures if evaluation.get(k) is not None}
    if figures:
        lines += ["model-index:", f"  - name: {model.folder}", "    results:"]
        for key, value in figures.items():
            lines += [
                "      - task: {type: " + model.pipeline_tag + "}",
                "        dataset: {name: held-out photos (by source), type: held-out}",
                f"        metrics: [{{type: {key}, value: {value:.4f}, name: {json.dumps(FIGURE_NAMES[key])}}}]",
            ]
    return [*lines, "---", ""]


def card_text(model: ReleaseModel, state: dict, evaluation: dict) -> str:
    lines = card_metadata(model, evaluation)
    lines += [f"# {model.title}", "", model.notes, "", f"Base model: {model.base_model}. Licence: {model.licence}.", ""]
    lines += ["## Data", "", "| set | licence as the source states it | used for |", "|---|---|---|"]
    for key in dict.fromkeys((*model.trained_on, *model.evaluated_on)):
        use = ("training" if key in model.trained_on else "") + (", " if key in model.trained_on else "")
        use = (use + "held-out evaluation") if key in model.evaluated_on else use.rstrip(", ")
        lines.append(f"| {DATASETS[key].name} | {DATASETS[key].licence} | {use} |")
    lines += [
        "",
        "Held-out photos are whole near-duplicate groups (pHash, across sets) that no model of the release trained",
        "on (`train/sources.py`; the car check's added class saw ImageNet-sample photos of the other half than the",
        "evaluated ones); the figures are measured through `python -m pipeline` (the product).",
        "",
    ]
    lines += figures_table(model, evaluation)
    lines += training_section(model, state)
    return "\n".join(lines) + "\n"


def _interval(bounds: list[float] | None) -> str:
    return f" (95 % interval {bounds[0]:.3f}-{bounds[1]:.3f}, bootstrap over photos)" if bounds else ""


def figures_table(model: ReleaseModel, evaluation: dict) -> list[str]:
    measured = [k for k in model.figures if evaluation.get(k) is not None]
    if not measured:
        return ["## Held-out figures", "", "Not measured for this release yet.", ""]
    lines = ["## Held-out figures", "", "| figure | value |", "|---|---|"]
    for key in measured:
        lines.append(f"| {FIGURE_NAMES[key]} | {evaluation[key]:.3f}{_interval(evaluation.get(key + '_interval'))} |")
    counts = evaluation.get("counts")
    if counts:
        lines += ["", "Photos: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    return [*lines, ""]


def training_section(model: ReleaseModel, state: dict) -> list[str]:
    lines = ["## Training", ""]
    entry = state.get("models", {}).get(model.folder)
    if entry:
        released = sum(run.get("released", True) for run in state.get("runs", []))  # the runs it is made of
        lines += [f"{entry['epochs']:.1f} epochs in {entry['train_hours']:.2f} hours of training, over "
                  f"{released} released run(s) (docs/training.md has the learning curve).", ""]  # fmt: skip
    else:
        lines += ["Not trained here.", ""]
    return [*lines, "```bash", TRAIN_COMMAND, "```", ""]


def write_cards(out: Path, state: dict, evaluation: dict) -> None:
    for model in RELEASE:
        (out / model.folder / "README.md").write_text(card_text(model, state, evaluation), encoding="utf-8")
