"""What a batch writes: annotated photos, report.csv, predictions.json (COCO), summary.json. The only module that
knows these file formats.

Each entry's output is written whole or not at all: an annotated photo that cannot be encoded in its own format
falls back to PNG, and one that cannot be written at all becomes that entry's error row.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image

from .draw import annotate
from .formats import suffix
from .report_html import PhotoPage, report_html
from .results import GRADES, REPORT_COLUMNS, Analysis, Detection, ReportRow, Status, Summary
from .settings import Settings
from .sinks import OutputNames, Sink

REPORT_FILES = ("report.csv", "predictions.json", "summary.json", "report.html")
_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}


class ReportWriter:
    """Turns entries + analyses into annotated photos, report rows, COCO predictions and a summary."""

    def __init__(self, sink: Sink, settings: Settings) -> None:
        self.sink, self.settings = sink, settings
        self.rows: list[ReportRow] = []
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.categories: dict[int, str] = {}
        self.names = OutputNames(reserved=REPORT_FILES)
        self.started = time.monotonic()
        self.stopped = ""
        self.pages: list[PhotoPage] = []  # report.html's sections, thumbnails included

    def add_failure(self, name: str, status: Status, message: str) -> None:
        self.rows.append(ReportRow(name, status, message))

    def add_analysis(self, name: str, analysis: Analysis) -> None:
        """The annotated photo (written first: a failure there leaves no trace but its error row), then its
        predictions and row."""
        try:
            overlay = annotate(analysis)
            data, fmt = encode(overlay, suffix(name))
            out_name = self.names.claim(name if _SAVE_FORMATS.get(suffix(name)) == fmt else f"{name}.png")
            self.sink.write(out_name, data)
        except Exception as exc:  # a photo we cannot draw or write costs its own row, never the zip
            self.add_failure(name, Status.ERROR, f"could not write the annotated photo ({_one_line(exc)})")
            return
        self.pages.append(PhotoPage.of(name, out_name, analysis, overlay))
        image_id = len(self.images) + 1
        width, height = analysis.size
        self.images.append({"id": image_id, "file_name": out_name, "width": width, "height": height})
        for detection in analysis.detections:
            self.categories[detection.class_id] = detection.label
            self.annotations.append(coco_annotation(len(self.annotations) + 1, image_id, detection))
        self.rows.append(ReportRow.of(name, out_name, analysis))

    def coco(self) -> dict[str, Any]:
        categories = [{"id": cid + 1, "name": label} for cid, label in sorted(self.categories.items())]
        return {"images": self.images, "annotations": self.annotations, "categories": categories}

    def summary(self) -> Summary:
        ok = [r for r in self.rows if not r.failed]
        failed = [r for r in self.rows if r.failed]
        classes = Counter(c for r in ok for c in r.damage_classes.split(";") if c)
        parts = Counter(part for page in self.pages for part in page.parts)
        grades = Counter(r.severity for r in ok if r.severity)
        return Summary(
            files=len(self.rows),
            photos_analyzed=len(ok),
            cars=sum(r.is_car is True for r in ok),
            damaged_cars=sum(r.is_damaged is True for r in ok),
            damage_instances=sum(r.damage_count or 0 for r in ok),
            damage_classes=dict(classes.most_common()),
            not_processed=len(failed),
            failures=[{"file": r.file, "status": str(r.status), "message": r.message} for r in failed],
            seconds=round(time.monotonic() - self.started, 2),
            models={role: ref.public_name for role, ref in self.settings.models.refs().items()},
            stopped=self.stopped,
            damaged_parts=dict(parts.most_common()),
            severities={grade: grades[grade] for grade in GRADES if grade in grades},
            worst_severity=next((grade for grade in reversed(GRADES) if grade in grades), ""),
        )

    def finish(self) -> None:
        """Write report.csv, predictions.json, summary.json and report.html into the sink."""
        summary = self.summary()
        self.sink.write("report.csv", report_csv(self.rows))
        self.sink.write("predictions.json", json.dumps(self.coco()).encode())
        self.sink.write("summary.json", json.dumps(summary.to_dict(), indent=2, ensure_ascii=False).encode())
        self.sink.write("report.html", report_html(summary, self.pages).encode())


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
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt in {"JPEG", "WEBP"} else {}))
    return buffer.getvalue()


def coco_annotation(ann_id: int, image_id: int, detection: Detection) -> dict[str, Any]:
    """One COCO instance prediction; the RLE mask at the original photo's resolution (expanded one at a time)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(detection.mask_crop.to_array().astype(np.uint8)))
    x1, y1, x2, y2 = detection.box
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": detection.class_id + 1,
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


def _csv_safe(value: Any) -> Any:
    """Names like '=cmd|...' must not run as formulas when the report is opened in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
