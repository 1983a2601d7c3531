"""Car damage detection — the Gradio Space. Only wires widgets to ``pipeline``; no model code here.

Run: ``python app.py [--models PROFILE] [--share] [--host 0.0.0.0] [--port 7860]``.
Importing this module only builds the page (``demo``); models load in the background once the server starts.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

import pipeline
from pipeline.formats import IMAGE_SUFFIXES, list_photos
from pipeline.settings import ENV_VARS

logger = logging.getLogger("app")

EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR") or Path(__file__).parent / "examples")
EXAMPLES_REPO = os.environ.get("EXAMPLES_REPO", "").strip()
MAX_EXAMPLES = 24
# The free tier: 2 vCPUs, 16 GB. An upload over this never reaches the app; a zip is also held to a pixel budget
# (decoding is what costs) and a wall-clock budget, after which it returns what it has done.
MAX_FILE_SIZE = os.environ.get("MAX_FILE_SIZE", "100mb")
MAX_ZIP_MEGAPIXELS = int(os.environ.get("MAX_ZIP_MEGAPIXELS", "2000"))
JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "600"))
QUEUE_SIZE = int(os.environ.get("QUEUE_SIZE", "40"))  # waiting requests beyond this are turned away
ZIP_QUEUE_SIZE = int(os.environ.get("ZIP_QUEUE_SIZE", "8"))  # waiting zips: the rest of the queue is for photos
GALLERY_SIZE = 12
JOB_MAX_AGE = 600  # seconds a finished job folder is kept (gradio has copied the archive by then)

DAMAGE_HEADERS = ["part", "type", "severity", "area %", "confidence", "box (x1, y1, x2, y2)"]
ZIP_HEADERS = [
    "file", "status", "message", "is_car", "car_score", "is_damaged", "damage_score",
    "damage_count", "damage_classes", "damage_area_pct", "severity", "damaged_parts",
]  # fmt: skip

DESCRIPTION = """\
# 🚗 Car damage detection
Upload a photo: is there a car, is it damaged, how badly, where (instance masks of dents, scratches, ...) and on
which part. Upload a zip of photos to get every photo annotated plus a report to file (report.html, report.csv).
The API (link at the bottom) exposes `/analyze_image` and `/analyze_zip`; the Space is also an MCP server.
"""


# ---------------------------------------------------------------- per-request folders


class JobFolders:
    """One private temp folder per zip request, under a root only this process uses (never served as-is),
    created with the first job. Gradio copies the returned archive into its own cache, so a finished folder is
    deleted by the next request once it is older than ``max_age``; a failed request deletes its folder at once."""

    def __init__(self, max_age: float = JOB_MAX_AGE) -> None:
        self.max_age = max_age
        self._root: Path | None = None
        self._active: set[Path] = set()
        self._lock = threading.RLock()  # sweep() holds it while it asks for the root

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="car-damage-jobs-"))
                atexit.register(shutil.rmtree, self._root, ignore_errors=True)
            return self._root

    @contextmanager
    def job(self) -> Iterator[Path]:
        self.sweep()
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=self.root))
        with self._lock:
            self._active.add(folder)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._active.discard(folder)

    def sweep(self, max_age: float | None = None) -> None:
        """Delete finished job folders older than ``max_age`` seconds."""
        limit = self.max_age if max_age is None else max_age
        now = time.time()
        with self._lock:
            stale = [p for p in self.root.iterdir() if p not in self._active and now - p.stat().st_mtime >= limit]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- models: load once, in the background


class ModelStatus:
    """Loads the models once, in a background thread; the page polls ``done`` instead of waiting for it."""

    def __init__(self, settings: pipeline.Settings) -> None:
        self.settings = settings
        self.problems: dict[str, pipeline.ModelLoadError | None] | None = None
        self.error = ""  # an unexpected failure of the loader itself
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> ModelStatus:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="load-models", daemon=True)
                self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether loading has finished within ``timeout`` seconds (tests and the command line)."""
        self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        return self.done

    def _load(self) -> None:
        try:
            self.problems = pipeline.load_models(self.settings)
        except Exception as exc:  # the banner must still appear, whatever went wrong
            logger.exception("loading the models failed")
            self.error = f"Loading the models failed: {public_text(str(exc))}"
        for problem in (self.problems or {}).values():
            if problem is not None:
                logger.error("%s", problem)  # the server's log keeps the paths


def public_text(text: str) -> str:
    """A message for every visitor: server paths shortened to their last part (the folders are the server's)."""
    return re.sub(r"(?:~|\.{0,2})(?:/[^/\s'\"]+)+/([^/\s'\"]+)", r"\1", text)


def banner_markdown(status: ModelStatus) -> str:
    """A warning naming each model that cannot be loaded, why, and the env var to set; '' when all loaded."""
    lines = [f"- {public_text(str(problem))}" for problem in (status.problems or {}).values() if problem is not None]
    if status.error:
        lines.append(f"- {status.error}")
    if not lines:
        return ""
    return "### ⚠️ Some models could not be loaded\n" + "\n".join(lines)


def models_markdown(status: ModelStatus) -> str:
    """A table of the models in use: id (a local model by its name only), revision, and whether it loaded."""
    rows = ["| role | model | revision | env var | status |", "|---|---|---|---|---|"]
    for role, ref in status.settings.models.refs().items():
        revision = ref.revision or ("local" if ref.looks_local else "default branch")
        model = ref.public_name if ref.looks_local else (f"{ref.id} (file {ref.filename})" if ref.filename else ref.id)
        rows.append(f"| {role} | `{model}` | {revision} | `{ENV_VARS[role]}` | {_load_state(status, role)} |")
    return "\n".join(rows)


def _load_state(status: ModelStatus, role: str) -> str:
    if not status.done:
        return "⏳ loading"
    if status.error or status.problems is None:
        return "❌ not loaded"
    return "❌ failed" if status.problems.get(role) else "✅ loaded"


# ---------------------------------------------------------------- examples


def find_examples(folders: list[Path]) -> list[str]:
    """Photos in the given folders (recursively), sorted, at most MAX_EXAMPLES."""
    photos = [path for folder in folders if folder.is_dir() for path in list_photos(folder)]
    return [str(path) for path in photos[:MAX_EXAMPLES]]


@functools.cache
def fetch_examples_repo(repo_id: str) -> Path | None:
    """Download the photos of a Hub dataset (EXAMPLES_REPO) into a temp folder; None if unreachable."""
    if not repo_id:
        return None
    try:
        from huggingface_hub import snapshot_download

        patterns = [f"*{suffix}" for suffix in IMAGE_SUFFIXES]
        target = Path(tempfile.mkdtemp(prefix="car-damage-examples-"))
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, local_dir=target))
    except Exception as exc:
        logger.warning("EXAMPLES_REPO=%s: cannot fetch the example photos (%s); continuing without them", repo_id, exc)
        return None


# ---------------------------------------------------------------- the queue


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


# ---------------------------------------------------------------- the endpoints


class CarDamageApp:
    """The endpoint functions, bound to one Settings (so tests can run apps with other models)."""

    def __init__(self, settings: pipeline.Settings) -> None:
        self.settings = settings
        self.status = ModelStatus(settings)
        self.jobs = JobFolders()
        self.zip_limits = pipeline.ZipLimits(max_total_pixels=MAX_ZIP_MEGAPIXELS * 1_000_000)

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
        damages = [
            [
                d.part,
                d.damage_type,
                d.severity,
                round(d.area_pct, 2),
                round(d.score, 3),
                ", ".join(f"{v:.0f}" for v in d.box),
            ]
            for d in analysis.detections
        ]
        result = analysis.to_dict() | {"models": _model_names(settings)}
        table = {"headers": DAMAGE_HEADERS, "data": damages}
        return analysis.summary, confidences, pipeline.annotate(analysis), table, result

    def analyze_example(self, image: str) -> tuple[str, dict[str, float], Image.Image, dict[str, Any], dict[str, Any]]:
        """An example photo with the app's default thresholds (its result is cached)."""
        return self.analyze_image(image)

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
        control = pipeline.JobControl(seconds=JOB_SECONDS, client_gone=client_gone)
        with self.jobs.job() as folder:
            try:
                batch = pipeline.process_zip(archive, folder, settings, report, self.zip_limits, control)
            except pipeline.PipelineError as exc:  # refused zip or a model that cannot be loaded
                raise gr.Error(public_text(str(exc))) from None
        table = {"headers": ZIP_HEADERS, "data": [[getattr(row, c) for c in ZIP_HEADERS] for row in batch.rows]}
        summary = batch.summary
        return str(batch.archive), summary_markdown(summary), table, _gallery(batch), summary.to_dict()

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
        full = waiting("zip") >= ZIP_QUEUE_SIZE
        message = f"{ZIP_QUEUE_SIZE} zips are already waiting: please try again in a few minutes."
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


def _gallery(batch: pipeline.BatchResult) -> list[tuple[Image.Image, str]]:
    """Thumbnails of the first annotated photos, read back from the result archive."""
    items = []
    with zipfile.ZipFile(batch.archive) as zf:
        for row in [r for r in batch.rows if not r.failed][:GALLERY_SIZE]:
            with Image.open(io.BytesIO(zf.read(row.annotated_file))) as image:
                thumb = image.convert("RGB")
            thumb.thumbnail((768, 768))
            items.append((thumb, f"{row.file}: {row.message}"))
    return items


# ---------------------------------------------------------------- the page


def refuses_urls(component: type) -> type:
    """gradio fetches a photo or zip passed to the API as an http(s) URL, with no size limit, before the app sees
    it: refused in the step that would download it, unless the URL names a file already uploaded to this server
    (then that file is used, never fetched). A class decorator, not a base: gradio picks a template component's
    frontend by its first base class."""
    move, move_async = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def move_resource_to_block_cache(self, url_or_file_path):
        return move(self, _local_or_refused(url_or_file_path, self.GRADIO_CACHE))

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        return await move_async(self, _local_or_refused(url_or_file_path, self.GRADIO_CACHE))

    component.move_resource_to_block_cache = move_resource_to_block_cache
    component.async_move_resource_to_block_cache = async_move_resource_to_block_cache
    return component


def _local_or_refused(url_or_file_path: object, cache: str) -> object:
    """A path as it is; a URL of this server's own upload (``.../gradio_api/file=<path in its cache>``, as the
    upload tools of MCP clients hand out) as that path; any other URL refused."""
    text = str(url_or_file_path)
    if not text.lower().startswith(("http://", "https://")):
        return url_or_file_path
    _, marker, rest = text.partition("/gradio_api/file=")
    local = Path(urllib.parse.unquote(rest)).resolve() if marker else None
    if local is not None and local.is_file() and local.is_relative_to(Path(cache).resolve()):
        return str(local)
    _refuse_urls(text)
    return url_or_file_path


def _refuse_urls(url_or_file_path: object) -> None:
    if str(url_or_file_path).lower().startswith(("http://", "https://")):
        raise gr.Error("Files are not fetched from URLs: upload the file itself (MCP clients: send it base64-encoded).")


@refuses_urls
class PhotoInput(gr.Image):
    """A gr.Image that hands the uploaded file to the pipeline untouched (gradio has already checked the path).

    gr.Image.preprocess opens every upload with Pillow and converts it to RGB: a file that is not a photo, or a
    decompression bomb, fails inside gradio with its generic error instead of the pipeline's one-line message,
    and RGBA / 16-bit photos get flattened by gradio (black background, clipped) before the pipeline sees them.
    """

    is_template = True  # drawn by gr.Image's frontend

    def preprocess(self, payload):  # type: ignore[override]
        if payload is not None and payload.path and self.type == "filepath":
            return str(payload.path)
        return super().preprocess(payload)


@refuses_urls
class ZipInput(gr.File):
    is_template = True  # drawn by gr.File's frontend


def threshold_controls(thresholds: pipeline.Thresholds, open_: bool) -> list[gr.components.Component]:
    """The thresholds people set (one declaration: pipeline.Thresholds), starting at the app's own values."""
    controls = []
    with gr.Accordion("Thresholds", open=open_):
        for name, _, meta in pipeline.Thresholds.controls():
            value, label = getattr(thresholds, name), f"{meta['label']} ({meta['help']})"
            if isinstance(value, bool):
                controls.append(gr.Checkbox(value=value, label=label))
            else:
                controls.append(gr.Slider(0, 1, value=value, step=0.01, label=label))
    return controls


def photo_tab(service: CarDamageApp, examples: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            photo = PhotoInput(
                type="filepath", sources=["upload", "webcam", "clipboard"], label="Photo", height=400,
                elem_id="photo-input",
            )  # fmt: skip
            controls = threshold_controls(service.settings.thresholds, open_=True)
            button = gr.Button("Analyze photo", variant="primary")
        with gr.Column():
            verdict = gr.Markdown(elem_id="verdict")
            confidences = gr.Label(label="Confidences", show_heading=False, elem_id="confidences")
            annotated = gr.Image(label="Annotated photo", format="png", interactive=False, elem_id="annotated")
    damages = gr.Dataframe(headers=DAMAGE_HEADERS, label="Damages", interactive=False, elem_id="damages")
    slider = gr.ImageSlider(label="Before / after", type="pil", interactive=False, elem_id="before-after")
    with gr.Accordion("Raw JSON", open=False):
        result = gr.JSON(label="Result")
    outputs = [verdict, confidences, annotated, damages, result]
    if examples:
        gr.Examples(
            examples=examples, inputs=photo, outputs=outputs, fn=service.analyze_example, cache_examples=True,
            cache_mode="lazy", examples_per_page=12, elem_id="photo-examples",
        )  # fmt: skip
    event = button.click(
        service.analyze_image, inputs=[photo, *controls], outputs=outputs, api_name="analyze_image",
        concurrency_id="photo", concurrency_limit=1,
    )  # fmt: skip
    event.success(service.before_after, inputs=[photo, annotated], outputs=slider, api_visibility="private")


def zip_tab(service: CarDamageApp) -> None:
    with gr.Row():
        with gr.Column():
            archive = ZipInput(label="Zip of photos", file_types=[".zip"], type="filepath", elem_id="zip-input")
            controls = threshold_controls(service.settings.thresholds, open_=False)
            button = gr.Button("Analyze zip", variant="primary")
        with gr.Column():
            results = gr.File(label="Results (zip)", interactive=False, elem_id="zip-results")
            report_page = gr.File(label="Report to file (report.html)", interactive=False, elem_id="zip-report")
            summary_text = gr.Markdown(elem_id="zip-summary")
    gallery = gr.Gallery(label="First annotated photos", columns=4, height="auto", elem_id="gallery")
    report = gr.Dataframe(headers=ZIP_HEADERS, label="Per-photo report", interactive=False, wrap=True)
    with gr.Accordion("Summary (JSON)", open=False):
        summary = gr.JSON(label="Summary")
    event = button.click(
        service.analyze_zip, inputs=[archive, *controls], outputs=[results, summary_text, report, gallery, summary],
        api_name="analyze_zip", concurrency_id="zip", concurrency_limit=1, validator=service.zip_queue_check,
    )  # fmt: skip
    event.success(service.report_page, inputs=results, outputs=report_page, api_visibility="private")


def models_panel(service: CarDamageApp, banner: gr.Markdown) -> dict[str, Any]:
    """The models table and a timer that refreshes it (and the banner) until the background load has finished;
    returns the options of that refresh, for the page load to run it once at once."""
    with gr.Accordion("Models in use", open=False):
        models = gr.Markdown(models_markdown(service.status))
    timer = gr.Timer(2.0)
    refresh = {"outputs": [banner, models, timer], "api_visibility": "private", "queue": False}
    timer.tick(service.model_report, show_progress="hidden", **refresh)
    return refresh


def create_demo(service: CarDamageApp, examples: list[str] | None = None) -> gr.Blocks:
    """The page for one app: a photo tab, a zip tab and the models panel."""
    # Gradio's cache (uploads, results) is swept every 30 min of files older than 1 h.
    with gr.Blocks(title="Car damage detection", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        banner = gr.Markdown(visible=False, elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Photo", id="photo"):
                photo_tab(service, examples or [])
            with gr.Tab("Zip of photos", id="zip"):
                zip_tab(service)
        demo.load(service.model_report, **models_panel(service, banner))
    # Photos and zips run side by side (one each: 2 vCPUs); at most QUEUE_SIZE requests wait.
    return demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


CSS = """
#model-banner { border: 1px solid #f59e0b; background: rgba(245, 158, 11, 0.12); border-radius: 8px; padding: 0 12px; }
#verdict p { font-size: 1.2em; font-weight: 600; }
"""
LAUNCH_OPTIONS: dict[str, Any] = {
    "max_file_size": MAX_FILE_SIZE,
    "footer_links": ["api", "gradio", "settings"],
    "run_history": False,  # a run history would keep visitors' photos (licence plates) in their browsers
    "mcp_server": True,  # /analyze_image as a tool for assistants, at /gradio_api/mcp
    "css": CSS,
}


def space_settings(profile: str | None = None) -> pipeline.Settings:
    """The profile's or the env vars' settings; when neither names calibration photos, the examples (real photos
    of damaged cars, like the uploads) calibrate the int8 segmenter, which runs when the precision is int8 by name."""
    settings = pipeline.Settings.from_env(profile)
    if settings.models.calibration_photos is None and find_examples([EXAMPLES_DIR]):
        settings = settings.with_models(calibration_photos=EXAMPLES_DIR.resolve())
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Car damage detection: the Gradio app.")
    parser.add_argument("--models", metavar="PROFILE", help="TOML model profile (default: MODELS_PROFILE, env vars)")
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    parser.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT or the first free from 7860)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """The Space: the settings of --models or the env, the examples (with EXAMPLES_REPO's), models loading in
    the background while the server starts."""
    global demo
    args = parse_args(argv)
    service = CarDamageApp(space_settings(args.models))
    repo = fetch_examples_repo(EXAMPLES_REPO)
    demo = create_demo(service, find_examples([EXAMPLES_DIR, *([repo] if repo else [])]))
    service.status.start()
    demo.launch(share=args.share or None, server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


# What `gradio app.py` and Spaces look for; `python app.py` rebuilds it in main() with --models and EXAMPLES_REPO.
demo = create_demo(CarDamageApp(space_settings()), find_examples([EXAMPLES_DIR]))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
