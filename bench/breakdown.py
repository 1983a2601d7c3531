"""Where a photo's time goes on the fast side: decoding, each model, drawing and encoding, one stage at a time.

Every stage runs on every photo (as in the benchmark: cascade off), in batches of the settings' size, after a
warm-up; milliseconds a photo, the median of ``repeats`` passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.analyze import analyze_photos, stages_for
from pipeline.decode import load_photo
from pipeline.draw import annotate
from pipeline.parts import PART_CONFIDENCE
from pipeline.report import encode
from pipeline.settings import Settings


def stage_breakdown(settings: Settings, paths: Sequence[Path], repeats: int = 3) -> dict[str, float]:
    """Stage -> ms a photo (fast side, batches), and their sum beside the measured batch figure."""
    stages, thresholds = stages_for(settings.models), settings.thresholds
    photos = [load_photo(p, settings.limits) for p in paths]
    images = [photo.image for photo in photos]
    analyses = analyze_photos(photos, settings)
    runs: dict[str, Callable[[Sequence[int]], object]] = {
        "decode": lambda batch: [load_photo(paths[i], settings.limits) for i in batch],
        "car check": lambda batch: stages.car.scores([images[i] for i in batch], thresholds.car),
        "damage check + grade": lambda batch: stages.damage.assess([images[i] for i in batch], thresholds.damage),
        "damage segmenter": lambda batch: stages.segmenter.detect([photos[i] for i in batch], thresholds.mask),
    }
    if stages.parts is not None:
        runs["part segmenter"] = lambda batch: stages.parts.detect([photos[i] for i in batch], PART_CONFIDENCE)
    drawn = [annotate(a) for a in analyses]
    runs["drawing"] = lambda batch: [annotate(analyses[i]) for i in batch]
    runs["encoding (JPEG)"] = lambda batch: [encode(drawn[i], ".jpg") for i in batch]
    figures = {name: _ms_a_photo(run, len(paths), settings.batch_size, repeats) for name, run in runs.items()}
    figures["sum of the stages"] = round(sum(figures.values()), 1)
    return figures


def _ms_a_photo(run: Callable[[Sequence[int]], object], count: int, batch_size: int, repeats: int) -> float:
    batches = [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    run(batches[0])  # warm-up: compiled copies, caches
    passes = []
    for _ in range(repeats):
        began = time.perf_counter()
        for batch in batches:
            run(batch)
        passes.append((time.perf_counter() - began) * 1000 / count)
    return round(float(np.median(passes)), 1)
