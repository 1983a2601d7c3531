"""``python -m train.evaluate --task ...``: one evaluation, its figures printed, and with ``--output_dir`` its
metrics.json and model card (commands: the package's docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline import Settings, load_profile
from pipeline.settings import ModelRef
from train.common import offline_env
from train.evaluate.classifiers import evaluate_classifier
from train.evaluate.damage_rules import damage_rules
from train.evaluate.damaged_parts import evaluate_damaged_parts
from train.evaluate.report import jsonable, write_report
from train.evaluate.segmenter import evaluate_segmenter
from train.evaluate.severity import evaluate_severity
from train.evaluate.verdicts import evaluate_pipeline

TASKS = ("classifier", "segmenter", "pipeline", "combine", "severity", "parts", "damaged_parts")


@dataclass
class EvaluateArguments:
    task: str = field(metadata={"choices": list(TASKS)})
    model: str = field(
        metadata={"help": "classifier folder, segmenter .pt, or profile .toml (pipeline, damaged_parts)"}
    )
    data: str = field(metadata={"help": "labeled folder, YOLO data yaml or COCO json"})
    role: str = field(default="damage", metadata={"choices": ["car", "damage"]})
    positive_label: str | None = field(default=None, metadata={"help": "default: car / damaged"})
    threshold: float = field(default=0.5, metadata={"help": "classifier threshold; severity: the damage threshold"})
    imgsz: int = field(default=640)
    split: str = field(default="val")
    single_cls: bool = field(default=False, metadata={"help": "segmenter: class-agnostic figures"})
    segmenter: str | None = field(default=None, metadata={"help": "combine: the segmenter .pt beside --model"})
    car_model: str | None = field(default=None, metadata={"help": "combine: the car check, for the cascade"})
    car_threshold: float = field(default=0.01)
    parts: str | None = field(default=None, metadata={"help": "damaged_parts: a part .pt instead of the profile's"})
    part_imgsz: int | None = field(default=None, metadata={"help": "damaged_parts: instead of the profile's"})
    mask_threshold: float | None = field(default=None, metadata={"help": "damaged_parts: instead of the profile's"})
    output_dir: str | None = field(default=None, metadata={"help": "write metrics.json and README.md here"})


def damaged_parts_settings(args: EvaluateArguments) -> Settings:
    """The profile's settings, with the part segmenter, its size and the mask threshold given on the command line."""
    settings = load_profile(args.model)
    parts = ModelRef.parse(args.parts) if args.parts else None
    return settings.with_models(parts=parts, part_image_size=args.part_imgsz).with_thresholds(mask=args.mask_threshold)


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
        return {"profile": args.model} | evaluate_damaged_parts(damaged_parts_settings(args), args.data)
    return evaluate_pipeline(args.model, args.data)


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    offline_env()
    metrics = run_task(args)
    if args.output_dir:
        write_report(metrics, args.output_dir, f"{args.task} evaluation")
    hidden = {"threshold_sweep", "errors", "scores", "coverage_sweep"}
    print(json.dumps({k: v for k, v in metrics.items() if k not in hidden}, indent=2, default=jsonable))


if __name__ == "__main__":
    main()
