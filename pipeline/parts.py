"""Which car part each damage instance lies on: the part (from a part segmenter) its mask overlaps most."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from .decode import Photo
from .results import Detection
from .segment import Segmenter

# Part masks are context, not answers: a lower bar than damage keeps a faint bumper from leaving a dent partless.
PART_CONFIDENCE = 0.2


def on_parts(damages: tuple[Detection, ...], parts: Sequence[Detection]) -> tuple[Detection, ...]:
    """Each damage with ``part`` set to the part class whose masks it overlaps most ('' when it touches none)."""
    placed = []
    for damage in damages:
        shared = Counter()
        for part in parts:
            shared[part.label] += damage.mask_crop.overlap(part.mask_crop)
        best = max(shared, key=shared.__getitem__, default="")
        placed.append(replace(damage, part=best if best and shared[best] > 0 else ""))
    return tuple(placed)


def assign_parts(
    segmenter: Segmenter,
    photos: Sequence[Photo],
    damages: Sequence[tuple[Detection, ...]],
    damaged: Sequence[bool] | None = None,
    damaged_part_confidence: float | None = None,
) -> list[tuple[tuple[Detection, ...], tuple[str, ...]]]:
    """Run the part segmenter on the photos that have damage, and place each damage on its part. With a model of
    damaged parts (``damaged_part_confidence`` set), it also runs on the photos judged ``damaged`` and names the
    parts it finds there at that confidence: a damage too faint or small for a mask still has its part named.
    Per photo: (the damages placed on parts, the damaged parts found directly)."""
    finds = damaged_part_confidence is not None and damaged is not None
    todo = [i for i, found in enumerate(damages) if found or (finds and damaged[i])]
    conf = min(PART_CONFIDENCE, damaged_part_confidence) if finds else PART_CONFIDENCE
    parts = dict(zip(todo, segmenter.detect([photos[i] for i in todo], conf=conf))) if todo else {}
    placed = []
    for i, found in enumerate(damages):
        seen = parts.get(i, ())
        context = [part for part in seen if part.score >= PART_CONFIDENCE]
        named = sorted({p.label for p in seen if p.score >= damaged_part_confidence}) if finds and damaged[i] else []
        placed.append((on_parts(found, context) if found else found, tuple(named)))
    return placed
