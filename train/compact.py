"""A compact, self-contained copy of a build's training data, for training the release on another machine (a GPU
lent for minutes, with nothing of ../shared beside it).

    python -m train.build_profile --shared ../shared --out BUILD --prepare_only   # the build's folders
    python -m train.compact --work BUILD/work --out .compact                       # <= 40 MB

Each photo is stored once (WebP, downsized: the classifiers train at 224 px, the segmenters at their training
size), and the training folders hold relative links to it, so the copy travels as it is. Only training and
development photos go in: no held-out photo leaves this machine (the figures are measured here, afterwards).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from train.common import list_images

MANIFEST = "compact.json"
PHOTOS = "photos"


@dataclass
class CompactArguments:
    work: str = field(metadata={"help": "a build's work folder (train.build_profile --prepare_only)"})
    out: str = field(default=".compact")
    classifier_side: int = field(default=160, metadata={"help": "shortest side of the classifiers' photos"})
    segmenter_side: int = field(default=448, metadata={"help": "longest side of the damage segmenter's photos"})
    part_side: int = field(default=320, metadata={"help": "longest side of the part segmenter's photos"})
    quality: int = field(default=70, metadata={"help": "WebP quality"})
    what: str = field(
        default="all",
        metadata={"help": "all, segmenters (the two YOLO sets only: half the bytes, for a device call that also "
                  "carries the checkout) or damage (the damage segmenter's set alone: room for --segmenter_side 640)",
                  "choices": ["all", "segmenters", "damage"]},
    )  # fmt: skip


class PhotoStore:
    """Photos stored once under ``out/photos/`` as small WebP files; a key says which source and size."""

    def __init__(self, out: Path, quality: int) -> None:
        self.root, self.quality, self.stored = out / PHOTOS, quality, {}
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, source: Path, side: int, shortest: bool) -> Path:
        key = (str(Path(source).resolve()), side, shortest)
        if key not in self.stored:
            name = hashlib.sha1(repr(key).encode()).hexdigest()[:16] + ".webp"
            _save_small(Path(source), self.root / name, side, shortest, self.quality)
            self.stored[key] = self.root / name
        return self.stored[key]


def _save_small(source: Path, target: Path, side: int, shortest: bool, quality: int) -> None:
    from PIL import Image, ImageOps

    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = side / (min(image.size) if shortest else max(image.size))
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.LANCZOS)  # fmt: skip
        image.save(target, "WEBP", quality=quality, method=4)


def link(target: Path, link_path: Path) -> None:
    """A relative link, so the folder works wherever it is copied."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(os.path.relpath(target, link_path.parent))


def compact_classifier(work: Path, out: Path, store: PhotoStore, side: int) -> int:
    count = 0
    for split in ("train", "dev"):
        for label_dir in sorted((work / "classify" / split).iterdir()):
            for photo in list_images(label_dir):
                stored = store.add(photo, side, shortest=True)
                link(stored, out / "classify" / split / label_dir.name / (photo.stem + ".webp"))
                count += 1
    return count


def compact_yolo(data_yaml: Path, out: Path, store: PhotoStore, side: int) -> int:
    """The train split (images as links, labels as files: YOLO labels are relative, sizes do not matter); val is
    the train split again (Ultralytics wants one; the build trains with val off)."""
    import yaml

    config = yaml.safe_load(Path(data_yaml).read_text())
    images = Path(config["path"]) / config["train"]
    out.mkdir(parents=True, exist_ok=True)
    for photo in list_images(images):
        stored = store.add(photo, side, shortest=False)
        link(stored, out / "train" / "images" / (photo.stem + ".webp"))
        label = images.parent / "labels" / f"{photo.stem}.txt"
        (out / "train" / "labels").mkdir(parents=True, exist_ok=True)
        if label.is_file():
            shutil.copyfile(label, out / "train" / "labels" / label.name)
    names = config["names"] if isinstance(config["names"], list) else [config["names"][i] for i in config["names"]]
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "train/images", "val": "train/images",
                                                   "nc": len(names), "names": names}))  # fmt: skip
    return len(list_images(images))


def localized_yaml(data_yaml: Path) -> Path:
    """The compact copy's data yaml with its folder filled in (the copy moves between machines)."""
    import yaml

    config = yaml.safe_load(Path(data_yaml).read_text())
    config["path"] = str(Path(data_yaml).resolve().parent)
    target = Path(data_yaml).with_name("data-here.yaml")
    target.write_text(yaml.safe_dump(config))
    return target


def make_compact(args: CompactArguments) -> dict:
    work, out = Path(args.work), Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    store = PhotoStore(out, args.quality)
    counts = {
        "classifier": compact_classifier(work, out, store, args.classifier_side) if args.what == "all" else 0,
        "segmenter": compact_yolo(work / "damage-seg" / "data.yaml", out / "damage-seg", store, args.segmenter_side),
        "parts": compact_yolo(work / "parts" / "data.yaml", out / "parts", store, args.part_side)
        if args.what != "damage"
        else 0,
    }
    manifest = {"counts": counts, "photos": len(store.stored), "bytes": stored_bytes(out), "args": vars(args)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def stored_bytes(folder: Path) -> int:
    """What a folder weighs as it travels: its files, links counted as links."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def compact_data(folder: Path) -> dict:
    """What train.build_profile trains on, read from a compact copy (see build_profile --compact)."""
    from train.build_data import SegmenterData

    folder = Path(folder).resolve()
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder} is not a compact copy (no {MANIFEST}): python -m train.compact")
    return {
        "classify": folder / "classify",
        "seg": SegmenterData(localized_yaml(folder / "damage-seg" / "data.yaml"), {}),
        "parts": localized_yaml(folder / "parts" / "data.yaml") if (folder / "parts").is_dir() else None,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(CompactArguments).parse_args_into_dataclasses(args=argv)
    print(json.dumps(make_compact(args), indent=1))


if __name__ == "__main__":
    main()
