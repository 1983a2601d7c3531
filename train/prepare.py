"""Convert what people have into what training needs.

- VIA polygon json or COCO polygons -> an Ultralytics YOLO-seg dataset (``images/``, ``labels/``, ``data.yaml``);
- image folders ``<root>/<label>/...`` -> ``train/`` and ``val/`` splits;
- every split keeps near-duplicate photos (perceptual hash) on one side only.

Examples::

    python -m train.prepare --task via --inputs ../shared/data/nm-damage-via/train/via_region_data.json \
        --out /tmp/damage-seg --classes damage
    python -m train.prepare --task coco --inputs ../shared/data/dsmlr-carparts/annotations.json --out /tmp/parts
    python -m train.prepare --task folders --inputs my_photos --out /tmp/my-split --val_fraction 0.2
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.common import IMAGE_SUFFIXES, SOURCE_SEPARATOR, link_or_copy, list_images

Polygon = np.ndarray  # (N, 2) absolute pixel coordinates (x, y)


@dataclass
class Sample:
    """One photo and its polygons, as (class name, polygon) pairs."""

    image: Path
    polygons: list[tuple[str, Polygon]] = field(default_factory=list)


# --- readers -------------------------------------------------------------------------------------


def read_via(json_path: Path, label_key: str = "name", default_label: str = "damage") -> list[Sample]:
    """VIA 1.x/2.x project json (``regions`` as list or dict); images are looked up beside the json.

    Images the json lists but that are absent are skipped (some public exports have a few).
    """
    json_path = Path(json_path)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    data = data.get("_via_img_metadata", data)  # VIA 2 project files nest the image entries
    samples = []
    for entry in data.values():
        image = json_path.parent / entry["filename"]
        if not image.exists():
            continue
        regions = entry.get("regions") or []
        regions = regions.values() if isinstance(regions, dict) else regions
        polygons = []
        for region in regions:
            shape = region.get("shape_attributes", {})
            if shape.get("name") not in {"polygon", "polyline"}:
                continue
            points = np.stack([shape["all_points_x"], shape["all_points_y"]], axis=1).astype(float)
            label = str((region.get("region_attributes") or {}).get(label_key) or default_label).strip()
            if len(points) >= 3:
                polygons.append((label, points))
        samples.append(Sample(image, polygons))
    return samples


def read_coco(json_path: Path, image_dir: Path | None = None, skip: Iterable[str] = ("_background_",)) -> list[Sample]:
    """COCO instance json with polygon segmentations (RLE masks are skipped)."""
    json_path = Path(json_path)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[tuple[str, Polygon]]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        name = names[ann["category_id"]]
        if name in set(skip) or not isinstance(ann.get("segmentation"), list):
            continue
        for flat in ann["segmentation"]:
            points = np.asarray(flat, dtype=float).reshape(-1, 2)
            if len(points) >= 3:
                by_image[ann["image_id"]].append((name, points))
    samples = []
    for img in data["images"]:
        image = _find_image(json_path.parent, image_dir, img)
        if image is not None:
            samples.append(Sample(image, by_image[img["id"]]))
    return samples


def _find_image(json_dir: Path, image_dir: Path | None, img: dict) -> Path | None:
    candidates = [Path(image_dir) / img["file_name"]] if image_dir else []
    candidates += [json_dir / img["file_name"], json_dir / "images" / img["file_name"]]
    if img.get("path"):
        candidates.append(json_dir / img["path"])
    return next((c for c in candidates if c.exists()), None)


# --- YOLO-seg format -----------------------------------------------------------------------------


def polygon_to_yolo(class_id: int, polygon: Polygon, width: int, height: int) -> str:
    """One YOLO-seg label line: class id then x y pairs normalised to [0, 1]."""
    normalised = np.clip(np.asarray(polygon, dtype=float) / [width, height], 0.0, 1.0)
    return " ".join([str(class_id), *(f"{v:.6f}" for v in normalised.ravel())])


def yolo_to_polygon(line: str, width: int, height: int) -> tuple[int, Polygon]:
    values = line.split()
    points = np.asarray(values[1:], dtype=float).reshape(-1, 2) * [width, height]
    return int(values[0]), points


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as loaders see it: EXIF rotation applied, like cv2.imread does."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        rotated = image.getexif().get(0x0112, 1) in {5, 6, 7, 8}  # EXIF orientations that swap the axes
    return (height, width) if rotated else (width, height)


def write_yolo_split(
    samples: Sequence[Sample], out_dir: Path, split: str, names: Sequence[str], prefix: str = ""
) -> int:
    """Link the images under ``out_dir/<split>/images`` and write their label files; returns the count."""
    index = {name: i for i, name in enumerate(names)}
    count = 0
    for sample in samples:
        width, height = image_size(sample.image)
        stem = f"{prefix}{SOURCE_SEPARATOR}{sample.image.stem}" if prefix else sample.image.stem
        link_or_copy(sample.image, out_dir / split / "images" / f"{stem}{sample.image.suffix.lower()}")
        lines = [polygon_to_yolo(index[n], p, width, height) for n, p in sample.polygons if n in index]
        label = out_dir / split / "labels" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        count += 1
    return count


def write_data_yaml(out_dir: Path, names: Sequence[str], splits: Sequence[str] = ("train", "val")) -> Path:
    """An Ultralytics data yaml with an absolute root, so it works from any working directory."""
    out_dir = Path(out_dir).resolve()
    lines = [f"path: {out_dir}", "train: train/images", f"val: {'val' if 'val' in splits else splits[0]}/images"]
    lines += [f"nc: {len(names)}", "names:"] + [f"  {i}: {json.dumps(n)}" for i, n in enumerate(names)]
    path = out_dir / "data.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def class_names(samples: Iterable[Sample]) -> list[str]:
    return sorted({name for s in samples for name, _ in s.polygons})


# --- near-duplicate-aware splits -----------------------------------------------------------------


def perceptual_hashes(paths: Sequence[Path]) -> np.ndarray:
    """64-bit pHash of each image as a (N, 64) bool array."""
    import imagehash
    from PIL import Image

    def phash(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(imagehash.phash(image.convert("L")).hash, dtype=bool).ravel()

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # decoding is most of it, and PIL does it outside the GIL
        rows = list(pool.map(phash, paths))
    return np.stack(rows) if rows else np.zeros((0, 64), dtype=bool)


def near_duplicate_groups(paths: Sequence[Path], max_distance: int = 8) -> list[int]:
    """A group id per path: photos within ``max_distance`` bits of pHash (transitively) share a group."""
    hashes = perceptual_hashes(paths)
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(paths)):
        close = np.nonzero((hashes[i + 1 :] != hashes[i]).sum(axis=1) <= max_distance)[0] + i + 1
        for j in close:
            parent[find(int(j))] = find(i)
    return [find(i) for i in range(len(paths))]


def split_by_groups(
    items: Sequence, groups: Sequence[int], val_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Indices (train, val): whole groups go to one side; about ``val_fraction`` of the items go to val."""
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    order = list(by_group)
    random.Random(seed).shuffle(order)
    target, val = round(val_fraction * len(items)), []
    for g in order:
        if len(val) >= target:
            break
        val.extend(by_group[g])
    val_set = set(val)
    return [i for i in range(len(items)) if i not in val_set], sorted(val)


def split_samples(
    samples: Sequence[Sample], val_fraction: float, seed: int = 0, max_distance: int = 8
) -> tuple[list[Sample], list[Sample]]:
    groups = near_duplicate_groups([s.image for s in samples], max_distance)
    train, val = split_by_groups(samples, groups, val_fraction, seed)
    return [samples[i] for i in train], [samples[i] for i in val]


def build_yolo_dataset(
    sources: dict[str, list[Sample]],
    out_dir: Path,
    names: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_distance: int = 8,
) -> Path:
    """Several sources (prefix -> samples) into one YOLO-seg dataset, each source split near-duplicate-aware."""
    splits = {
        prefix: split_samples(samples, val_fraction, seed, max_distance) if val_fraction > 0 else (samples, [])
        for prefix, samples in sources.items()
    }
    return write_yolo_dataset(splits, out_dir, names)


def write_yolo_dataset(
    splits: dict[str, tuple[Sequence[Sample], Sequence[Sample]]], out_dir: Path, names: Sequence[str] | None = None
) -> Path:
    """Sources already split (prefix -> (train, val) samples) into one YOLO-seg dataset; returns its data yaml."""
    names = list(names) if names else class_names(s for train, val in splits.values() for s in [*train, *val])
    for prefix, (train, val) in splits.items():
        write_yolo_split(train, out_dir, "train", names, prefix)
        write_yolo_split(val, out_dir, "val", names, prefix)
    return write_data_yaml(out_dir, names)


def split_image_folder(
    root: Path, out_dir: Path, val_fraction: float = 0.2, seed: int = 0, max_distance: int = 8, prefix: str = ""
) -> dict[str, dict[str, int]]:
    """``root/<label>/**/*.jpg`` -> ``out_dir/{train,val}/<label>/`` (symlinks); duplicates stay on one side.

    Hashing is done over all labels together so a photo filed under two labels cannot straddle the split.
    """
    items = [(label.name, p) for label in sorted(Path(root).iterdir()) if label.is_dir() for p in list_images(label)]
    groups = near_duplicate_groups([p for _, p in items], max_distance)
    train, val = split_by_groups(items, groups, val_fraction, seed)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for split, indices in (("train", train), ("val", val)):
        for i in indices:
            label, path = items[i]
            name = f"{prefix}{SOURCE_SEPARATOR}{path.name}" if prefix else path.name
            link_or_copy(path, Path(out_dir) / split / label / name)
            counts[split][label] = counts[split].get(label, 0) + 1
    return counts


# --- CLI -------------------------------------------------------------------------------------------


@dataclass
class PrepareArguments:
    task: str = field(metadata={"help": "via | coco | folders", "choices": ["via", "coco", "folders"]})
    inputs: list[str] = field(metadata={"help": "VIA/COCO json files, or the image-folder root (folders)"})
    out: str = field(metadata={"help": "output folder"})
    classes: list[str] | None = field(default=None, metadata={"help": "class names to keep, in id order"})
    label_key: str = field(default="name", metadata={"help": "VIA region attribute holding the class"})
    image_dir: str | None = field(default=None, metadata={"help": "COCO images folder if not beside the json"})
    val_fraction: float = field(default=0.2)
    seed: int = field(default=0)
    hash_distance: int = field(default=8, metadata={"help": "pHash bits within which photos are near-duplicates"})


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(PrepareArguments).parse_args_into_dataclasses(args=argv)
    out = Path(args.out)
    if args.task == "folders":
        counts = split_image_folder(Path(args.inputs[0]), out, args.val_fraction, args.seed, args.hash_distance)
        print(json.dumps(counts, indent=2))
        return
    sources = {}
    for i, path in enumerate(args.inputs):
        path = Path(path)
        samples = read_via(path, args.label_key) if args.task == "via" else read_coco(path, args.image_dir)
        sources[f"s{i}" if len(args.inputs) > 1 else ""] = samples
    data_yaml = build_yolo_dataset(sources, out, args.classes, args.val_fraction, args.seed, args.hash_distance)
    print(f"wrote {data_yaml}")


if __name__ == "__main__":
    main()


__all__ = [
    "IMAGE_SUFFIXES",
    "Sample",
    "build_yolo_dataset",
    "near_duplicate_groups",
    "polygon_to_yolo",
    "read_coco",
    "read_via",
    "split_by_groups",
    "split_image_folder",
    "write_data_yaml",
    "write_yolo_dataset",
    "write_yolo_split",
    "yolo_to_polygon",
]
