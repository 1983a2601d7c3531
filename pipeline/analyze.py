"""The cascade: car check -> damage check (+ grade) -> damage masks (+ parts). The only module that knows the order.

With ``damage_rule="classifier"`` the segmenter runs on cars the classifier judges damaged (or every car with
``always_segment``); with the other rules it runs on every car and its best instance joins the verdict.
Masks are shown only under a "damaged" verdict (or with ``always_segment``), so the summary never says
"no damage" beside drawn masks; a damaged verdict with nothing to outline says so.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from .accel import shared_pixels
from .car import CarCheck
from .damage import DamageCheck, SeverityCheck
from .decode import ImageSource, Photo, load_photo
from .errors import ModelLoadError
from .hub import Stage
from .parts import assign_parts
from .results import Analysis, Check, Detection, Grade
from .segment import Segmenter
from .settings import ModelSet, Settings

T = TypeVar("T")


CLASSIFIER_ROLES = ("car", "damage", "severity")


@dataclass(frozen=True)
class Stages:
    car: CarCheck
    damage: DamageCheck
    segmenter: Segmenter
    severity: SeverityCheck | None = None
    parts: Segmenter | None = None

    def all(self) -> dict[str, Stage]:
        stages = {"car": self.car, "damage": self.damage, "severity": self.severity}
        stages |= {"segmenter": self.segmenter, "parts": self.parts}
        return {role: stage for role, stage in stages.items() if stage is not None}


@functools.lru_cache(maxsize=8)
def stages_for(models: ModelSet) -> Stages:
    """One Stages per model set, so every thread shares the same models and the segmenter's lock."""
    precision = models.precision
    segmenter = Segmenter(
        models.segmenter, precision, models.seg_backend, models.calibration_photos, models.seg_image_size,
        agnostic=models.seg_agnostic_nms,
    )  # fmt: skip
    severity = SeverityCheck(models.severity, precision) if models.severity else None
    parts = None
    if models.parts:
        parts = Segmenter(models.parts, precision, models.seg_backend, None, models.part_image_size, role="parts")
    return Stages(CarCheck(models.car, precision), DamageCheck(models.damage, precision), segmenter, severity, parts)


def analyze(image: ImageSource | Photo, settings: Settings | None = None) -> Analysis:
    """Analyse one photo (PIL image of any mode, path, bytes or array)."""
    return analyze_batch([image], settings)[0]


def analyze_batch(images: Iterable[ImageSource | Photo], settings: Settings | None = None) -> list[Analysis]:
    """Analyse many photos; each classifier runs over batches. Same answers as ``analyze`` photo by photo."""
    settings = settings or Settings.from_env()
    results: list[Analysis] = []
    for chunk in _chunks(list(images), settings.batch_size):  # decode one batch at a time
        results.extend(analyze_photos([load_photo(image, settings.limits) for image in chunk], settings))
    return results


def analyze_photos(photos: Sequence[Photo], settings: Settings) -> list[Analysis]:
    """The cascade over decoded photos (one batch)."""
    stages, thresholds = stages_for(settings.models), settings.thresholds
    images = [photo.image for photo in photos]
    with shared_pixels():  # the car and damage checks often read the same network inputs
        cars = stages.car.scores(images, thresholds.car)
        checked = [i for i, car in enumerate(cars) if car.positive or not settings.cascade]
        assessed = dict(zip(checked, stages.damage.assess([images[i] for i in checked], thresholds.damage)))
    classifier = {i: check for i, (check, _) in assessed.items()}
    found = _segment(stages, photos, classifier, settings)
    damages = {i: _verdict(classifier[i], found.get(i), settings) for i in checked}
    shown = {i: _shown(found[i], damages[i], settings) for i in found}
    shown, parts_found = _placed(stages, photos, shown, damages, settings.models.damaged_part_confidence)
    grades = _grades(stages, images, {i: g for i, (_, g) in assessed.items()}, damages, thresholds.grade)
    return [
        Analysis(
            image=photo.image,
            size=photo.size,
            car=cars[i],
            damage=damages.get(i),
            detections=shown.get(i, ()),
            segmented=i in found,
            severity=grades.get(i),
            mask_threshold=thresholds.mask if i in found else None,
            parts_found=parts_found.get(i, ()),
        )
        for i, photo in enumerate(photos)
    ]


def _segment(
    stages: Stages, photos: Sequence[Photo], classifier: dict[int, Check], settings: Settings
) -> dict[int, tuple[Detection, ...]]:
    """Instances (down to the mask threshold) for the photos the rule needs the segmenter on."""
    rule, always = settings.damage_rule, settings.thresholds.always_segment
    wanted = [i for i, check in classifier.items() if rule != "classifier" or check.positive or always]
    if not settings.cascade:
        wanted = list(classifier)
    thresholds = settings.thresholds
    found = stages.segmenter.detect(
        [photos[i] for i in wanted], conf=thresholds.mask, iou=thresholds.iou, max_det=settings.max_detections
    )
    return dict(zip(wanted, found))


def _verdict(classifier: Check, found: tuple[Detection, ...] | None, settings: Settings) -> Check:
    """The damage check after the rule has weighed the segmenter's best instance in."""
    best = max((d.score for d in found or () if d.score >= settings.thresholds.mask), default=0.0)
    score = classifier.score
    if settings.damage_rule == "noisy_or":
        score = 1.0 - (1.0 - score) * (1.0 - best)
    elif settings.damage_rule == "max":
        score = max(score, best)
    elif settings.damage_rule == "any_mask" and best > 0 and best >= settings.thresholds.mask_evidence:
        score = max(score, classifier.threshold)
    if score == classifier.score:
        return classifier
    top = (("damaged", score), ("whole", 1.0 - score))
    return replace(classifier, score=score, top_labels=tuple(sorted(top, key=lambda t: -t[1])))


def _shown(found: tuple[Detection, ...], damage: Check, settings: Settings) -> tuple[Detection, ...]:
    """Masks are drawn under a damaged verdict, with always-segment, or with the cascade off; never otherwise."""
    if damage.positive or settings.thresholds.always_segment or not settings.cascade:
        return found
    return ()


def _placed(
    stages: Stages,
    photos: Sequence[Photo],
    shown: dict[int, tuple[Detection, ...]],
    damages: dict[int, Check],
    damaged_part_confidence: float | None,
) -> tuple[dict[int, tuple[Detection, ...]], dict[int, tuple[str, ...]]]:
    """The shown damages placed on parts, and the damaged parts the part model names by itself (photos judged
    damaged, with a model of damaged parts)."""
    damaged = [i for i, check in damages.items() if check.positive]
    finds = damaged_part_confidence is not None and damaged
    if stages.parts is None or not (any(shown.values()) or finds):
        return shown, {}
    order = sorted(set(shown) | set(damaged))
    placed = assign_parts(
        stages.parts, [photos[i] for i in order], [shown.get(i, ()) for i in order],
        [i in damaged for i in order], damaged_part_confidence,
    )  # fmt: skip
    shown = shown | {i: found for i, (found, _) in zip(order, placed) if i in shown}
    return shown, {i: named for i, (_, named) in zip(order, placed) if named}


def _grades(
    stages: Stages, images: Sequence, one_pass: dict[int, Grade | None], damages: dict[int, Check], threshold: float
) -> dict[int, Grade]:
    """The grade of each photo judged damaged: from the severity model when there is one, else from the damage
    model's own grade labels (one pass); none when neither grades or the grade is less likely than ``threshold``."""
    damaged = [i for i, check in damages.items() if check.positive]
    if stages.severity is not None and damaged:
        grades = dict(zip(damaged, stages.severity.grades([images[i] for i in damaged])))
    else:
        grades = {i: one_pass.get(i) for i in damaged}
    return {i: grade for i, grade in grades.items() if grade is not None and grade.score >= threshold}


def load_models(settings: Settings) -> dict[str, ModelLoadError | None]:
    """Load (and cache) every model of the set now: the classifiers in one thread and the segmenters in another,
    side by side (reading weights and compiling overlap); the error of each one that cannot be loaded. Not a
    thread per model: transformers' lazy imports are not safe from two threads at once."""
    stages = stages_for(settings.models).all()
    groups = [[r for r in stages if r in CLASSIFIER_ROLES], [r for r in stages if r not in CLASSIFIER_ROLES]]
    with ThreadPoolExecutor(2, thread_name_prefix="load") as pool:
        loaded = pool.map(lambda roles: {role: _load(stages[role]) for role in roles}, groups)
        problems = {role: problem for group in loaded for role, problem in group.items()}
    return {role: problems[role] for role in stages}


def _load(stage: Stage) -> ModelLoadError | None:
    try:
        stage.model  # noqa: B018 - loading is the point
    except ModelLoadError as exc:
        return exc
    return None


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start : start + size]
