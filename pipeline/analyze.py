"""The cascade: car check -> damage check -> damage masks. The only module that knows the order."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image

from .car import CarCheck
from .damage import DamageCheck
from .decode import ImageSource, load_image
from .errors import ModelLoadError
from .results import Analysis, Check, Detection
from .segment import Segmenter
from .settings import ModelRef, Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Stages:
    car: CarCheck
    damage: DamageCheck
    segmenter: Segmenter


@functools.lru_cache(maxsize=8)
def _stages(
    car: ModelRef,
    damage: ModelRef,
    seg: ModelRef,
    precision: str,
    seg_backend: str,
    calibration: Path | None,
    seg_image_size: int,
) -> Stages:
    # One Stages per model set, so every thread shares the same models and the segmenter's lock.
    segmenter = Segmenter(seg, precision, seg_backend, calibration, seg_image_size)
    return Stages(CarCheck(car, precision), DamageCheck(damage, precision), segmenter)


def stages_for(settings: Settings) -> Stages:
    return _stages(
        settings.car_model,
        settings.damage_model,
        settings.seg_model,
        settings.precision,
        settings.seg_backend,
        settings.calibration_photos,
        settings.seg_image_size,
    )


def analyze(image: ImageSource, settings: Settings | None = None) -> Analysis:
    """Analyse one photo (PIL image of any mode, path, bytes or array)."""
    return analyze_batch([image], settings)[0]


def analyze_batch(images: Iterable[ImageSource], settings: Settings | None = None) -> list[Analysis]:
    """Analyse many photos; each classifier runs over batches. Same answers as ``analyze`` photo by photo."""
    settings = settings or Settings.from_env()
    results: list[Analysis] = []
    for chunk in _chunks(list(images), settings.batch_size):  # decode one batch at a time
        results.extend(analyze_decoded([load_image(image, settings.max_pixels) for image in chunk], settings))
    return results


def analyze_decoded(photos: Sequence[Image.Image], settings: Settings) -> list[Analysis]:
    """The cascade over already-decoded RGB photos (one batch)."""
    stages = stages_for(settings)
    cars = stages.car.scores(photos, settings.car_threshold)
    run_damage = [i for i, car in enumerate(cars) if car.positive or not settings.cascade]
    damages: dict[int, Check] = dict(
        zip(run_damage, stages.damage.scores([photos[i] for i in run_damage], settings.damage_threshold))
        if run_damage
        else ()
    )
    run_masks = [i for i in run_damage if damages[i].positive or settings.always_segment or not settings.cascade]
    found = stages.segmenter.detect(
        [photos[i] for i in run_masks],
        conf=settings.mask_threshold,
        iou=settings.iou_threshold,
        image_size=settings.seg_image_size,
        max_det=settings.max_detections,
    )
    detections: dict[int, tuple[Detection, ...]] = dict(zip(run_masks, found))
    return [
        Analysis(
            image=photo,
            car=cars[i],
            damage=damages.get(i),
            detections=detections.get(i, ()),
            segmented=i in detections,
        )
        for i, photo in enumerate(photos)
    ]


def load_models(settings: Settings) -> dict[str, ModelLoadError | None]:
    """Load (and cache) all three models now; the error of each one that cannot be loaded."""
    stages = stages_for(settings)
    loaders = {
        "car": lambda: stages.car.classifier,
        "damage": lambda: stages.damage.engine,
        "segmenter": lambda: stages.segmenter.model,
    }
    problems: dict[str, ModelLoadError | None] = {}
    for role, load in loaders.items():
        try:
            load()
            problems[role] = None
        except ModelLoadError as exc:
            problems[role] = exc
    return problems


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start : start + size]
