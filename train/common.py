"""Shared helpers: offline environment, image listing, source tags in file names."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageFile

from pipeline.formats import IMAGE_SUFFIXES  # the photo formats the product reads are the ones we train on

# Prepared folders name files "<source>__<name>": metrics can then be broken down by source.
SOURCE_SEPARATOR = "__"
# The shared models the build starts from (relative to ../shared): the car check as is, the backbones to fine-tune.
CAR_MODEL = "models/imagenet-efficientnet-lite0"
SEG_BASE = "models/yolo11n-seg-vehicles/yolo11n-seg-vehicles.pt"


def offline_env() -> None:
    """Nothing may reach a hub at run time; Ultralytics also wants a font it would otherwise download."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-")))
    config_dir.mkdir(parents=True, exist_ok=True)
    font = config_dir / "Arial.ttf"
    if not font.exists():
        import matplotlib

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if dejavu.exists():
            shutil.copyfile(dejavu, font)


def open_rgb(path: Path, min_side: int | None = None) -> Image.Image:
    """Open as RGB; with ``min_side``, let the JPEG decoder skip detail finer than needed (2-8x faster).

    The decoder keeps both sides >= ``min_side``, so the model input is still resized down, never up. A few
    public photos are truncated: training takes what they hold rather than crash, without changing Pillow's
    global setting (importing the training code must not make the product accept truncated uploads).
    """
    with Image.open(path) as image:
        if min_side and image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        try:
            return image.convert("RGB")
        except OSError:
            return _truncated_rgb(path)


def _truncated_rgb(path: Path) -> Image.Image:
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for reproducibility."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def name_bucket(path: Path, buckets: int) -> int:
    """A fixed bucket for a file, from its name alone: a split that is the same on every machine and run."""
    return int(hashlib.md5(Path(path).name.encode()).hexdigest(), 16) % buckets


def source_of(path: Path) -> str:
    """The source tag of a prepared file ("nm__12.jpg" -> "nm"); "" when untagged."""
    name = Path(path).name
    return name.split(SOURCE_SEPARATOR)[0] if SOURCE_SEPARATOR in name else ""


def link_or_copy(src: Path, dst: Path) -> None:
    """Symlink (no copy of the photos); copy where symlinks are not allowed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        dst.symlink_to(Path(src).resolve())
    except OSError:
        shutil.copyfile(src, dst)
