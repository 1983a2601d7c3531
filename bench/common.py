"""What the benchmarks share: where the photos and models are, the photos themselves, and the machine's card."""

from __future__ import annotations

import os
import platform
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import psutil

from pipeline import testing
from pipeline.accel.precision import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_PHOTOS = SHARED / "data" / "vds-severity"
DEFAULT_MODEL_DIR = Path.home() / ".cache" / "car-damage" / "bench-models"


def photos(count: int) -> tuple[list[Path], str]:
    """``count`` damaged-car photos of ../shared (spread over the set), or generated ones when it is absent."""
    files = sorted(SHARED_PHOTOS.glob("*/*/*.jpg"))
    if files:
        step = max(1, len(files) // count)
        return files[::step][:count], "../shared/data/vds-severity (damaged cars)"
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    paths = []
    for i in range(count):
        paths.append(folder / f"generated_{i}.jpg")
        testing.photo(800, 600, seed=i).save(paths[-1], quality=90)
    return paths, "generated 800x600 photos (../shared absent)"


def calibration_photos(measured: list[Path], folder: Path) -> Path:
    """A folder of 16 other photos of the same set (none of the measured ones) to calibrate the int8 segmenter."""
    folder.mkdir(parents=True)
    files = sorted(SHARED_PHOTOS.glob("*/*/*.jpg"))
    others = [f for f in files if f not in set(measured)][:: max(1, len(files) // 16)][:16]
    for i, source in enumerate(others):
        (folder / f"{i:02d}.jpg").symlink_to(source)
    if not others:  # ../shared absent: generated photos, like the measured ones
        for i in range(16):
            testing.photo(800, 600, seed=1000 + i).save(folder / f"{i:02d}.jpg", quality=90)
    return folder


def zip_of(paths: list[Path], count: int, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            source = paths[i % len(paths)]
            archive.write(source, f"{i:04d}_{Path(source).name}")
    return path


def zip_of_aspects(paths: list[Path], count: int, path: Path) -> Path:
    """``count`` photos re-cut to aspect ratios spread from 1:4 to 4:1 (longer side 640 px): a zip whose photos
    make a new network input shape nearly every time, where the bench's own photos repeat a few."""
    from PIL import Image

    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            ratio = 0.25 + 3.75 * i / max(1, count - 1)  # width / height
            width = 640 if ratio >= 1 else round(640 * ratio)
            with Image.open(paths[i % len(paths)]) as image:
                photo = image.convert("RGB").resize((width, max(1, round(width / ratio))))
            archive.writestr(f"{i:04d}.jpg", testing.jpeg_bytes(photo))
    return path


def percentile(values: list[float], q: int) -> float:
    return round(float(np.percentile(values, q)), 1)


def machine() -> dict[str, object]:
    """What the figures were measured on: absolute times differ by CPU make (compare the ratios). Imports no
    library: importing PyTorch here put ~650 MB into the fast side's peak RSS, which a served process (a warm start
    imports no PyTorch) never carries."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = cpu_flags() or frozenset()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "torch": installed("torch"),
        "openvino": installed("openvino"),
        "python": platform.python_version(),
    }
