"""report.html: the report an adjuster files. Self-contained (pictures embedded), readable offline, printable to PDF
from a browser: totals first, then one section per photo with its picture, verdicts and damages table."""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass

from PIL import Image

from .results import Analysis, Summary

THUMBNAIL = 640  # longest side of the embedded pictures: enough to see the masks, small enough for hundreds

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
h1 { margin-bottom: 0.2em; } .muted { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } td, th { border: 1px solid #bbb; padding: 4px 8px; }
th { background: #f2f2f2; text-align: left; }
section { page-break-inside: avoid; border-top: 2px solid #ddd; padding-top: 1em; margin-top: 1em; }
img { max-width: 100%; height: auto; border: 1px solid #ccc; }
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

    @classmethod
    def of(cls, file: str, annotated_file: str, analysis: Analysis, overlay: Image.Image) -> PhotoPage:
        damages = tuple(
            (d.part, d.damage_type, d.severity, round(d.area_pct, 2), round(d.score, 3)) for d in analysis.detections
        )
        severity = analysis.severity.label if analysis.severity else ""
        return cls(file, annotated_file, analysis.summary, severity, _data_uri(overlay), damages)

    @property
    def parts(self) -> list[str]:
        return [part for part, *_ in self.damages if part]


def _data_uri(image: Image.Image) -> str:
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def report_html(summary: Summary, pages: list[PhotoPage]) -> str:
    title = "Car damage report"
    body = [f"<h1>{title}</h1>", f'<p class="muted">{time.strftime("%Y-%m-%d %H:%M")}</p>', _totals(summary)]
    body += [_failures(summary)] if summary.failures else []
    body += [_section(page) for page in pages]
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _totals(summary: Summary) -> str:
    parts = ", ".join(f"{_e(part.replace('_', ' '))} ({n})" for part, n in summary.damaged_parts.items()) or "none"
    grades = ", ".join(f"{grade} ({n})" for grade, n in summary.severities.items()) or "none"
    rows = [
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


def _section(page: PhotoPage) -> str:
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
        f"<section><h2>{_e(page.file)}</h2><p>{_e(page.summary)}</p>{grade}"
        f'<a href="{link}"><img src="{page.picture}" alt="{_e(page.file)}, annotated"></a>{table}</section>'
    )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
