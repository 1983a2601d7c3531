"""What a batch writes: annotated photos, report.csv, vehicles.csv, predictions.json (COCO), summary.json. The only
module that knows these file formats.

Each entry's output is written whole or not at all: an annotated photo that cannot be encoded in its own format
falls back to PNG, and one that cannot be written at all becomes that entry's error row.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .draw import annotate
from .formats import suffix
from .report_html import PhotoPage, report_html
from .results import (
    GRADES,
    REPORT_COLUMNS,
    VEHICLE_COLUMNS,
    Analysis,
    Detection,
    ReportRow,
    Status,
    Summary,
    VehicleRow,
)
from .settings import Settings
from .sinks import OutputNames, Sink
from .vehicles import PartDamage, PhotoFacts, folder_vehicle, vehicle_rows

REPORT_FILES = ("report.csv", "predictions.json", "summary.json", "report.html", "vehicles.csv")
_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}


class Coco:
    """predictions.json as it grows: one image per analysed photo (with its vehicle), its instances, the classes
    seen."""

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.categories: dict[int, str] = {}

    def add(self, file_name: str, size: tuple[int, int], predictions: list[dict[str, Any]], vehicle: str = "") -> None:
        image_id = len(self.images) + 1
        image = {"id": image_id, "file_name": file_name, "width": size[0], "height": size[1], "vehicle": vehicle}
        self.images.append(image)
        for prediction in predictions:
            self.categories[prediction["category_id"]] = prediction.pop("label")
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **prediction})

    def to_dict(self) -> dict[str, Any]:
        categories = [{"id": cid, "name": label} for cid, label in sorted(self.categories.items())]
        return {"images": self.images, "annotations": self.annotations, "categories": categories}


class ReportWriter:
    """Turns entries + analyses into annotated photos, report rows, vehicle rows, COCO predictions and a summary.
    An entry given no vehicle is grouped by its folder."""

    def __init__(self, sink: Sink, settings: Settings, vehicle_notes: Sequence[str] = ()) -> None:
        self.sink, self.settings = sink, settings
        self.rows: list[ReportRow] = []
        self.photos: list[PhotoFacts] = []  # what each vehicle's row is made of (no pixels: 2,000 cost little)
        self.vehicle_notes = list(vehicle_notes)
        self.coco = Coco()
        self.names = OutputNames(reserved=REPORT_FILES)
        self.started = time.monotonic()
        self.stopped = ""
        self.pages: list[PhotoPage] = []  # report.html's sections, thumbnails included

    def add_failure(self, name: str, status: Status, message: str, vehicle: str = "") -> None:
        row = ReportRow(name, status, message)
        self.rows.append(row)
        self.photos.append(PhotoFacts.of(row, vehicle or folder_vehicle(name)))

    def add_analysis(self, name: str, analysis: Analysis, vehicle: str = "") -> None:
        """The annotated photo (written first: a failure there leaves no trace but its error row), then its
        predictions and row."""
        try:
            overlay = annotate(analysis)
            data, out_name = encode_for(overlay, name)
            out_name = self.names.claim(out_name)
            self.sink.write(out_name, data)
        except Exception as exc:  # a photo we cannot draw or write costs its own row, never the zip
            self.add_failure(name, Status.ERROR, f"could not write the annotated photo ({_one_line(exc)})", vehicle)
            return
        vehicle = vehicle or folder_vehicle(name)
        self.pages.append(PhotoPage.of(name, out_name, analysis, overlay))
        self.coco.add(out_name, analysis.size, [coco_prediction(d) for d in analysis.detections], vehicle)
        row = ReportRow.of(name, out_name, analysis)
        self.rows.append(row)
        self.photos.append(PhotoFacts.of(row, vehicle, [PartDamage.of_detection(d) for d in analysis.detections]))

    def summary(self) -> Summary:
        models = {role: ref.public_name for role, ref in self.settings.models.refs().items()}
        seconds = time.monotonic() - self.started
        return summarize(self.rows, models, seconds, self.stopped, vehicle_rows(self.photos), self.vehicle_notes)

    def finish(self) -> None:
        """Write report.csv, vehicles.csv, predictions.json, summary.json and report.html into the sink."""
        summary = self.summary()
        write_reports(self.sink, self.rows, self.coco, summary)
        self.sink.write("report.html", report_html(summary, self.pages).encode())


def write_reports(sink: Sink, rows: list[ReportRow], coco: Coco, summary: Summary) -> None:
    """report.csv, vehicles.csv, predictions.json and summary.json: what every engine writes."""
    sink.write("report.csv", report_csv(rows))
    sink.write("vehicles.csv", vehicles_csv(summary.vehicles))
    sink.write("predictions.json", json.dumps(coco.to_dict()).encode())
    sink.write("summary.json", json.dumps(summary.to_dict(), indent=2, ensure_ascii=False).encode())


def summarize(
    rows: list[ReportRow],
    models: dict[str, str],
    seconds: float,
    stopped: str = "",
    vehicles: Sequence[VehicleRow] = (),
    vehicle_notes: Sequence[str] = (),
) -> Summary:
    """A batch in numbers from its rows; damaged parts and severities count the photos they are found in."""
    ok = [r for r in rows if not r.failed]
    failed = [r for r in rows if r.failed]
    classes = Counter(c for r in ok for c in r.damage_classes.split(";") if c)
    parts = Counter(p for r in ok for p in r.damaged_parts.split(";") if p)
    grades = Counter(r.severity for r in ok if r.severity)
    return Summary(
        files=len(rows),
        photos_analyzed=len(ok),
        cars=sum(r.is_car is True for r in ok),
        damaged_cars=sum(r.is_damaged is True for r in ok),
        damage_instances=sum(r.damage_count or 0 for r in ok),
        damage_classes=dict(classes.most_common()),
        not_processed=len(failed),
        failures=[{"file": r.file, "status": str(r.status), "message": r.message} for r in failed],
        seconds=round(seconds, 2),
        models=models,
        stopped=stopped,
        damaged_parts=dict(parts.most_common()),
        severities={grade: grades[grade] for grade in GRADES if grade in grades},
        worst_severity=next((grade for grade in reversed(GRADES) if grade in grades), ""),
        vehicles=list(vehicles),
        vehicle_notes=list(vehicle_notes),
    )


def encode_for(image: Image.Image, name: str) -> tuple[bytes, str]:
    """The annotated photo's bytes and output name: its own name when its format holds the image, else + .png."""
    data, fmt = encode(image, suffix(name))
    return data, name if _SAVE_FORMATS.get(suffix(name)) == fmt else f"{name}.png"


def annotated_name(name: str) -> str:
    """The annotated photo's name before it is drawn: the photo's own when we write its format, else + .png."""
    return name if suffix(name) in _SAVE_FORMATS else f"{name}.png"


def encode(image: Image.Image, wanted_suffix: str) -> tuple[bytes, str]:
    """The image in the format its name asks for, or PNG when that format cannot hold it (WebP stops at 16383
    pixels a side, JPEG at 65535) or the name's format is none we write (GIF, TIFF, HEIC)."""
    fmt = _SAVE_FORMATS.get(wanted_suffix, "PNG")
    if fmt != "PNG":
        try:
            return _saved(image, fmt), fmt
        except (OSError, ValueError):
            pass
    return _saved(image, "PNG"), "PNG"


def _saved(image: Image.Image, fmt: str) -> bytes:
    """PNG at zlib level 1: a fifth of level 6's time for ~15 % more bytes (a 17000 x 900 photo: 1.0 vs 4.9 s)."""
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}, "PNG": {"compress_level": 1}}.get(fmt, {})
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def coco_prediction(detection: Detection) -> dict[str, Any]:
    """One COCO instance prediction (ids are the file's to give); the RLE mask at the original photo's resolution,
    expanded one instance at a time. The part and the grade ride along as attributes."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(detection.mask_crop.to_array().astype(np.uint8)))
    x1, y1, x2, y2 = detection.box
    return {
        "category_id": detection.class_id + 1,
        "label": detection.label,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": float(mask_utils.area(rle)),
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "score": round(detection.score, 5),
        "iscrowd": 0,
        "attributes": {"part": detection.part, "severity": detection.severity},
    }


def report_csv(rows: list[ReportRow]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_safe(v) for k, v in row.to_dict().items()})
    return buffer.getvalue().encode("utf-8")


def vehicles_csv(vehicles: Sequence[VehicleRow]) -> bytes:
    """One row per vehicle (the header alone when there is none)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VEHICLE_COLUMNS)
    writer.writeheader()
    for vehicle in vehicles:
        writer.writerow({k: _csv_safe(v) for k, v in vehicle.csv_row().items()})
    return buffer.getvalue().encode("utf-8")


def _csv_safe(value: Any) -> Any:
    """Names like '=cmd|...' must not run as formulas when the report is opened in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
