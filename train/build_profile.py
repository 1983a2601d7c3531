"""Build a complete offline model profile from ../shared, on CPU, within a time budget.

    python -m train.build_profile --shared ../shared --out models/offline

writes ``models/offline/profile.toml`` (``python app.py --models models/offline/profile.toml``):

- car: the shared ImageNet classifier (P(car) = sum of the car classes; with ``--resume``, the release's car check)
  and one more class, "damaged car", fitted with its threshold by ``train.release_car`` (``--skip_car_class``, and
  always with ``--compact``: the car check as it is, threshold from the sweep or the resumed release);
- damage: one classifier for the damage check and the grade (whole / minor / moderate / severe; P(damaged) =
  1 - P(whole)), fine-tuned from that ImageNet model; or (``--damage_model two``) a whole / damaged classifier and
  a separate minor / moderate / severe one;
- segmenter: a one-class ``damage`` YOLO-seg from the shared vehicles checkpoint, on nm + pd + lensor polygons;
- parts: an 18-part YOLO-seg on the dsmlr polygons;
- thresholds and the damage rule (how classifier and masks combine) measured on held-out photos of every kind.

All models keep to ONE held-out split (``train.sources``). Each model folder gets a model card (README.md) and
metrics.json; ``build_summary.json`` has the timings and headline numbers. Measured figures: docs/training.md.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train import build_data, build_parts
from train.build_data import is_vehicle_like
from train.build_outputs import (
    Laps,
    carried_thresholds,
    copy_calibration_photos,
    epochs_trained,
    machine_name,
    write_profile,
)
from train.common import CAR_MODEL, SEG_BASE, SOURCE_SEPARATOR, link_or_copy, list_images, offline_env
from train.compact import compact_data
from train.release_models import CAR_CHECK, DAMAGE_CLASSIFIER, DAMAGE_SEGMENTER, PART_SEGMENTER, YOLO_WEIGHTS
from train.sources import GRADES


@dataclass
class BuildArguments:
    shared: str = field(default="../shared", metadata={"help": "the shared data and models folder"})
    out: str = field(default="models/offline")
    minutes: float = field(
        default=80.0,
        metadata={"help": "wall-clock budget of the trainings together (preparing and evaluating take ~20 more)"},
    )
    seg_share: float = field(default=0.55, metadata={"help": "fraction of --minutes for the damage segmenter"})
    clf_share: float = field(default=0.25, metadata={"help": "... for the damage classifier(s)"})
    parts_share: float = field(default=0.2, metadata={"help": "... for the part segmenter"})
    damage_model: str = field(
        default="graded",
        metadata={"help": "graded: one whole/minor/moderate/severe model; two: whole/damaged + a grade model",
                  "choices": ["graded", "two"]},
    )  # fmt: skip
    severity_share: float = field(default=0.4, metadata={"help": "two models: the grade model's part of clf_share"})
    seg_imgsz: int = field(default=512, metadata={"help": "training size; the profile runs the segmenter at it"})
    # type: dent / scratch / broken (lensor) + damage (nm / pd): the release's classes (a resumed run must keep them)
    seg_classes: str = field(default="type", metadata={"choices": ["damage", "type", "grade_type"]})
    seg_backgrounds: int = field(default=60, metadata={"help": "undamaged cars (empty labels) in its training"})
    seg_copies: str = field(default='{"nm": 4, "pd": 4}', metadata={"help": "JSON: oversampling per source"})
    seg_pseudo: int = field(
        default=0,
        metadata={"help": "with --resume: up to this many vds-severity training photos labelled by the release's "
                  "segmenter join its training (train.pseudo_labels)"},
    )  # fmt: skip
    # Ultralytics' optimizer defaults: nbs 16 with one warm-up epoch made both kinds worse
    # (docs/training-2026-11-28.md, run B)
    seg_extra: str = field(
        default='{"close_mosaic": 2, "val": false}',
        metadata={"help": "JSON: Ultralytics training arguments of the damage segmenter"},
    )
    parts_data: str = field(
        default="yb",
        metadata={"help": "yb: damaged-part polygons in yb's vocabulary; dsmlr: 18 parts of whole cars",
                  "choices": ["yb", "dsmlr"]},
    )  # fmt: skip
    part_imgsz: int = field(default=384)
    part_extra: str = field(default='{"close_mosaic": 2, "val": false}')
    calibration_photos: int = field(default=32, metadata={"help": "segmenter training photos kept for int8"})
    clf_source_copies: int = field(default=4, metadata={"help": "nm and pd photos repeated in the classifiers"})
    clf_learning_rate: float = field(default=5e-4)
    clf_resume_learning_rate: float = field(
        default=1e-4,
        metadata={"help": "with --resume: the classifier's peak rate (at 5e-4 a resumed run's dev score fell after "
                  "its first evaluation: docs/training.md, run 4)"},
    )  # fmt: skip
    clf_freeze_fraction: float = field(default=0.75, metadata={"help": "freeze the input-side backbone layers"})
    clf_epochs: int = field(default=8, metadata={"help": "upper bound; the time budget usually stops first"})
    seed: int = field(default=0)
    resume: str | None = field(
        default=None,
        metadata={"help": "a release folder (models/): continue training its models instead of the shared bases"},
    )
    compact: str | None = field(
        default=None,
        metadata={"help": "train from a compact copy (python -m train.compact) instead of ../shared: no held-out "
                  "photos there, so no evaluation; the thresholds stay the resumed release's"},
    )  # fmt: skip
    prepare_only: bool = field(default=False, metadata={"help": "write the prepared folders (work/) and stop"})
    keep_thresholds: bool = field(
        default=False,
        metadata={"help": "with --resume: the profile keeps the release's thresholds and rule (chosen on the held-out "
                  "figures through the CLI: docs/training.md) instead of the build's own sweeps"},
    )  # fmt: skip
    skip_segmenter: bool = field(default=False, metadata={"help": "reuse what is in --out"})
    skip_classifier: bool = field(default=False)
    skip_parts: bool = field(default=False)
    skip_car_class: bool = field(
        default=False, metadata={"help": "keep the car check as the profile names it (no 'damaged car' class fitted)"}
    )


# --- data ----------------------------------------------------------------------------------------


def _link(src: Path, folder: Path, source: str) -> None:
    link_or_copy(src, folder / f"{source}{SOURCE_SEPARATOR}{src.name}")


def prepare_car_check_folder(shared: Path, split, work: Path, per_source: int = 120) -> dict[str, int]:
    """car/: held-out photos of every car kind (up to ``per_source`` each; damage close-ups included);
    not_car/: the non-vehicle ImageNet photos."""
    root, rng = work / "car-check", random.Random(0)
    shutil.rmtree(root, ignore_errors=True)
    for source in ("nm", "pd", "lensor", "vds", "dsmlr", "web", "wce"):
        held = split.held_out[source]
        for path in rng.sample(held, min(per_source, len(held))):
            _link(path, root / "car", source)
    for path, name in build_data.imagenet_classes(Path(shared) / "data" / "imagenet-sample").items():
        if build_data.is_car_class(name):
            _link(path, root / "car", "imagenet")
        elif not is_vehicle_like(name):
            _link(path, root / "not_car", "imagenet")
    return {label: len(list_images(root / label)) for label in ("car", "not_car")}


def prepare_combination_folder(classify_root: Path, work: Path, max_per_source: int = 250) -> Path:
    """damaged/: held-out nm, pd, lensor and vds photos (up to ``max_per_source`` each); whole/: held-out web and
    dsmlr. Neither the classifier nor the segmenter trained on any of them."""
    root, rng = work / "damage-combine", random.Random(0)
    shutil.rmtree(root, ignore_errors=True)
    held = classify_root / "held-out"
    for side, sources, folders in (
        ("damaged", ("nm", "pd", "lensor", "vds"), (*GRADES, "damaged")),
        ("whole", ("web", "dsmlr"), ("whole",)),
    ):
        for source in sources:
            photos = [p for f in folders for p in list_images(held / f) if p.name.startswith(source + SOURCE_SEPARATOR)]
            for path in rng.sample(photos, min(max_per_source, len(photos))):
                link_or_copy(path, root / side / path.name)
    return root


def prepare_all(args: BuildArguments, shared: Path, work: Path) -> dict:
    """Every prepared folder of the build; returns their paths and counts."""
    split = build_data.load_split(shared, work, args.seed)
    fit, dev = split.carve(build_data.DEV_FRACTION, build_data.CLASSIFIER_SOURCES, args.seed)
    crops = build_data.dsmlr_part_crops(shared, fit, work / "crops" / "dsmlr", args.seed)
    classify = build_data.prepare_classifier_folders(shared, fit, dev, work, crops, args.clf_source_copies)
    seg = build_data.prepare_segmenter_data(
        shared, split, work, args.seg_classes, build_data.DAMAGE_POLYGON_SOURCES, json.loads(args.seg_copies),
        build_data.segmenter_backgrounds(split, crops, args.seg_backgrounds, args.seed), args.seg_imgsz,
    )  # fmt: skip
    if args.seg_pseudo:
        seg.counts["train_pseudo_vds"] = pseudo_labelled(args, split, seg.data_yaml.parent)
    return {
        "split": split,
        "classify": classify,
        "seg": seg,
        "parts": (build_parts.prepare_yb_part_data if args.parts_data == "yb" else build_parts.prepare_part_data)(
            shared, split, work
        ),
        "yb": build_parts.prepare_yb_held_out(shared, split, work),
        "combine": prepare_combination_folder(classify, work),
        "counts": {
            "held_out_split": split.counts(),
            "classify": build_data.folder_counts(classify),
            "segmenter": seg.counts,
            "car_check": prepare_car_check_folder(shared, split, work),
        },
    }


def pseudo_labelled(args: BuildArguments, split, root: Path) -> int:
    """vds-severity training photos labelled by the resumed release's segmenter, added to its training photos."""
    from train.pseudo_labels import PseudoRule, add_pseudo_labelled

    if not args.resume:
        raise ValueError("--seg_pseudo labels photos with the release's segmenter: add --resume")
    weights = start_of(args, DAMAGE_SEGMENTER, Path(args.shared).resolve() / SEG_BASE)
    names = build_data.seg_class_names(args.seg_classes)
    return add_pseudo_labelled(weights, split.train["vds"], root, names, args.seg_pseudo, args.seg_imgsz, PseudoRule(),
                               args.seed)  # fmt: skip


# --- training steps ------------------------------------------------------------------------------


def train_image_classifier(
    args: BuildArguments, classify: Path, work: Path, target: Path, kind: str, minutes: float
) -> Path:
    """Fine-tune the shared EfficientNet on the classifier folders read as ``kind`` (build_data.FOLDER_MAPS)."""
    from train.train_classifier import DataArguments, ModelArguments, default_training_arguments, train_classifier

    folder_map, labels = build_data.FOLDER_MAPS[kind]
    run_dir = work / f"{target.name}-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    from pipeline.accel.precision import cuda_available

    gpu = {"dataloader_num_workers": 8, "bf16": True} if cuda_available() else {}  # feed a GPU from 16 cores
    training_args = default_training_arguments(
        output_dir=str(run_dir), num_train_epochs=args.clf_epochs,
        learning_rate=args.clf_resume_learning_rate if args.resume else args.clf_learning_rate,
        eval_strategy="steps", save_strategy="steps", eval_steps=40, save_steps=40, seed=args.seed, **gpu,
    )  # fmt: skip
    base = start_of(args, DAMAGE_CLASSIFIER, Path(args.shared).resolve() / CAR_MODEL)
    train_classifier(
        ModelArguments(str(base), freeze_fraction=args.clf_freeze_fraction),
        DataArguments(
            train_dir=str(classify / "train"),
            validation_dir=str(classify / "dev"),
            labels=labels,
            folder_map=json.dumps(folder_map),
            early_stopping_patience=4,
            max_minutes=minutes,
        ),
        training_args,
    )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for item in run_dir.iterdir():  # the model, its processor and summary; not the checkpoints
        if item.is_file():
            shutil.copy2(item, target / item.name)
    return target


def start_of(args: BuildArguments, release_folder: str, base: Path) -> Path:
    """Where a model's training starts: the release's model when resuming (its weights, its classes), else the
    shared base."""
    if not args.resume:
        return base
    folder = Path(args.resume).resolve() / release_folder
    weights = folder / YOLO_WEIGHTS
    return weights if weights.is_file() else folder


def resumed_extra(args: BuildArguments, extra: str) -> str:
    """A resumed run warms up for one epoch, not Ultralytics' three, and its biases start from 0 instead of
    Ultralytics' 0.1 (80x AdamW's rate: run 2's mAP dipped after a restart): the weights are trained already. On a
    GPU, larger batches and data-loading workers (its machine has the cores to feed it)."""
    from pipeline.accel.precision import cuda_available

    options = json.loads(extra) if extra else {}
    if args.resume:
        options.setdefault("warmup_epochs", 1)
        options.setdefault("warmup_bias_lr", 0.0)
    if cuda_available():
        options.setdefault("batch", 32)
        options.setdefault("workers", 8)
    return json.dumps(options)


def train_yolo(
    args: BuildArguments, data_yaml: Path, target: Path, imgsz: int, minutes: float, extra: str, release_folder: str
) -> Path:
    from train.train_segmenter import SegmenterArguments, train_segmenter

    base = start_of(args, release_folder, Path(args.shared).resolve() / SEG_BASE)
    return train_segmenter(
        SegmenterArguments(
            data=str(data_yaml), model=str(base), output_dir=str(target), minutes=minutes, imgsz=imgsz,
            patience=100, seed=args.seed, extra=resumed_extra(args, extra),
        )
    )  # fmt: skip


# --- the build -----------------------------------------------------------------------------------


def train_models(args: BuildArguments, data: dict, work: Path, out: Path, lap: Callable[[str], None]) -> dict:
    """Train what is not skipped; returns the profile's model sections."""
    clf_minutes = args.minutes * args.clf_share
    models = {"damage": "damage-classifier"}
    if args.damage_model == "two":
        models["severity"] = "severity-classifier"
    if not args.skip_classifier:
        damage_minutes = clf_minutes * (1 - args.severity_share) if args.damage_model == "two" else clf_minutes
        kind = "damage" if args.damage_model == "two" else "graded"
        train_image_classifier(args, data["classify"], work, out / "damage-classifier", kind, damage_minutes)
        lap("train_damage_classifier")
        if args.damage_model == "two":
            minutes = clf_minutes * args.severity_share
            train_image_classifier(args, data["classify"], work, out / "severity-classifier", "severity", minutes)
            lap("train_severity_classifier")
    models["segmenter"] = "segmenter/best.pt"
    if not args.skip_segmenter:
        seg_minutes = args.minutes * args.seg_share
        train_yolo(
            args, data["seg"].data_yaml, out / "segmenter", args.seg_imgsz, seg_minutes, args.seg_extra,
            DAMAGE_SEGMENTER,
        )  # fmt: skip
        lap("train_segmenter")
    models["parts"] = "parts/best.pt"
    if not args.skip_parts:
        part_minutes = args.minutes * args.parts_share
        train_yolo(args, data["parts"], out / "parts", args.part_imgsz, part_minutes, args.part_extra, PART_SEGMENTER)
        lap("train_parts")
    return models


def trained_sizes(args: BuildArguments) -> dict[str, int]:
    """The sizes this build trained its segmenters at: a YOLO-seg scores worse away from its training size (run 9
    in docs/training.md: trained at 448, run at the release's 512, nm/pd mask mAP50 0.234 -> 0.188). A skipped
    segmenter keeps the resumed release's size."""
    sizes = {} if args.skip_segmenter else {"seg_image_size": args.seg_imgsz}
    return sizes | ({} if args.skip_parts else {"part_image_size": args.part_imgsz})


def evaluated_thresholds(args: BuildArguments, data: dict, shared: Path, out: Path, models: dict, laps) -> dict:
    from train.build_eval import evaluate_build

    return evaluate_build(args, data, shared, out, models, laps)


def build(args: BuildArguments) -> Path:
    offline_env()
    laps = Laps()
    shared, out = Path(args.shared).resolve(), Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = compact_data(Path(args.compact)) if args.compact else prepare_all(args, shared, work)
    if data["parts"] is None and not args.skip_parts:  # before any training time is spent
        raise ValueError(f"{args.compact} has no part set (train.compact --what damage): add --skip_parts")
    laps("prepare")
    if args.prepare_only:
        return work
    models = train_models(args, data, work, out, laps)
    if args.compact or (args.keep_thresholds and args.resume):
        # The release's thresholds were chosen on the CLI's held-out figures (train.release_eval measures the run
        # again), so the build's own ~8-minute sweep would only be thrown away.
        results = carried_thresholds(args.resume)
        results["runtime"] |= trained_sizes(args)  # the release's thresholds, but each model at its training size
        car = Path(args.resume).resolve() / CAR_CHECK if args.resume else shared / CAR_MODEL
    else:
        results, car = evaluated_thresholds(args, data, shared, out, models, laps), shared / CAR_MODEL
    if not args.compact:  # a compact copy has no segmenter training folder to take calibration photos from
        calibration = copy_calibration_photos(data["seg"].data_yaml, out, args.calibration_photos, args.seed)
        results["runtime"]["calibration_photos"] = calibration.name
    profile = write_profile(out, car, models, results["thresholds"], results["runtime"])
    if not args.compact and not args.skip_car_class:  # the car check and its threshold: train.release_car's
        from train.release_car import CarClassArguments, build_car_check

        build_car_check(CarClassArguments(build=str(out), shared=str(shared), base=str(car), seed=args.seed))
        laps("car_class")
    summary = {
        "args": asdict(args),
        "epochs": epochs_trained(out),
        "machine": machine_name(),
        "wall_time_s": laps.total(),
        "timings_s": laps.timings,
        "counts": data.get("counts", {}),
        **results["headline"],
        "profile": str(profile),
    }
    (out / "build_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(json.dumps(summary, indent=2, default=str))
    return profile


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BuildArguments).parse_args_into_dataclasses(args=argv)
    print(build(args))


if __name__ == "__main__":
    main()
