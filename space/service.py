"""The endpoint functions behind the page and the API (``CarDamageApp``), and what they ask of gradio's queue."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

import pipeline
from pipeline.results import VEHICLE_COLUMNS

from . import config
from .jobs import JobFolders
from .status import ModelStatus, banner_markdown, models_markdown
from .text import public_text, summary_markdown, vehicle_markdown

DAMAGE_HEADERS = ["part", "type", "severity", "area %", "confidence", "box (x1, y1, x2, y2)"]
ZIP_HEADERS = [
    "file", "status", "message", "is_car", "car_score", "is_damaged", "damage_score",
    "damage_count", "damage_classes", "damage_area_pct", "severity", "damaged_parts",
]  # fmt: skip
PART_HEADERS = ["part", "worst grade", "best photo", "confidence"]
VEHICLE_HEADERS = list(VEHICLE_COLUMNS)


def client_gone() -> bool:
    """Whether the request being served has been cancelled or lost its client (closed tab): gradio stops
    sending to such an event and forgets it, but cannot stop a function already running in a thread."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:  # not served through the queue (a direct call, a test)
        return False
    event = queue.event_ids_to_events.get(event_id)
    return event is None or not event.alive


def waiting(concurrency_id: str) -> int:
    """Requests waiting (not yet running) for one concurrency group of the queue being served."""
    from gradio.context import LocalContext

    queue = getattr(LocalContext.blocks.get(None), "_queue", None)
    group = getattr(queue, "event_queue_per_concurrency_id", {}).get(concurrency_id)
    return len(group.queue) if group is not None else 0


class CarDamageApp:
    """The endpoint functions, bound to one Settings (so tests can run apps with other models)."""

    def __init__(self, settings: pipeline.Settings) -> None:
        self.settings = settings
        self.status = ModelStatus(settings)
        self.jobs = JobFolders()
        self.zip_limits = pipeline.ZipLimits(max_total_pixels=config.MAX_ZIP_MEGAPIXELS * 1_000_000)

    def _settings(self, car: float, damage: float, mask: float, always_segment: bool) -> pipeline.Settings:
        return self.settings.with_thresholds(car=car, damage=damage, mask=mask, always_segment=always_segment)

    def analyze_image(
        self,
        image: str | None,
        car_threshold: float | None = None,
        damage_threshold: float | None = None,
        mask_threshold: float | None = None,
        always_segment: bool | None = None,
    ) -> tuple[str, dict[str, float], Image.Image, dict[str, Any], dict[str, Any]]:
        """Analyse one photo of a car for damage, as an insurance adjuster would: is there a car, is it damaged,
        how badly (minor / moderate / severe), where (one mask per damaged area: dent, scratch, broken part, ...)
        and on which car part (front bumper, hood, door, ...). Leave the thresholds out to use the app's defaults.

        Args:
            image: the photo (JPEG, PNG, WebP, HEIC, BMP, GIF or TIFF), uploaded; EXIF orientation is applied.
            car_threshold: minimum car probability (0-1) to call the photo a car; lower finds more close-ups.
            damage_threshold: minimum damage probability (0-1) to call the car damaged.
            mask_threshold: minimum confidence (0-1) of a damaged area to outline it.
            always_segment: also outline possible damage on cars judged undamaged.

        Returns:
            summary: one sentence, e.g. "Damaged car (car 97%, damage 88%). Severity: moderate (71%). 2 damaged
                area(s): dent, scratch. Damaged parts: front bumper.". "No car found" and "No damage found" are
                ordinary answers.
            confidences: {"car": probability, "damage": probability}; "damage" is absent when no car was found.
            annotated: the photo with masks, boxes and labels drawn (longest side at most 1600 pixels).
            damages: one row per damaged area: part, type, severity, area % of the photo, confidence, box
                (x1, y1, x2, y2 in the original photo's pixels).
            result: the full result as JSON: is_car, car_score, is_damaged, damage_score, severity,
                severity_score, damaged_parts, damages (label, type, severity, part, score, box, area_pct), models.
        """
        if not image:
            raise gr.Error("Upload a photo first.")
        settings = self._settings(car_threshold, damage_threshold, mask_threshold, always_segment)
        try:
            analysis = pipeline.analyze(image, settings)
        except pipeline.PipelineError as exc:  # bad photo or a model that cannot be loaded
            raise gr.Error(public_text(str(exc))) from None
        confidences = {"car": round(analysis.car.score, 4)}
        if analysis.damage is not None:
            confidences["damage"] = round(analysis.damage.score, 4)
        damages = [damage_row(d) for d in analysis.detections]
        result = analysis.to_dict() | {"models": _model_names(settings)}
        table = {"headers": DAMAGE_HEADERS, "data": damages}
        return analysis.summary, confidences, pipeline.annotate(analysis), table, result

    def analyze_example(self, image: str) -> tuple[Any, ...]:
        """An example photo with the app's default thresholds, and its before / after (the result is cached
        whole, so the slider shows the example too)."""
        *answer, annotated, damages, result = self.analyze_image(image)
        return (*answer, annotated, damages, result, self.before_after(image, np.asarray(annotated)))

    def analyze_zip(
        self,
        archive: str | None,
        car_threshold: float | None = None,
        damage_threshold: float | None = None,
        mask_threshold: float | None = None,
        always_segment: bool | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str, dict[str, Any], list[tuple[Image.Image, str]], dict[str, Any]]:
        """Analyse every photo in a zip; returns a zip of annotated photos with report.csv, predictions.json (COCO)
        and summary.json.

        Args:
            archive: a .zip of photos (folders inside are kept; non-photos are listed as skipped).
            car_threshold: minimum car probability to call a photo a car.
            damage_threshold: minimum damage probability to call a car damaged.
            mask_threshold: minimum confidence of a damage instance (mask).
            always_segment: also look for damage masks on cars judged undamaged.

        Returns:
            results: the result zip (annotated photos under their original names, report.csv, predictions.json,
                summary.json).
            summary_text: the summary for people (Markdown).
            report: one row per file of the zip: file, status, message, verdicts and scores.
            gallery: the first annotated photos with their verdicts.
            summary: the summary as JSON (files, photos analysed, cars, damaged cars, damaged parts, severities,
                failures and why).
        """
        if not archive:
            raise gr.Error("Upload a zip of photos first.")
        settings = self._settings(car_threshold, damage_threshold, mask_threshold, always_segment)

        def report(done: int, total: int, name: str) -> None:
            progress((done, total), desc=f"Photo {done}/{total}: {name}", unit="files")

        progress(0, desc="Opening the zip")
        control = pipeline.JobControl(seconds=config.JOB_SECONDS, client_gone=client_gone)
        with self.jobs.job() as folder:
            try:
                batch = pipeline.process_zip(archive, folder, settings, report, self.zip_limits, control)
            except pipeline.PipelineError as exc:  # refused zip or a model that cannot be loaded
                raise gr.Error(public_text(str(exc))) from None
        table = {"headers": ZIP_HEADERS, "data": [[getattr(row, c) for c in ZIP_HEADERS] for row in batch.rows]}
        summary = batch.summary
        return str(batch.archive), summary_markdown(summary), table, _gallery(batch), summary.to_dict()

    def analyze_vehicle(
        self,
        photos: list[str] | None,
        car_threshold: float | None = None,
        damage_threshold: float | None = None,
        mask_threshold: float | None = None,
        always_segment: bool | None = None,
    ) -> tuple[str, dict[str, Any], list[tuple[Image.Image, str]], dict[str, Any]]:
        """Analyse several photos of ONE vehicle (every angle of the same car) and answer for the vehicle: is it
        damaged, how badly at worst (minor / moderate / severe), which parts are damaged, each with its worst grade
        and the photo that shows it best; plus each photo's own result. Use /analyze_image for a single photo.
        Leave the thresholds out to use the app's defaults.

        Args:
            photos: the vehicle's photos (1 to 30 files: JPEG, PNG, WebP, HEIC, BMP, GIF or TIFF), uploaded; a photo
                that cannot be read is reported in its own result and the others still count.
            car_threshold: minimum car probability (0-1) to call a photo a car; lower finds more close-ups.
            damage_threshold: minimum damage probability (0-1) to call a photo's car damaged.
            mask_threshold: minimum confidence (0-1) of a damaged area to outline it.
            always_segment: also outline possible damage on cars judged undamaged.

        Returns:
            summary: the vehicle's answer for people (Markdown): damaged or not, worst severity, damaged parts.
            parts: one row per damaged part: part, worst grade, best photo (file name), confidence there.
            gallery: each analysed photo with masks drawn, captioned with its file name and verdict.
            result: the answer as JSON: {"vehicle": {vehicle, photos (analysed), photos_with_car, damaged (true /
                false / null when no photo could be analysed), severity (worst grade or ""), damaged_parts,
                damage_count, best_photo, photos_not_analysed, parts: [{part, severity, best_photo, score}],
                files}, "photos": [{file, status ("ok" or "error"), message, and for an analysed photo: is_car,
                car_score, is_damaged, damage_score, severity, damaged_parts, damages, summary, ...}]}.
        """
        if not photos:
            raise gr.Error("Upload the vehicle's photos first.")
        settings = self._settings(car_threshold, damage_threshold, mask_threshold, always_segment)
        try:
            result = pipeline.analyze_vehicle(photos, settings)
        except pipeline.PipelineError as exc:  # too many photos, or a model that cannot be loaded
            raise gr.Error(public_text(str(exc))) from None
        parts = [[p.name, p.severity, p.best_photo, round(p.score, 3)] for p in result.row.parts]
        table = {"headers": PART_HEADERS, "data": parts}
        answer = result.to_dict() | {"models": _model_names(settings)}
        return vehicle_markdown(result), table, _vehicle_gallery(result), answer

    def vehicles_table(self, summary: dict[str, Any] | None) -> dict[str, Any]:
        """The zip's vehicles (vehicles.csv's columns) out of its summary, for the table above the per-file one."""
        vehicles = (summary or {}).get("vehicles") or []
        return {"headers": VEHICLE_HEADERS, "data": [[v.get(c) for c in VEHICLE_HEADERS] for v in vehicles]}

    def before_after(self, photo: str | None, annotated: Any) -> tuple[Image.Image, Image.Image] | None:
        """The photo as analysed beside its overlay, for the page's slider (decoded again: a few tens of ms at
        the working size, and the API's outputs stay as they are)."""
        if not photo or annotated is None:
            return None
        try:
            before = pipeline.load_photo(photo, self.settings.limits).image
        except pipeline.PipelineError:
            return None
        return before, Image.fromarray(annotated)

    def report_page(self, archive: str | None) -> str | None:
        """report.html out of a result zip, for its own download link on the page."""
        if not archive:
            return None
        with self.jobs.job() as folder, zipfile.ZipFile(archive) as result:
            (folder / "report.html").write_bytes(result.read("report.html"))
            return str(folder / "report.html")

    def zip_queue_check(self, archive: str | None, *thresholds: object) -> list[dict[str, Any]]:
        """Before a zip joins the queue: refuse it when ZIP_QUEUE_SIZE zips already wait, so that zips never take
        the places photos need (the queue's size is shared)."""
        full = waiting("zip") >= config.ZIP_QUEUE_SIZE
        message = f"{config.ZIP_QUEUE_SIZE} zips are already waiting: please try again in a few minutes."
        return [gr.validate(not full, message if full else ""), *(gr.validate(True, "") for _ in thresholds)]

    def model_report(self) -> tuple[dict[str, Any], str, gr.Timer]:
        """The banner (shown only when a model failed), the models table, and the timer that polls until the
        models have loaded. Never waits: a page load must not hold a worker while the models load."""
        done = self.status.start().done
        banner = banner_markdown(self.status) if done else ""
        return gr.update(value=banner, visible=bool(banner)), models_markdown(self.status), gr.Timer(active=not done)


def damage_row(damage: pipeline.Detection) -> list[Any]:
    """One line of the damages table, in DAMAGE_HEADERS' order."""
    box = ", ".join(f"{v:.0f}" for v in damage.box)
    return [damage.part, damage.damage_type, damage.severity, round(damage.area_pct, 2), round(damage.score, 3), box]


def _model_names(settings: pipeline.Settings) -> dict[str, str]:
    return {role: ref.public_name for role, ref in settings.models.refs().items()}


def _gallery(batch: pipeline.BatchResult) -> list[tuple[Image.Image, str]]:
    """Thumbnails of the first annotated photos, read back from the result archive."""
    items = []
    with zipfile.ZipFile(batch.archive) as zf:
        for row in [r for r in batch.rows if not r.failed][: config.GALLERY_SIZE]:
            with Image.open(io.BytesIO(zf.read(row.annotated_file))) as image:
                thumb = image.convert("RGB")
            thumb.thumbnail((768, 768))
            items.append((thumb, f"{row.file}: {row.message}"))
    return items


def _vehicle_gallery(result: pipeline.VehicleResult) -> list[tuple[Image.Image, str]]:
    """Each analysed photo of a vehicle, annotated (longest side at most 1024 px), with its verdict."""
    items = []
    for photo in result.photos:
        if photo.analysis is not None:
            image = pipeline.annotate(photo.analysis)
            image.thumbnail((1024, 1024))
            items.append((image, f"{photo.file}: {photo.analysis.summary}"))
    return items
