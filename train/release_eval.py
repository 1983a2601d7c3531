"""The release's figures as a user gets them: held-out photos of every kind through ``python -m pipeline DIR --out
OUT`` (the CLI, the profile's thresholds), then report.csv and predictions.json scored against the sets' labels.

    python -m train.release_eval --shared ../shared --work BUILD/work [--profile models/profile.toml] --out eval.json

``--work`` is a build's work folder (its ``held_out_split.json``: no model of the build trained on these photos).
The figures are the issue's targets: car and damage checks (balanced accuracies), damaged photos with a mask,
class-agnostic mask mAP50 per kind, damage-type accuracy (lensor), severity accuracy and graded share, damaged-part
F1 (yb vocabulary).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.common import SOURCE_SEPARATOR, offline_env
from train.evaluate.damaged_parts import part_groups
from train.evaluate.metrics import set_f1
from train.release_masks import mask_figures, staged_name
from train.sources import GRADES, HeldOutSplit, Sample

# Kind of held-out photo -> its sources. Damaged kinds first: the damage check's positives.
DAMAGED_KINDS = {"nmpd": ("nm", "pd"), "lensor": ("lensor",), "vds": ("vds",)}
WHOLE_KINDS = {"dsmlr": ("dsmlr",), "web": ("web",), "wce": ("wce",)}
PART_KIND = "yb"
NOT_CAR, IMAGENET_CAR = "not_car", "imagenet_car"


@dataclass
class Photo:
    kind: str
    path: Path  # in the evaluation folder
    grade: str | None = None
    sample: Sample | None = None  # polygons in the photo's pixels (nm / pd / lensor / yb)


def split_from(path: Path, shared: Path) -> HeldOutSplit:
    """A build's work folder (its held_out_split.json, absolute paths) or the release's held_out.json (paths
    relative to the shared folder, held-out photos only)."""
    file = path / "held_out_split.json" if path.is_dir() else path
    data = json.loads(file.read_text(encoding="utf-8"))
    located = ({s: [shared / p for p in ps] for s, ps in data.get(k, {}).items()} for k in ("train", "held_out"))
    return HeldOutSplit(*located)


def held_out_photos(shared: Path, split: HeldOutSplit, per_kind: int, seed: int = 0) -> dict[str, list[Photo]]:
    """kind -> its held-out photos (at most ``per_kind`` each, drawn at random), with their labels."""
    from train.build_data import imagenet_classes, imagenet_fitting_half, is_car_class, is_vehicle_like
    from train.sources import read_damage_polygons, read_yb, worst_grade

    rng, kinds = random.Random(seed), {}
    samples = {s: {x.image: x for x in read_damage_polygons(shared, s)} for s in ("nm", "pd", "lensor")}
    samples["yb"] = {x.image: x for x in read_yb(shared)}
    for kind, sources in {**DAMAGED_KINDS, **WHOLE_KINDS, PART_KIND: ("yb",)}.items():
        photos = []
        for source in sources:
            for path in split.held_out.get(source, []):
                sample = samples.get(source, {}).get(path)
                grade = path.parent.name if source == "vds" else worst_grade(sample) if source == "lensor" else None
                photos.append(Photo(kind, path, grade if grade in GRADES else None, sample))
        kinds[kind] = rng.sample(photos, min(per_kind, len(photos)))
    imagenet = imagenet_classes(Path(shared) / "data" / "imagenet-sample")
    kinds[IMAGENET_CAR] = [Photo(IMAGENET_CAR, p) for p, name in imagenet.items() if is_car_class(name)]
    not_car = [Photo(NOT_CAR, p) for p, name in imagenet.items() if not is_vehicle_like(name)]
    not_car = [photo for photo in not_car if not imagenet_fitting_half(photo.path)]  # the car check's are apart
    kinds[NOT_CAR] = rng.sample(not_car, min(per_kind, len(not_car)))
    return kinds


def stage_photos(kinds: dict[str, list[Photo]], folder: Path) -> dict[str, Photo]:
    """Copies under ``folder/<kind>/`` (the CLI reads plain files); returns relative name -> photo."""
    shutil.rmtree(folder, ignore_errors=True)
    staged = {}
    for kind, photos in kinds.items():
        (folder / kind).mkdir(parents=True)
        for photo in photos:
            name = f"{kind}/{photo.path.parent.name}{SOURCE_SEPARATOR}{photo.path.name}"
            shutil.copyfile(photo.path, folder / name)
            staged[name] = Photo(photo.kind, folder / name, photo.grade, photo.sample)
    return staged


def run_cli(photos: Path, out: Path, profile: str | None, precision: str | None = None) -> tuple[list[dict], dict]:
    """``python -m pipeline photos --out out [--models profile] [--precision P]``: the rows of report.csv and
    predictions.json."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline", str(photos), "--out", str(out)]
    command += ["--models", profile] if profile else []
    command += ["--precision", precision] if precision else []
    with (out.parent / "cli.log").open("w", encoding="utf-8") as log:  # its progress and any error lines
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=log)
    with (out / "report.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return rows, json.loads((out / "predictions.json").read_text(encoding="utf-8"))


def rows_by_photo(rows: list[dict], staged: dict[str, Photo]) -> dict[str, dict]:
    """report.csv rows by the staged name (the CLI names each file under the input folder's name)."""
    named = ((staged_name(row["file"]), row) for row in rows if row["status"] == "ok")
    return {name: row for name, row in named if name in staged}


def balanced_accuracy(positives: Sequence[bool], negatives: Sequence[bool]) -> float | None:
    """Mean of the recall on each side (``positives``: called positive?; ``negatives``: called positive?)."""
    if not positives or not negatives:
        return None
    return float((np.mean(positives) + 1 - np.mean(negatives)) / 2)


def _true(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "yes"}


def check_figures(rows: dict[str, dict], staged: dict[str, Photo]) -> dict:
    """Car check, damage check, damaged photos with a mask, severity."""
    by_kind: dict[str, list[dict]] = {}
    for name, row in rows.items():
        by_kind.setdefault(staged[name].kind, []).append(row)
    cars = [_true(r["is_car"]) for k, rs in by_kind.items() if k != NOT_CAR for r in rs]
    damaged = [r for k in DAMAGED_KINDS for r in by_kind.get(k, [])]
    called = [_true(r["is_damaged"]) for r in damaged]
    figures = {
        "car_balanced_accuracy": balanced_accuracy(cars, [_true(r["is_car"]) for r in by_kind.get(NOT_CAR, [])]),
        "damaged_with_mask": float(np.mean([int(r["damage_count"] or 0) > 0 for r in damaged])) if damaged else None,
    }
    for kind in WHOLE_KINDS:
        whole = [_true(r["is_damaged"]) for r in by_kind.get(kind, [])]
        figures[f"damage_balanced_accuracy_vs_{kind}"] = balanced_accuracy(called, whole)
    figures["verdict_accuracy"] = verdict_accuracy(by_kind)
    figures["damaged_with_mask_by_kind"] = {
        k: float(np.mean([int(r["damage_count"] or 0) > 0 for r in by_kind[k]]))
        for k in DAMAGED_KINDS
        if by_kind.get(k)
    }
    return figures | severity_figures(rows, staged)


def verdict_accuracy(by_kind: dict[str, list[dict]]) -> float | None:
    """The share of photos whose verdict (no car / whole car / damaged car) is right, over the kinds whose truth is
    known (ImageNet's cars carry no damage label)."""
    truth = {NOT_CAR: (False, False)} | dict.fromkeys(WHOLE_KINDS, (True, False))
    truth |= dict.fromkeys([*DAMAGED_KINDS, PART_KIND], (True, True))
    right = [
        (_true(row["is_car"]), _true(row["is_car"]) and _true(row["is_damaged"])) == truth[kind]
        for kind, rows in by_kind.items()
        if kind in truth
        for row in rows
    ]
    return float(np.mean(right)) if right else None


def severity_figures(rows: dict[str, dict], staged: dict[str, Photo]) -> dict:
    graded = [(staged[n].grade, r["severity"]) for n, r in rows.items() if staged[n].grade]
    given = [(truth, guess) for truth, guess in graded if guess]
    return {
        "severity_accuracy": float(np.mean([t == g for t, g in given])) if given else None,
        "severity_graded_share": len(given) / len(graded) if graded else None,
        "severity_photos": len(graded),
    }


def part_figures(rows: dict[str, dict], staged: dict[str, Photo]) -> dict:
    """Damaged-part F1: report.csv's damaged_parts vs the yb labels, both in PART_GROUPS' vocabulary (the
    comparison of ``train.evaluate.damaged_parts``, the build's figure, on the CLI's answers)."""
    truth, predicted = [], []
    for name, row in rows.items():
        photo = staged[name]
        if photo.kind != PART_KIND or photo.sample is None:
            continue
        truth.append(part_groups(label for label, _ in photo.sample.polygons))
        predicted.append(part_groups(row["damaged_parts"].split(";")))
    scores = set_f1(truth, predicted) if truth else {}
    return {"damaged_part_f1": scores["all"]["f1"] if scores else None, "damaged_part_scores": scores}


@dataclass
class EvalArguments:
    shared: str = field(default="../shared")
    work: str = field(
        default="models/held_out.json",
        metadata={"help": "the release's held-out list, or a build's work folder (its held_out_split.json)"},
    )
    profile: str | None = field(default=None, metadata={"help": "default: the release (no --models)"})
    precision: str | None = field(default=None, metadata={"help": "the CLI's --precision (default: its own)"})
    out: str = field(default="release_eval.json")
    per_kind: int = field(default=300, metadata={"help": "at most this many held-out photos of each kind"})
    scratch: str = field(default="/tmp/release-eval", metadata={"help": "photos and the CLI's output go here"})


def evaluate_release(args: EvalArguments) -> dict:
    offline_env()
    shared, scratch = Path(args.shared).resolve(), Path(args.scratch)
    kinds = held_out_photos(shared, split_from(Path(args.work), shared), args.per_kind)
    staged = stage_photos(kinds, scratch / "photos")
    rows, coco = run_cli(scratch / "photos", scratch / "out", args.profile, args.precision)
    by_photo = rows_by_photo(rows, staged)
    figures = {"profile": args.profile or "release (default)", "counts": {k: len(v) for k, v in kinds.items()}}
    figures["precision"] = args.precision or "auto"
    figures |= {"analysed": len(by_photo), "files": len(staged)}
    figures |= check_figures(by_photo, staged) | part_figures(by_photo, staged) | mask_figures(coco, staged)
    Path(args.out).write_text(json.dumps(figures, indent=1, default=float) + "\n", encoding="utf-8")
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(args=argv)
    figures = evaluate_release(args)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=1, default=float))


if __name__ == "__main__":
    main()
