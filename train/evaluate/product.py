"""The product's own code on photo files: its decode, its stages (car check, damage check, grades, segmenter) and
its whole cascade, with its loaders, pre-processing and default precision. A figure measured through these is the
one a user gets, and a threshold chosen on these scores is chosen on the scores the product compares with it.

Photos the product refuses (truncated, too large, too wide) are left out of every figure, as the CLI's report
marks them failed; each evaluation names how many it left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline import Analysis, Grade, InputError, Limits, Photo, Settings, analyze_batch, load_photo
from pipeline.car import CarCheck
from pipeline.classify import config_labels
from pipeline.damage import DamageCheck, SeverityCheck, damage_label_ids
from pipeline.segment import Segmenter
from pipeline.settings import ModelRef, ModelSet, Thresholds

# The runtime's defaults (a profile the build writes names no precision or backend): what a user runs.
PRECISION, SEG_BACKEND, IOU = ModelSet.precision, ModelSet.seg_backend, Thresholds.iou
BATCH = 8  # photos decoded at a time: working copies of up to 1600 px, ~6 MB each


def local_ref(model: str | Path) -> ModelRef:
    return ModelRef(str(Path(model).resolve()))


def classifier_check(model: str | Path, role: str) -> CarCheck | DamageCheck:
    """The product's car check or damage check on a local model folder (loaded once per process)."""
    return (CarCheck if role == "car" else DamageCheck)(local_ref(model), PRECISION)


def segmenter_stage(model: str | Path, image_size: int) -> Segmenter:
    return Segmenter(local_ref(model), PRECISION, SEG_BACKEND, None, image_size)


def photo_batches(
    paths: Sequence[Path], batch_size: int = BATCH, limits: Limits = Limits()
) -> Iterator[tuple[list[int], list[Photo]]]:
    """(indices into ``paths``, photos) per batch, decoded as the product decodes an upload; refused photos are
    skipped (their index is missing)."""
    for start in range(0, len(paths), batch_size):
        kept, photos = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                photos.append(load_photo(paths[i], limits))
            except InputError:
                continue
            kept.append(i)
        yield kept, photos


def check_scores(model: str | Path, paths: Sequence[Path], role: str) -> tuple[list[int], np.ndarray]:
    """The product's P(car) or P(damaged) of each photo it reads, and which photos those are (indices)."""
    check, kept, scores = classifier_check(model, role), [], []
    for indices, photos in photo_batches(paths):
        kept += indices
        scores += [c.score for c in check.scores([p.image for p in photos], 0.5)]
    return kept, np.asarray(scores, dtype=float)


def is_damage_model(model: str | Path) -> bool:
    """Does the product read a damage check from this classifier (whole and damaged labels), or only grades?"""
    damaged, whole = damage_label_ids(config_labels(Path(model).resolve()))
    return bool(damaged and whole)


def grades(model: str | Path, paths: Sequence[Path]) -> tuple[list[int], list[Grade | None], np.ndarray | None]:
    """The product's grade of each photo it reads (one pass of a graded damage model, or a severity model), the
    indices of those photos, and P(damaged) when the model is a damage model (else None)."""
    one_pass, kept, found, damaged = is_damage_model(model), [], [], []
    stage = DamageCheck(local_ref(model), PRECISION) if one_pass else SeverityCheck(local_ref(model), PRECISION)
    for indices, photos in photo_batches(paths):
        images, kept = [p.image for p in photos], kept + indices
        if one_pass:
            answers = stage.assess(images, 0.5)
            found += [grade for _, grade in answers]
            damaged += [check.score for check, _ in answers]
        else:
            found += stage.grades(images)
    return kept, found, np.asarray(damaged, dtype=float) if one_pass else None


def best_instances(segmenter: Segmenter, photos: Sequence[Photo], conf: float) -> tuple[list[float], list[float]]:
    """The best damage instance's confidence in each photo (0 when none), as the damage rule reads it, and the
    segmenter's seconds per photo. One instance each: the rule reads only the best, and turning every low-confidence
    instance into a mask would cost more than the model."""
    segmenter.model  # noqa: B018 - loaded (and any OpenVINO copy made) before the clock starts
    best, seconds = [], []
    for photo in photos:
        began = time.perf_counter()
        (found,) = segmenter.detect([photo], conf=conf, iou=IOU, max_det=1)
        seconds.append(time.perf_counter() - began)
        best.append(max((d.score for d in found), default=0.0))
    return best, seconds


def analyses(paths: Sequence[Path], settings: Settings) -> Iterator[tuple[int, Analysis]]:
    """(index into ``paths``, ``pipeline.analyze_batch``'s analysis) of each photo the product reads, one batch at a
    time: an analysis holds its working copy of the photo, so callers keep what they measure, not the analyses."""
    for indices, photos in photo_batches(paths, settings.batch_size, settings.limits):
        yield from zip(indices, analyze_batch(photos, settings), strict=True)
