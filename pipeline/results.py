"""Typed results. Library outputs (transformers, ultralytics) are converted into these at the edge.

Masks are kept small (``MaskCrop``: the pixels of the mask's bounding region, at the working resolution) and
expanded to the original photo's size only where a full-size mask is really written (COCO predictions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image

GRADES = ("minor", "moderate", "severe")


class Status(StrEnum):
    """What happened to one input file."""

    OK = "ok"  # analysed
    SKIPPED = "skipped"  # not a photo (a text file, system metadata): nothing was expected of it
    REFUSED = "refused"  # refused for safety (traversal, zip bomb, nested archive, ...)
    ERROR = "error"  # a photo that could not be analysed (corrupt, too large, failed)
    NOT_PROCESSED = "not_processed"  # the job stopped first (time budget, client gone)


@dataclass(frozen=True)
class Check:
    """One yes/no check: a probability and the threshold it was judged against."""

    score: float
    threshold: float
    top_labels: tuple[tuple[str, float], ...] = ()  # the model's own best labels, for display

    @property
    def positive(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True)
class Grade:
    """How badly a car is damaged: ``label`` in GRADES and its probability among the grades."""

    label: str
    score: float


@dataclass(frozen=True, eq=False)
class MaskCrop:
    """An instance mask: the boolean pixels of its bounding region at the working resolution, where it sits in
    the working image, and the original photo's size (what a full-size mask is expanded to)."""

    bits: np.ndarray = field(repr=False)  # bool (h, w)
    left: int
    top: int
    work_size: tuple[int, int]  # (width, height) of the working image
    size: tuple[int, int]  # (width, height) of the original photo

    @classmethod
    def from_full(cls, full: np.ndarray, size: tuple[int, int]) -> MaskCrop | None:
        """Crop a full working-size boolean mask to its bounding region; None when it is empty."""
        rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        if not len(rows):
            return None
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        bits = np.ascontiguousarray(full[top:bottom, left:right])
        return cls(bits, int(left), int(top), (full.shape[1], full.shape[0]), size)

    @property
    def pixels(self) -> int:
        return int(self.bits.sum())

    @property
    def area_fraction(self) -> float:
        """Share of the photo the mask covers."""
        width, height = self.work_size
        return self.pixels / float(width * height)

    def paste(self, canvas: np.ndarray) -> None:
        """OR the mask into a working-size boolean canvas."""
        height, width = self.bits.shape
        canvas[self.top : self.top + height, self.left : self.left + width] |= self.bits

    def overlap(self, other: MaskCrop) -> int:
        """Pixels the two masks share (same working image)."""
        left, top = max(self.left, other.left), max(self.top, other.top)
        right = min(self.left + self.bits.shape[1], other.left + other.bits.shape[1])
        bottom = min(self.top + self.bits.shape[0], other.top + other.bits.shape[0])
        if right <= left or bottom <= top:
            return 0
        mine = self.bits[top - self.top : bottom - self.top, left - self.left : right - self.left]
        theirs = other.bits[top - other.top : bottom - other.top, left - other.left : right - other.left]
        return int(np.logical_and(mine, theirs).sum())

    def iou(self, other: MaskCrop) -> float:
        shared = self.overlap(other)
        return shared / max(1.0, float(self.pixels + other.pixels - shared))

    def to_array(self) -> np.ndarray:
        """The full-size boolean mask at the original photo's resolution (width x height bytes: use sparingly)."""
        width, height = self.size
        full = np.zeros((height, width), dtype=bool)
        scale_x, scale_y = width / self.work_size[0], height / self.work_size[1]
        left, top = round(self.left * scale_x), round(self.top * scale_y)
        right = max(left + 1, round((self.left + self.bits.shape[1]) * scale_x))
        bottom = max(top + 1, round((self.top + self.bits.shape[0]) * scale_y))
        if (right - left, bottom - top) == (self.bits.shape[1], self.bits.shape[0]):
            full[top:bottom, left:right] = self.bits
            return full
        region = Image.fromarray(self.bits.astype(np.uint8) * 255).resize((right - left, bottom - top), Image.BILINEAR)
        full[top:bottom, left:right] = np.asarray(region) >= 128
        return full


def split_grade(label: str) -> tuple[str, str]:
    """'minor-dent' -> ('minor', 'dent'); 'dent' -> ('', 'dent'): segmenters whose classes are grade x type."""
    words = label.replace("_", "-").replace(" ", "-").split("-")
    grades = [w for w in words if w.lower() in GRADES]
    if not grades:
        return "", label
    rest = "-".join(w for w in words if w.lower() not in GRADES)
    return grades[0].lower(), rest or label


@dataclass(frozen=True, eq=False)
class Detection:
    """One damage instance. ``box`` is (x1, y1, x2, y2) in the original photo's pixels."""

    label: str  # the segmenter's class name
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    mask_crop: MaskCrop = field(repr=False)
    part: str = ""  # the car part it lies on most, when a part model runs

    @property
    def mask(self) -> np.ndarray:
        """The full-size boolean mask at the original resolution (expanded on each call)."""
        return self.mask_crop.to_array()

    @property
    def area_pct(self) -> float:
        """Mask area as a percentage of the photo."""
        return 100.0 * self.mask_crop.area_fraction

    @property
    def damage_type(self) -> str:
        return split_grade(self.label)[1]

    @property
    def severity(self) -> str:
        """The grade the segmenter's class carries ('minor-dent' -> 'minor'), or ''."""
        return split_grade(self.label)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
            "area_pct": round(self.area_pct, 3),
            "type": self.damage_type,
            "severity": self.severity,
            "part": self.part,
        }


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything ``analyze`` found in one photo.

    ``image`` is the working-resolution RGB copy the models saw (what the overlay is drawn on); ``size`` is the
    original photo's (width, height), the frame of every box and area. ``damage`` is None when the cascade
    stopped before the damage check (no car); ``segmented`` says whether the segmenter ran.
    """

    image: Image.Image = field(repr=False)
    size: tuple[int, int]
    car: Check
    damage: Check | None
    detections: tuple[Detection, ...]
    segmented: bool
    severity: Grade | None = None
    mask_threshold: float | None = None  # the segmenter's threshold when it ran (for the summary)
    parts_found: tuple[str, ...] = ()  # damaged parts a model of damaged parts named by itself (no mask needed)

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
        canvas = np.zeros((self.image.height, self.image.width), dtype=bool)
        for detection in self.detections:
            detection.mask_crop.paste(canvas)
        return 100.0 * float(canvas.mean())

    @property
    def damage_classes(self) -> list[str]:
        return sorted({d.label for d in self.detections})

    @property
    def damaged_parts(self) -> list[str]:
        return sorted({d.part for d in self.detections if d.part} | set(self.parts_found))

    @property
    def summary(self) -> str:
        """One friendly sentence for people: the verdict, and where the damage is (or that it could not be
        outlined), never "no damage" beside drawn masks."""
        if not self.is_car:
            return f"No car found (car confidence {self.car.score:.0%})."
        if self.damage is None:
            return "Car found; damage check not run."
        scores = f"(car {self.car.score:.0%}, damage {self.damage.score:.0%})"
        areas = f"{len(self.detections)} damaged area(s): {', '.join(self.damage_classes)}."
        if self.is_damaged and self.detections:
            return f"Damaged car {scores}.{self._grade_text()} {areas}{self._parts_text()}"
        if self.is_damaged and self.segmented:
            return f"Damaged car {scores}.{self._grade_text()} {self._nothing_outlined_text()}{self._parts_text()}"
        if self.is_damaged:
            return f"Damaged car {scores}.{self._grade_text()}{self._parts_text()}"
        if self.detections:  # always-segment on a car judged undamaged
            return f"Probably undamaged car {scores}; possible {areas}"
        return f"No damage found {scores}."

    def _grade_text(self) -> str:
        return f" Severity: {self.severity.label} ({self.severity.score:.0%})." if self.severity else ""

    def _nothing_outlined_text(self) -> str:
        value = self.mask_threshold
        threshold = "" if value is None else f" {value:.2f}" if round(value, 2) == value else f" {value:g}"
        return f"No area outlined above the mask threshold{threshold}."

    def _parts_text(self) -> str:
        parts = [part.replace("_", " ") for part in self.damaged_parts]
        return f" Damaged parts: {', '.join(parts)}." if parts else ""

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
            "severity": self.severity.label if self.severity else "",
            "severity_score": round(self.severity.score, 4) if self.severity else None,
            "damaged_parts": self.damaged_parts,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class ReportRow:
    """One input file's line of report.csv (and of the app's table): what happened, and what was found."""

    file: str
    status: Status
    message: str = ""
    annotated_file: str = ""
    is_car: bool | None = None
    car_score: float | None = None
    is_damaged: bool | None = None
    damage_score: float | None = None
    damage_count: int | None = None
    damage_classes: str = ""  # ';'-separated
    damage_area_pct: float | None = None
    width: int | None = None
    height: int | None = None
    severity: str = ""  # minor | moderate | severe, '' when no damage was found
    severity_score: float | None = None
    damaged_parts: str = ""  # ';'-separated

    @classmethod
    def of(cls, file: str, annotated_file: str, analysis: Analysis) -> ReportRow:
        values = analysis.to_dict()
        return cls(
            file=file,
            status=Status.OK,
            message=analysis.summary,
            annotated_file=annotated_file,
            damage_classes=";".join(values.pop("damage_classes")),
            damaged_parts=";".join(values.pop("damaged_parts")),
            **{k: v for k, v in values.items() if k in _ANALYSIS_COLUMNS},
        )

    @property
    def failed(self) -> bool:
        return self.status != Status.OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": str(self.status)}


REPORT_COLUMNS = tuple(ReportRow.__dataclass_fields__)
_ANALYSIS_COLUMNS = frozenset(REPORT_COLUMNS) - {"file", "status", "message", "annotated_file"}


@dataclass(frozen=True)
class DamagedPart:
    """One damaged part of a vehicle: the worst grade seen on it, and the photo where a damage on it shows with
    the highest confidence."""

    part: str
    severity: str  # the worst grade seen on it ('' when no photo graded it)
    best_photo: str
    score: float  # the confidence of that damage on the best photo

    @property
    def name(self) -> str:
        return self.part.replace("_", " ")

    @property
    def label(self) -> str:
        """'front bumper: severe' (the name alone when ungraded)."""
        return f"{self.name}: {self.severity}" if self.severity else self.name


VEHICLE_COLUMNS = (
    "vehicle", "photos", "photos_with_car", "damaged", "severity", "damaged_parts", "damage_count", "best_photo",
    "photos_not_analysed",
)  # fmt: skip


@dataclass(frozen=True)
class VehicleRow:
    """One vehicle's line of vehicles.csv: what its photos show together. Damage figures come from the photos
    judged damaged; an area seen in two photos counts twice (nothing says two photos show the same dent)."""

    vehicle: str
    photos: int  # photos analysed
    photos_with_car: int
    damaged: bool | None  # any photo damaged; None when none of its photos could be analysed
    severity: str  # the worst grade seen, '' when none
    parts: tuple[DamagedPart, ...]  # each damaged part once, by name
    damage_count: int  # damaged areas over its damaged photos
    photos_not_analysed: int  # photos that could not be analysed (the answer is the others')
    files: tuple[str, ...]  # its photos, as report.csv names them, in the input's order
    most_damaged_photo: str = ""  # the damaged photo with the highest damage confidence

    @property
    def damaged_parts(self) -> str:
        """'front bumper: severe; left door: minor'."""
        return "; ".join(part.label for part in self.parts)

    @property
    def best_photo(self) -> str:
        """'front bumper: AB/front.jpg; left door: AB/left.jpg'; with no part named (no part model), the most
        surely damaged photo."""
        if self.parts:
            return "; ".join(f"{part.name}: {part.best_photo}" for part in self.parts)
        return self.most_damaged_photo

    def csv_row(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in VEHICLE_COLUMNS}

    def to_dict(self) -> dict[str, Any]:
        """The CSV row, each damaged part on its own and the vehicle's files (which vehicle each photo is in)."""
        return self.csv_row() | {"parts": [asdict(part) for part in self.parts], "files": list(self.files)}


@dataclass(frozen=True, eq=False)
class VehiclePhoto:
    """One photo of ``analyze_vehicle``: its analysis, or what happened instead (status and message)."""

    file: str
    status: Status
    message: str = ""
    analysis: Analysis | None = None

    def to_dict(self) -> dict[str, Any]:
        found = self.analysis.to_dict() if self.analysis is not None else {}
        return {"file": self.file, "status": str(self.status), "message": self.message} | found


@dataclass(frozen=True, eq=False)
class VehicleResult:
    """What ``analyze_vehicle`` found: the vehicle's row and each photo's result, in the order given."""

    row: VehicleRow
    photos: tuple[VehiclePhoto, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"vehicle": self.row.to_dict(), "photos": [photo.to_dict() for photo in self.photos]}


@dataclass(frozen=True)
class Summary:
    """A batch in numbers, and every file that was not processed with why."""

    files: int
    photos_analyzed: int
    cars: int
    damaged_cars: int
    damage_instances: int
    damage_classes: dict[str, int]
    not_processed: int
    failures: list[dict[str, str]]
    seconds: float
    models: dict[str, str]
    stopped: str = ""  # why the job stopped before the end ('' when it did not)
    damaged_parts: dict[str, int] = field(default_factory=dict)  # part -> damage instances on it
    severities: dict[str, int] = field(default_factory=dict)  # grade -> damaged photos
    worst_severity: str = ""
    vehicles: list[VehicleRow] = field(default_factory=list)  # one per vehicle, in the input's order
    vehicle_notes: list[str] = field(default_factory=list)  # each vehicles.csv found: used, or why it was ignored

    @property
    def damaged_vehicles(self) -> int:
        return sum(vehicle.damaged is True for vehicle in self.vehicles)

    def to_dict(self) -> dict[str, Any]:
        vehicles = [vehicle.to_dict() for vehicle in self.vehicles]
        return asdict(self) | {"vehicles": vehicles, "damaged_vehicles": self.damaged_vehicles}
