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
    segmenter: Segmenter, photos: Sequence[Photo], damages: Sequence[tuple[Detection, ...]]
) -> list[tuple[Detection, ...]]:
    """Run the part segmenter on the photos that have damage, and place each damage on its part."""
    todo = [i for i, found in enumerate(damages) if found]
    parts = dict(zip(todo, segmenter.detect([photos[i] for i in todo], conf=PART_CONFIDENCE))) if todo else {}
    return [on_parts(found, parts[i]) if i in parts else found for i, found in enumerate(damages)]
