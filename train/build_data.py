"""The build's datasets, all cut from the one held-out split of ``train.sources``.

Each function writes one prepared folder under ``work/`` (symlinks to ../shared, except resized copies and crops)
and returns what training or evaluation needs (the part segmenter's data: ``train.build_parts``). Usable alone for
experiments::

    python -m train.build_data --shared ../shared --work /tmp/work --what segmenter --seg_classes damage
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from train.build_parts import prepare_part_data, prepare_yb_held_out
from train.common import SOURCE_SEPARATOR, link_or_copy, list_images, name_bucket
from train.prepare import Sample, write_data_yaml, write_yolo_split
from train.sources import GRADES, HeldOutSplit, keep, read_damage_polygons, worst_grade

DAMAGE_POLYGON_SOURCES = ("nm", "pd", "lensor")
DAMAGE_TYPES = ("dent", "scratch", "broken")
DEV_FRACTION = 0.08  # of the classifiers' training photos: chooses their checkpoints


# --- damage segmenter ----------------------------------------------------------------------------


def damage_class(name: str, mode: str) -> str:
    """A polygon's class under ``mode``: damage (one class), type (dent / scratch / broken; nm and pd polygons
    carry no type and stay "damage"), or grade_type (lensor's own "minor-dent" ...)."""
    if mode == "damage":
        return "damage"
    kind = name.split("-")[-1]
    if mode == "type":
        return kind if kind in DAMAGE_TYPES else "damage"
    return name if kind in DAMAGE_TYPES else "damage"


def seg_class_names(mode: str) -> list[str]:
    if mode == "damage":
        return ["damage"]
    if mode == "type":
        return [*DAMAGE_TYPES, "damage"]
    grade_types = [f"{g}-{t}" for g in GRADES for t in DAMAGE_TYPES if (g, t) != ("minor", "broken")]
    return [*grade_types, "damage"]


def relabel(samples: Sequence[Sample], mode: str) -> list[Sample]:
    return [Sample(s.image, [(damage_class(n, mode), p) for n, p in s.polygons]) for s in samples]


def resized_copy(src: Path, dst: Path, max_side: int) -> Path:
    """A JPEG copy no larger than ``max_side`` (EXIF rotation applied): decoded once at training size instead of
    at 1024-2048 px every time the cache is filled. Smaller photos are linked as they are."""
    from PIL import Image, ImageOps

    with Image.open(src) as image:
        if max(image.size) <= max_side and image.getexif().get(0x0112, 1) == 1:
            link_or_copy(src, dst)
            return dst
        # A JPEG decodes at 1/2 .. 1/8 scale (still >= 2x the target, as thumbnail() itself would on a fresh file):
        # a third of the time of a full decode and a LANCZOS pass over every pixel of a 2048-px photo.
        image.draft("RGB", (2 * max_side, 2 * max_side))
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((max_side, max_side), Image.LANCZOS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        image.save(dst.with_suffix(".jpg"), quality=95)
    return dst.with_suffix(".jpg")


def write_resized_split(samples: Sequence[Sample], out_dir: Path, split: str, names: Sequence[str], prefix: str,
                        max_side: int | None) -> int:  # fmt: skip
    """``write_yolo_split`` on resized copies (YOLO labels are relative, so they do not change)."""
    if not max_side:
        return write_yolo_split(samples, out_dir, split, names, prefix)
    staged = out_dir / "resized" / prefix
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # PIL decodes and resizes outside the GIL
        copies = list(pool.map(lambda s: _resized_sample(s, staged / f"{s.image.stem}{s.image.suffix.lower()}",
                                                         max_side), samples))  # fmt: skip
    return write_yolo_split(copies, out_dir, split, names, prefix)


def _resized_sample(sample: Sample, dst: Path, max_side: int) -> Sample:
    """The sample on a resized copy, its polygons (absolute pixels) scaled alike."""
    from train.prepare import image_size

    width, _ = image_size(sample.image)
    copy = resized_copy(sample.image, dst, max_side)
    scale = image_size(copy)[0] / width
    return Sample(copy, [(name, polygon * scale) for name, polygon in sample.polygons])


def write_eval_yaml(root: Path, names: Sequence[str], val_dir: str, name: str) -> Path:
    """A data yaml whose val split is ``val_dir``: each held-out kind is measured on its own."""
    text = write_data_yaml(root, names).read_text().replace("val: val/images", f"val: {val_dir}/images")
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class SegmenterData:
    data_yaml: Path  # train + all held-out photos as val
    eval_yamls: dict[str, Path]  # kind ("nmpd", "lensor") -> data yaml whose val is that kind's held-out photos
    counts: dict[str, int] = field(default_factory=dict)


def prepare_segmenter_data(
    shared: Path,
    split: HeldOutSplit,
    work: Path,
    classes: str = "damage",
    sources: Sequence[str] = DAMAGE_POLYGON_SOURCES,
    copies: dict[str, int] | None = None,
    backgrounds: Sequence[Path] = (),
    max_side: int | None = None,
) -> SegmenterData:
    """Damage polygons -> YOLO-seg: training photos of ``sources`` (``copies`` times each, resized to
    ``max_side``), ``backgrounds`` (undamaged cars, empty labels); val = held-out nm + pd + lensor, and one
    yaml per kind for the per-kind figures. Held-out photos are never resized: they are measured as uploaded."""
    root = work / "damage-seg"
    shutil.rmtree(root, ignore_errors=True)
    names, copies, counts = seg_class_names(classes), copies or {}, {}
    for source in DAMAGE_POLYGON_SOURCES:
        samples = relabel(read_damage_polygons(shared, source), classes)
        held = keep(samples, split.held_out[source])
        kind = "lensor" if source == "lensor" else "nmpd"
        counts[f"val_{source}"] = write_yolo_split(held, root, "val", names, source)
        write_yolo_split(held, root, f"val-{kind}", names, source)
        if source not in sources:
            continue
        train = keep(samples, split.train[source])
        for copy in range(copies.get(source, 1)):
            tag = source if copy == 0 else f"{source}{copy}"
            counts[f"train_{tag}"] = write_resized_split(train, root, "train", names, tag, max_side)
    background = [Sample(p) for p in backgrounds]
    counts["train_background"] = write_resized_split(background, root, "train", names, "background", max_side)
    eval_yamls = {kind: write_eval_yaml(root, names, f"val-{kind}", f"data-{kind}.yaml") for kind in ("nmpd", "lensor")}
    return SegmenterData(write_data_yaml(root, names), eval_yamls, counts)


def segmenter_backgrounds(split: HeldOutSplit, crops: Sequence[Path], count: int, seed: int = 0) -> list[Path]:
    """Undamaged training cars as background images: a third close-ups of parts (``crops``), the rest whole
    cars of dsmlr and web-whole-cars (training photos only)."""
    rng = random.Random(seed)
    n_crops = min(len(crops), count // 3)
    whole = [*split.train["dsmlr"], *split.train["web"]]
    return rng.sample(whole, min(len(whole), count - n_crops)) + rng.sample(list(crops), n_crops)


# --- classifiers: damage check, grade ------------------------------------------------------------

# Folders of the classifier data: the labels, plus "damaged" for damaged photos whose grade is unknown (nm, pd).
CLASSIFIER_FOLDERS = ("whole", "minor", "moderate", "severe", "damaged")
CLASSIFIER_SOURCES = ("vds", "lensor", "nm", "pd", "dsmlr", "web", "wce")
# How each model reads those folders (train_classifier --folder_map): the damage check sees whole vs damaged, the
# one-pass model the grades (a photo of unknown grade is "one of the three"), the severity model the grades only.
FOLDER_MAPS = {
    "damage": ({"minor": "damaged", "moderate": "damaged", "severe": "damaged"}, ["whole", "damaged"]),
    "graded": ({"damaged": list(GRADES)}, ["whole", *GRADES]),
    "severity": ({"whole": None, "damaged": None}, list(GRADES)),
}


def classifier_label(source: str, path: Path, lensor_grades: dict[Path, str | None]) -> str | None:
    """The folder a photo goes to; None: not used (lensor photos without polygons)."""
    if source == "vds":
        return path.parent.name  # vds-severity/<split>/<grade>/
    if source == "lensor":
        return lensor_grades.get(path)
    return "damaged" if source in ("nm", "pd") else "whole"


def link_photos(paths: Sequence[Path], root: Path, source: str, label_of: Callable, copies: int = 1) -> int:
    count = 0
    for path in paths:
        label = label_of(source, path)
        for copy in range(copies if label else 0):
            link_or_copy(path, root / label / f"{source}{copy or ''}{SOURCE_SEPARATOR}{path.name}")
            count += 1
    return count


def prepare_classifier_folders(
    shared: Path, split: HeldOutSplit, dev: dict[str, list[Path]], work: Path, crops: Sequence[Path], copies: int = 4
) -> Path:
    """``work/classify/{train,dev,held-out}/<folder>/`` (see CLASSIFIER_FOLDERS); returns that root.

    train: the training photos (nm and pd ``copies`` times: two small sources of street photos), close-ups of
    undamaged dsmlr parts (``crops``) and crops of nm / pd photos away from their damage polygons as whole photos
    (so that neither a close-up nor a street scene means damaged); dev: chooses checkpoints; held-out: the figures
    (+ the ImageNet-sample car classes as whole cars of a source no model trains on).
    """
    root = work / "classify"
    shutil.rmtree(root, ignore_errors=True)
    grades = {s.image: worst_grade(s) for s in read_damage_polygons(shared, "lensor")}

    def label_of(source: str, path: Path) -> str | None:
        return classifier_label(source, path, grades)

    for source in CLASSIFIER_SOURCES:
        link_photos(split.train[source], root / "train", source, label_of, copies if source in ("nm", "pd") else 1)
        link_photos(dev.get(source, []), root / "dev", source, label_of)
        link_photos(split.held_out[source], root / "held-out", source, label_of)
    for path in crops:
        link_or_copy(path, root / "train" / "whole" / path.name)
    for source in ("nm", "pd"):
        samples = keep(read_damage_polygons(shared, source), split.train[source])
        panels = crops_away_from_damage(samples, work / "crops" / source, f"{source}crop")
        for path in panels:
            link_photos([path], root / "train", f"{source}crop", lambda *_: "whole", max(1, copies // 2))
    for path, name in imagenet_classes(Path(shared) / "data" / "imagenet-sample").items():
        if is_car_class(name):
            link_or_copy(path, root / "held-out" / "whole" / f"imagenet{SOURCE_SEPARATOR}{path.name}")
    return root


def folder_counts(root: Path) -> dict[str, dict[str, int]]:
    return {
        split.name: {label.name: len(list_images(label)) for label in sorted(split.iterdir()) if label.is_dir()}
        for split in sorted(Path(root).iterdir())
        if split.is_dir()
    }


# --- crops ---------------------------------------------------------------------------------------


def part_crops(coco_json: Path, image_names: set[str], out_folder: Path, seed: int = 0, zoom: float = 1.8) -> int:
    """Close-ups of undamaged parts (one per photo, around a random part polygon): close-ups must not mean damage."""
    from PIL import Image

    data = json.loads(coco_json.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    boxes: dict[int, list] = {}
    for ann in data["annotations"]:
        if names[ann["category_id"]] != "_background_" and ann.get("bbox"):
            boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    rng, count = random.Random(seed), 0
    out_folder.mkdir(parents=True, exist_ok=True)
    for img in data["images"]:
        if img["file_name"] not in image_names or img["id"] not in boxes:
            continue
        x, y, w, h = rng.choice(boxes[img["id"]])
        with Image.open(coco_json.parent / "JPEGImages" / img["file_name"]) as image:
            side = max(max(w, h) * zoom, min(image.size) * 0.3)
            cx, cy = x + w / 2, y + h / 2
            box = (max(0, cx - side / 2), max(0, cy - side / 2), min(image.width, cx + side / 2),
                   min(image.height, cy + side / 2))  # fmt: skip
            image.convert("RGB").crop(tuple(round(v) for v in box)).save(
                out_folder / f"dsmlrcrop{SOURCE_SEPARATOR}{Path(img['file_name']).stem}.jpg", quality=92
            )
        count += 1
    return count


def crops_away_from_damage(
    samples: Sequence[Sample], out_folder: Path, tag: str, seed: int = 0, per_photo: int = 2
) -> list[Path]:
    """Square crops of damaged-car photos that touch no damage polygon (nor a margin of 5 % around it): whole
    panels from the same photos, so that a street photo's look does not mean "damaged". Up to ``per_photo``
    a photo; none where the damage leaves no room."""
    from PIL import Image

    rng, saved = random.Random(seed), []
    shutil.rmtree(out_folder, ignore_errors=True)
    out_folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        with Image.open(sample.image) as image:
            photo = image.convert("RGB")
        margin = 0.05 * max(photo.size)
        boxes = [(*(p.min(axis=0) - margin), *(p.max(axis=0) + margin)) for _, p in sample.polygons]
        found = 0
        for _ in range(200):
            side = rng.uniform(0.4, 0.75) * min(photo.size)
            x, y = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
            if any(x < x2 and x + side > x1 and y < y2 and y + side > y1 for x1, y1, x2, y2 in boxes):
                continue
            saved.append(out_folder / f"{tag}{SOURCE_SEPARATOR}{sample.image.stem}_{found}.jpg")
            photo.crop((round(x), round(y), round(x + side), round(y + side))).save(saved[-1], quality=92)
            found += 1
            if found == per_photo:
                break
    return saved


# --- ImageNet sample -----------------------------------------------------------------------------


def imagenet_classes(folder: Path) -> dict[Path, str]:
    """ImageNet-sample photo -> class words ("sports_car")."""
    return {p: p.stem.split("_", 1)[1] for p in list_images(folder) if "_" in p.stem}


# ImageNet-sample file names ("n04285008_sports_car.jpg") of classes that are no ordinary non-vehicle photo:
# kept out of the car check's negatives (a bus is no car, but no fair negative either).
VEHICLE_WORDS = (
    "car", "cab", "van", "bus", "truck", "wagon", "jeep", "limousine", "pickup", "racer", "ambulance",
    "Model_T", "grille", "locomotive", "tram", "trolley", "bike", "bicycle", "cycle", "moped", "scooter",
    "go-kart", "golfcart", "snowmobile", "snowplow", "forklift", "harvester", "half_track", "tank", "amphibian",
    "jinrikisha", "cart", "recreational_vehicle", "mobile_home", "fire_engine", "trailer", "tractor", "odometer",
    "gas_pump", "seat_belt", "wreck", "plow", "sled", "barrow", "tow", "speedboat", "radiator", "parking_meter",
    "traffic_light", "street_sign", "crash_helmet", "minivan", "convertible", "minibus",
)  # fmt: skip


def is_vehicle_like(name: str) -> bool:
    return any(word.lower() in name.lower() for word in VEHICLE_WORDS)


def imagenet_fitting_half(path: Path) -> bool:
    """ImageNet-sample photos split once, by file name: the car check's added class is fitted on one half of the
    non-vehicle photos (train.release_car), the release evaluation draws its non-car photos from the other, so no
    evaluation of any size scores the car check on a photo it was fitted on."""
    return name_bucket(path, 2) == 0


def is_car_class(name: str) -> bool:
    from pipeline.car import IMAGENET_CAR_CLASSES

    return name.replace("_", " ") in IMAGENET_CAR_CLASSES


# --- CLI (experiments) -----------------------------------------------------------------------------


@dataclass
class BuildDataArguments:
    shared: str = field(default="../shared")
    work: str = field(default="models/offline/work")
    what: str = field(default="segmenter", metadata={"choices": ["split", "segmenter", "classifier", "parts"]})
    clf_copies: int = field(default=4, metadata={"help": "nm and pd photos are repeated this often"})
    seed: int = field(default=0)
    seg_classes: str = field(default="damage", metadata={"choices": ["damage", "type", "grade_type"]})
    seg_sources: str = field(default="nm,pd,lensor")
    seg_copies: str = field(default="{}", metadata={"help": 'JSON, e.g. {"nm": 3, "pd": 3}: oversampling'})
    seg_backgrounds: int = field(default=60)
    seg_max_side: int | None = field(default=None, metadata={"help": "resize training photos to this long side"})


def load_split(shared: Path, work: Path, seed: int = 0) -> HeldOutSplit:
    from train.sources import held_out_split

    split = held_out_split(shared, seed, hash_cache=work / "phash-cache.json")
    split.save(work / "held_out_split.json")
    return split


def run(args: BuildDataArguments, on_done: Callable[[dict], None] = print) -> None:
    shared, work = Path(args.shared).resolve(), Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    split = load_split(shared, work, args.seed)
    if args.what == "split":
        on_done(split.counts())
        return
    fit, dev = split.carve(DEV_FRACTION, CLASSIFIER_SOURCES, args.seed)
    crops = dsmlr_part_crops(shared, fit, work / "crops" / "dsmlr", args.seed)
    if args.what == "parts":
        on_done(
            {"parts": str(prepare_part_data(shared, split, work)), "yb": str(prepare_yb_held_out(shared, split, work))}
        )
        return
    if args.what == "classifier":
        root = prepare_classifier_folders(shared, fit, dev, work, crops, args.clf_copies)
        on_done(folder_counts(root))
        return
    data = prepare_segmenter_data(
        shared,
        split,
        work,
        args.seg_classes,
        tuple(args.seg_sources.split(",")),
        json.loads(args.seg_copies),
        segmenter_backgrounds(split, crops, args.seg_backgrounds, args.seed),
        args.seg_max_side,
    )
    on_done({"data_yaml": str(data.data_yaml), **{k: str(v) for k, v in data.eval_yamls.items()}, **data.counts})


def dsmlr_part_crops(shared: Path, split: HeldOutSplit, out_folder: Path, seed: int = 0) -> list[Path]:
    """Close-ups of undamaged parts of the dsmlr training photos (one a photo): close-up must not mean damaged."""
    shutil.rmtree(out_folder, ignore_errors=True)
    names = {p.name for p in split.train["dsmlr"]}
    part_crops(Path(shared) / "data" / "dsmlr-carparts" / "annotations.json", names, out_folder, seed)
    return list_images(out_folder)


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BuildDataArguments).parse_args_into_dataclasses(args=argv)
    run(args, lambda result: print(json.dumps(result, indent=2)))


if __name__ == "__main__":
    main()
