"""Typed results. Library outputs (transformers, ultralytics) are converted into these at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Check:
    """One yes/no check: a probability and the threshold it was judged against."""

    score: float
    threshold: float
    top_labels: tuple[tuple[str, float], ...] = ()  # the model's own best labels, for display

    @property
    def positive(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True, eq=False)
class Detection:
    """One damage instance. ``mask`` is boolean, at the photo's original resolution (H, W)."""

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    mask: np.ndarray = field(repr=False)

    @property
    def area_pct(self) -> float:
        """Mask area as a percentage of the photo."""
        return 100.0 * float(self.mask.sum()) / float(self.mask.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
            "area_pct": round(self.area_pct, 3),
        }


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything ``analyze`` found in one photo.

    ``damage`` is None when the cascade stopped before the damage check (no car);
    ``segmented`` says whether the segmenter ran (an empty ``detections`` then means none found).
    """

    image: Image.Image = field(repr=False)  # the decoded RGB photo, EXIF orientation applied
    car: Check
    damage: Check | None
    detections: tuple[Detection, ...]
    segmented: bool

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def is_car(self) -> bool:
        return self.car.positive

    @property
    def is_damaged(self) -> bool:
        return self.damage is not None and self.damage.positive

    @property
    def damage_area_pct(self) -> float:
        """Share of the photo covered by the union of all damage masks."""
        if not self.detections:
            return 0.0
        union = np.logical_or.reduce([d.mask for d in self.detections])
        return 100.0 * float(union.sum()) / float(union.size)

    @property
    def damage_classes(self) -> list[str]:
        return sorted({d.label for d in self.detections})

    @property
    def summary(self) -> str:
        """One friendly sentence for people."""
        if not self.is_car:
            return f"No car found (car confidence {self.car.score:.0%})."
        if self.damage is None:
            return "Car found; damage check not run."
        verdict = "Damaged car" if self.is_damaged else "No damage found"
        text = f"{verdict} (car {self.car.score:.0%}, damage {self.damage.score:.0%})."
        if self.detections:
            classes = ", ".join(self.damage_classes)
            text += f" {len(self.detections)} damaged area(s): {classes}."
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (no pixels)."""
        width, height = self.size
        return {
            "width": width,
            "height": height,
            "is_car": self.is_car,
            "car_score": round(self.car.score, 4),
            "is_damaged": self.is_damaged if self.damage is not None else None,
            "damage_score": round(self.damage.score, 4) if self.damage is not None else None,
            "segmented": self.segmented,
            "damage_count": len(self.detections),
            "damage_classes": self.damage_classes,
            "damage_area_pct": round(self.damage_area_pct, 3),
            "damages": [d.to_dict() for d in self.detections],
            "summary": self.summary,
        }
