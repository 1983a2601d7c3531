"""python -m bench.stages: each model stage alone, each precision side by side, in one process.

Milliseconds a photo over batches of 8 photos of the benchmark (the same full-size models as ``python -m bench``):
the classifiers in fp32 PyTorch, torch's dynamic int8 and the shipped OpenVINO int8; the segmenter in PyTorch,
f32 OpenVINO (the default) and static int8 OpenVINO (calibrated on 16 other photos).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.car import CarCheck
from pipeline.damage import DamageCheck
from pipeline.decode import load_photo
from pipeline.hub import clear_cache
from pipeline.segment import Segmenter

from .common import DEFAULT_MODEL_DIR, calibration_photos, photos
from .models import bench_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    settings, origin = bench_settings(args.model_dir)
    paths, source = photos(8)
    decoded = [load_photo(p) for p in paths]
    images = [photo.image for photo in decoded]
    keep = tempfile.TemporaryDirectory(prefix="bench-calibration-")  # removed when the run ends
    calibration = calibration_photos(paths, Path(keep.name) / "photos")
    print(f"models: {origin}\nphotos: {len(images)} from {source}\n")
    settings = settings.with_models(calibration_photos=calibration)
    runs: dict[str, Callable[[], object]] = {}
    for precision in ("fp32", "torch-int8", "int8"):
        car, damage = _classifiers(settings, precision)
        runs[f"car check ViT-B/16, {precision}"] = lambda car=car: car.probabilities(images)
        runs[f"damage check CLIP B/32, {precision}"] = lambda damage=damage: damage.probabilities(images)
    for label, segmenter in (
        ("segmenter YOLOv8s-seg, PyTorch fp32", Segmenter(settings.models.segmenter, "fp32", "torch")),
        ("segmenter YOLOv8s-seg, OpenVINO f32", Segmenter(settings.models.segmenter, "fp32", "openvino")),
        ("segmenter YOLOv8s-seg, OpenVINO int8", Segmenter(settings.models.segmenter, "int8", "openvino", calibration)),
    ):
        runs[label] = lambda s=segmenter: s.detect(decoded, 0.25, 0.5, 6)
    print("| stage | ms a photo (batches of 8) |\n|---|---|")
    for label, run in runs.items():
        print(f"| {label} | {_ms_per_photo(run, len(images), args.repeats):.1f} |", flush=True)


def _classifiers(settings, precision: str) -> tuple:
    """The loaded car and damage models. 'torch-int8' is torch's dynamic quantisation (the path before
    OpenVINO), reached by making the OpenVINO conversion fail."""
    from unittest import mock

    car = CarCheck(settings.models.car, "int8" if precision == "torch-int8" else precision)
    damage = DamageCheck(settings.models.damage, "int8" if precision == "torch-int8" else precision)
    with contextlib.ExitStack() as stack:
        if precision == "torch-int8":
            stack.enter_context(
                mock.patch("pipeline.accel.classifiers._openvino_forward", side_effect=RuntimeError("asked"))
            )
        loaded = car.model.engine, damage.model.engine
    clear_cache()  # the next precision loads its own copies (int8 and torch-int8 share a cache key)
    return loaded


def _ms_per_photo(run: Callable[[], object], photos: int, repeats: int) -> float:
    run()  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000 / photos)
    return float(np.median(times))


if __name__ == "__main__":
    main()
