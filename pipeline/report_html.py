"""report.html: the report an adjuster files. Self-contained (pictures embedded), readable offline, printable to PDF
from a browser: totals first, then one section per vehicle (its photos side by side, its damaged parts), then one
section per photo with its picture, verdicts and damages table. Every name from the input is shown as text."""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass

from PIL import Image

from .results import Analysis, Summary, VehicleRow

THUMBNAIL = 640  # longest side of the embedded pictures: enough to see the masks, small enough for hundreds
VEHICLE_THUMBNAIL = 160  # a vehicle's photos side by side: enough to tell the angles apart

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
h1 { margin-bottom: 0.2em; } .muted { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } td, th { border: 1px solid #bbb; padding: 4px 8px; }
th { background: #f2f2f2; text-align: left; }
section { page-break-inside: avoid; border-top: 2px solid #ddd; padding-top: 1em; margin-top: 1em; }
img { max-width: 100%; height: auto; border: 1px solid #ccc; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; } .thumbs figure { margin: 0; font-size: 0.8em; }
.severe { color: #b00; font-weight: 600; } .moderate { color: #b60; font-weight: 600; }
@media print { body { margin: 1cm; } a { color: inherit; text-decoration: none; } }
"""


@dataclass(frozen=True)
class PhotoPage:
    """One photo's section of the report."""

    file: str
    annotated_file: str
    summary: str
    severity: str
    picture: str  # a data URI (JPEG)
    damages: tuple[tuple[str, str, str, float, float], ...]  # part, type, severity, area %, confidence
    thumbnail: str = ""  # a smaller data URI, for its vehicle's section

    @classmethod
    def of(cls, file: str, annotated_file: str, analysis: Analysis, overlay: Image.Image) -> PhotoPage:
        damages = tuple(
            (d.part, d.damage_type, d.severity, round(d.area_pct, 2), round(d.score, 3)) for d in analysis.detections
        )
        severity = analysis.severity.label if analysis.severity else ""
        thumbnail = _data_uri(overlay, VEHICLE_THUMBNAIL, quality=70)
        return cls(file, annotated_file, analysis.summary, severity, _data_uri(overlay), damages, thumbnail)

    @property
    def parts(self) -> list[str]:
        return [part for part, *_ in self.damages if part]


def _data_uri(image: Image.Image, side: int = THUMBNAIL, quality: int = 80) -> str:
    thumb = image.copy()
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def report_html(summary: Summary, pages: list[PhotoPage]) -> str:
    title = "Car damage report"
    body = [f"<h1>{title}</h1>", f'<p class="muted">{time.strftime("%Y-%m-%d %H:%M")}</p>', _totals(summary)]
    body += [_failures(summary)] if summary.failures else []
    body += [_vehicle_notes(summary.vehicle_notes)] if summary.vehicle_notes else []
    anchors = {page.file: (f"photo-{i}", page) for i, page in enumerate(pages)}
    body += [_vehicle_section(vehicle, anchors) for vehicle in summary.vehicles]
    body += [_section(page, f"photo-{i}") for i, page in enumerate(pages)]
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _totals(summary: Summary) -> str:
    parts = ", ".join(f"{_e(part.replace('_', ' '))} ({n})" for part, n in summary.damaged_parts.items()) or "none"
    grades = ", ".join(f"{grade} ({n})" for grade, n in summary.severities.items()) or "none"
    rows = [
        ("Vehicles", f"{len(summary.vehicles)} ({summary.damaged_vehicles} damaged)"),
        ("Photos", f"{summary.photos_analyzed} analysed of {summary.files} files"),
        ("Cars", summary.cars),
        ("Damaged cars", summary.damaged_cars),
        ("Damaged areas", summary.damage_instances),
        ("Damaged parts", parts),
        ("Severity of damaged cars", grades),
        ("Worst severity", f'<span class="{summary.worst_severity}">{summary.worst_severity or "none"}</span>'),
    ]
    cells = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f"<table>{cells}</table>"


def _failures(summary: Summary) -> str:
    items = "".join(f"<li>{_e(f['file'])} ({f['status']}): {_e(f['message'])}</li>" for f in summary.failures)
    return f"<h2>Not processed</h2><ul>{items}</ul>"


def _vehicle_notes(notes: list[str]) -> str:
    return "".join(f'<p class="muted">{_e(note)}</p>' for note in notes)


def _vehicle_section(vehicle: VehicleRow, anchors: dict[str, tuple[str, PhotoPage]]) -> str:
    """The vehicle's verdict, its analysed photos side by side (each a link to its own section), its parts."""
    shown = [anchors[file] for file in vehicle.files if file in anchors]
    thumbs = "".join(
        f'<figure><a href="#{anchor}"><img src="{page.thumbnail}" alt="{_e(page.file)}"></a>'
        f"<figcaption>{_e(page.file)}</figcaption></figure>"
        for anchor, page in shown
    )
    rows = "".join(
        f'<tr><td>{_e(part.name)}</td><td><span class="{_e(part.severity)}">{_e(part.severity) or "–"}</span></td>'
        f"<td>{_photo_link(part.best_photo, anchors)}</td></tr>"
        for part in vehicle.parts
    )
    table = f"<table><tr><th>damaged part</th><th>worst severity</th><th>best photo</th></tr>{rows}</table>"
    return (
        f'<section class="vehicle"><h2>Vehicle {_e(vehicle.vehicle)}</h2><p>{_e(_vehicle_verdict(vehicle))}</p>'
        f'<div class="thumbs">{thumbs}</div>{table if rows else ""}</section>'
    )


def _vehicle_verdict(vehicle: VehicleRow) -> str:
    verdict = {True: "damaged", False: "no damage found", None: "not analysed"}[vehicle.damaged]
    verdict = "no car found" if vehicle.damaged is False and not vehicle.photos_with_car else verdict
    text = f"{vehicle.photos} photo(s) analysed, {vehicle.photos_with_car} with a car: {verdict}"
    text += f", worst severity {vehicle.severity}" if vehicle.severity else ""
    text += f", {vehicle.damage_count} damaged area(s) over its photos" if vehicle.damage_count else ""
    text += f"; best photo {vehicle.most_damaged_photo}" if vehicle.damaged and not vehicle.parts else ""
    missing = vehicle.photos_not_analysed
    return text + (f". {missing} photo(s) could not be analysed." if missing else ".")


def _photo_link(file: str, anchors: dict[str, tuple[str, PhotoPage]]) -> str:
    return f'<a href="#{anchors[file][0]}">{_e(file)}</a>' if file in anchors else _e(file)


def _section(page: PhotoPage, anchor: str) -> str:
    grade = f'<p>Severity: <span class="{page.severity}">{page.severity}</span></p>' if page.severity else ""
    rows = "".join(
        f"<tr><td>{_e(part.replace('_', ' ')) or '–'}</td><td>{_e(kind)}</td><td>{severity or '–'}</td>"
        f"<td>{area:.2f}</td><td>{score:.0%}</td></tr>"
        for part, kind, severity, area, score in page.damages
    )
    table = (
        f"<table><tr><th>part</th><th>type</th><th>severity</th><th>area %</th><th>confidence</th></tr>{rows}</table>"
        if rows
        else ""
    )
    link = html.escape(page.annotated_file, quote=True)
    return (
        f'<section><h2 id="{anchor}">{_e(page.file)}</h2><p>{_e(page.summary)}</p>{grade}'
        f'<a href="{link}"><img src="{page.picture}" alt="{_e(page.file)}, annotated"></a>{table}</section>'
    )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
