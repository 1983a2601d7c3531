"""Markdown for every visitor: server paths shortened, strangers' file names escaped, the batch summary."""

from __future__ import annotations

import re

import pipeline

DESCRIPTION = """\
# 🚗 Car damage detection
Upload a photo: is there a car, is it damaged, how badly, where (instance masks of dents, scratches, ...) and on
which part. Upload a zip of photos to get every photo annotated plus a report to file (report.html, report.csv).
Several photos of one vehicle give one answer for the vehicle (its damaged parts, their worst grade, the best
photo of each). The API (link at the bottom) exposes `/analyze_image`, `/analyze_vehicle` and `/analyze_zip`; the
Space is also an MCP server.
"""


def public_text(text: str) -> str:
    """A message for every visitor: server paths shortened to their last part (the folders are the server's)."""
    return re.sub(r"(?:~|\.{0,2})(?:/[^/\s'\"]+)+/([^/\s'\"]+)", r"\1", text)


def md_escape(text: str) -> str:
    """A file name or message shown in Markdown as the text it is (names come from strangers' zips): the
    characters that make markup, links, HTML or maths mid-line are escaped."""
    return re.sub(r"([\\`*_\[\]<>|~$])", r"\\\1", text)


def summary_markdown(summary: pipeline.Summary) -> str:
    """The batch summary for people: counts, then each file that was not processed and why."""
    text = (
        f"**{summary.files} files** · {summary.photos_analyzed} photos analysed · "
        f"**{summary.cars} cars** · **{summary.damaged_cars} damaged cars** · "
        f"{summary.damage_instances} damaged areas · {summary.not_processed} not processed "
        f"· {summary.seconds:.1f} s"
    )
    if summary.stopped:
        text += f"\n\n**Stopped early** ({md_escape(summary.stopped)}): the archive holds what was done."
    if summary.damage_classes:
        text += "\n\nDamage classes: " + ", ".join(f"{md_escape(k)} ({v})" for k, v in summary.damage_classes.items())
    if summary.damaged_parts:
        parts = ", ".join(f"{md_escape(k.replace('_', ' '))} ({v})" for k, v in summary.damaged_parts.items())
        text += f"\n\nDamaged parts: {parts}"
    if summary.severities:
        grades = ", ".join(f"{grade} ({n})" for grade, n in summary.severities.items())
        text += f"\n\nSeverity of damaged cars: {grades} · worst: **{summary.worst_severity}**"
    if summary.failures:
        text += "\n\n**Not processed:**\n" + "\n".join(
            f"- {md_escape(f['file'])} ({f['status']}): {md_escape(f['message'])}" for f in summary.failures
        )
    return text


def vehicle_markdown(result: pipeline.VehicleResult) -> str:
    """The vehicle's answer for people: the verdict over its photos, its parts, and each photo not analysed."""
    row = result.row
    damaged = sum(p.analysis is not None and p.analysis.is_damaged for p in result.photos)
    if row.damaged is None:
        text = "**No photo could be analysed.**"
    elif row.damaged:
        grade = f" · worst severity: **{row.severity}**" if row.severity else ""
        areas = f"{row.damage_count} damaged area(s)"
        text = f"**Damaged vehicle**: {damaged} of {row.photos} photos show damage{grade} · {areas}"
    else:
        text = f"**No damage found** on {row.photos} photo(s) ({row.photos_with_car} with a car)"
    if row.parts:
        text += "\n\nDamaged parts: " + ", ".join(md_escape(part.label) for part in row.parts)
    elif row.most_damaged_photo:
        text += f"\n\nMost clearly damaged on: {md_escape(row.most_damaged_photo)}"
    failed = [p for p in result.photos if p.analysis is None]
    if failed:
        text += "\n\n**Not analysed:**\n" + "\n".join(
            f"- {md_escape(p.file)}: {md_escape(public_text(p.message))}" for p in failed
        )
    return text
