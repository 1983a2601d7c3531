"""Car damage detection — the Gradio Space. Only wires widgets to ``pipeline``; no model code here.

Run: ``python app.py [--models PROFILE] [--share] [--host 0.0.0.0] [--port 7860]``.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

import pipeline
from pipeline.archive import IMAGE_SUFFIXES
from pipeline.settings import ENV_VARS

logger = logging.getLogger("app")

DEFAULTS = pipeline.Settings()
EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR") or Path(__file__).parent / "examples")
EXAMPLES_REPO = os.environ.get("EXAMPLES_REPO", "").strip()
MAX_EXAMPLES = 24
MAX_FILE_SIZE = os.environ.get("MAX_FILE_SIZE", "200mb")  # per upload, photos and zips
QUEUE_SIZE = int(os.environ.get("QUEUE_SIZE", "40"))  # waiting requests beyond this are turned away
GALLERY_SIZE = 12
JOB_MAX_AGE = 600  # seconds a finished job folder is kept (gradio has copied the archive by then)
LOAD_WAIT = 300  # seconds the page waits for the models before reporting "still loading"

DAMAGE_HEADERS = ["class", "confidence", "area %", "box (x1, y1, x2, y2)"]
ZIP_HEADERS = [
    "file", "status", "message", "is_car", "car_score", "is_damaged", "damage_score",
    "damage_count", "damage_classes", "damage_area_pct",
]  # fmt: skip

DESCRIPTION = """\
# 🚗 Car damage detection
Upload a photo: is there a car, is it damaged, and where (instance masks of dents, scratches, ...).
Upload a zip of photos to get every photo annotated plus a report. The API (link at the bottom) exposes
`/analyze_image` and `/analyze_zip`.
"""


# ---------------------------------------------------------------- per-request folders


class JobFolders:
    """One private temp folder per zip request, under a root only this process uses (never served as-is).

    Gradio copies the returned archive into its own cache, so a finished folder is deleted by the next
    request once it is older than ``max_age``; a failed request deletes its folder at once.
    """

    def __init__(self, max_age: float = JOB_MAX_AGE) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="car-damage-jobs-"))
        self.max_age = max_age
        self._active: set[Path] = set()
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

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


# ---------------------------------------------------------------- models: load once, report on the page


class ModelStatus:
    """Loads the three models once, in a background thread, so start-up is not blocked."""

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

    def wait(self, timeout: float | None = LOAD_WAIT) -> bool:
        """Whether loading has finished (within ``timeout`` seconds)."""
        self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _load(self) -> None:
        try:
            self.problems = pipeline.load_models(self.settings)
        except Exception as exc:  # the banner must still appear, whatever went wrong
            logger.exception("loading the models failed")
            self.error = f"Loading the models failed: {exc}"
        for problem in (self.problems or {}).values():
            if problem is not None:
                logger.error("%s", problem)


def banner_markdown(status: ModelStatus) -> str:
    """A warning naming each model that cannot be loaded, why, and the env var to set; '' when all loaded."""
    lines = [f"- {problem}" for problem in (status.problems or {}).values() if problem is not None]
    if status.error:
        lines.append(f"- {status.error}")
    if not lines:
        return ""
    return "### ⚠️ Some models could not be loaded\n" + "\n".join(lines)


def models_markdown(status: ModelStatus, done: bool) -> str:
    """A table of the models in use: id or path, revision, and whether each one loaded."""
    rows = ["| role | model (id or path) | revision | env var | status |", "|---|---|---|---|---|"]
    for role, ref in status.settings.model_refs().items():
        local = ref.is_local or ref.id.startswith(("/", ".", "~"))
        revision = ref.revision or ("local path" if local else "default branch")
        model = f"{ref.id} (file {ref.filename})" if ref.filename else ref.id
        rows.append(f"| {role} | `{model}` | {revision} | `{ENV_VARS[role]}` | {_load_state(status, role, done)} |")
    return "\n".join(rows)


def _load_state(status: ModelStatus, role: str, done: bool) -> str:
    if not done:
        return "⏳ loading"
    if status.error or status.problems is None:
        return "❌ not loaded"
    return "❌ failed" if status.problems.get(role) else "✅ loaded"


# ---------------------------------------------------------------- examples


def find_examples(folders: list[Path]) -> list[str]:
    """Photos in the given folders (recursively), sorted, at most MAX_EXAMPLES."""
    photos = [
        path
        for folder in folders
        if folder.is_dir()
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    ]
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


# ---------------------------------------------------------------- the endpoints


class CarDamageApp:
    """The endpoint functions, bound to one Settings (so tests can run apps with other models)."""

    def __init__(self, settings: pipeline.Settings) -> None:
        self.settings = settings
        self.status = ModelStatus(settings)
        self.jobs = JobFolders()

    def _settings(self, car: float, damage: float, mask: float, always_segment: bool) -> pipeline.Settings:
        return self.settings.with_overrides(
            car_threshold=car, damage_threshold=damage, mask_threshold=mask, always_segment=bool(always_segment)
        )

    def analyze_image(
        self,
        image: str | None,
        car_threshold: float = DEFAULTS.car_threshold,
        damage_threshold: float = DEFAULTS.damage_threshold,
        mask_threshold: float = DEFAULTS.mask_threshold,
        always_segment: bool = DEFAULTS.always_segment,
    ) -> tuple[str, dict[str, float], Image.Image, dict[str, Any], dict[str, Any]]:
        """Analyse one photo: is there a car, is it damaged, and where.

        Args:
            image: the photo (JPEG, PNG, WebP, ...); EXIF orientation is applied.
            car_threshold: minimum car probability to call the photo a car.
            damage_threshold: minimum damage probability to call the car damaged.
            mask_threshold: minimum confidence of a damage instance (mask).
            always_segment: also look for damage masks on cars judged undamaged.

        Returns:
            summary: one sentence, e.g. "Damaged car (car 97%, damage 88%). 2 damaged area(s): dent.".
            confidences: {"car": probability, "damage": probability}; "damage" is absent when no car was found.
            annotated: the photo with masks, boxes and labels drawn (original resolution).
            damages: table of damage instances: class, confidence, area % of the photo, box.
            result: the full result as JSON (verdicts, scores, damages, models).
        """
        if not image:
            raise gr.Error("Upload a photo first.")
        settings = self._settings(car_threshold, damage_threshold, mask_threshold, always_segment)
        try:
            analysis = pipeline.analyze(image, settings)
        except pipeline.PipelineError as exc:  # bad photo or a model that cannot be loaded
            raise gr.Error(str(exc)) from None
        confidences = {"car": round(analysis.car.score, 4)}
        if analysis.damage is not None:
            confidences["damage"] = round(analysis.damage.score, 4)
        damages = [
            [d.label, round(d.score, 3), round(d.area_pct, 2), ", ".join(f"{v:.0f}" for v in d.box)]
            for d in analysis.detections
        ]
        result = analysis.to_dict() | {"models": _model_names(settings)}
        table = {"headers": DAMAGE_HEADERS, "data": damages}
        return analysis.summary, confidences, pipeline.annotate(analysis), table, result

    def analyze_example(self, image: str) -> tuple[str, dict[str, float], Image.Image, dict[str, Any], dict[str, Any]]:
        """An example photo with the app's default thresholds (its result is cached)."""
        s = self.settings
        return self.analyze_image(image, s.car_threshold, s.damage_threshold, s.mask_threshold, s.always_segment)

    def analyze_zip(
        self,
        archive: str | None,
        car_threshold: float = DEFAULTS.car_threshold,
        damage_threshold: float = DEFAULTS.damage_threshold,
        mask_threshold: float = DEFAULTS.mask_threshold,
        always_segment: bool = DEFAULTS.always_segment,
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
            summary: the summary as JSON (files, photos analysed, cars, damaged cars, failures and why).
        """
        if not archive:
            raise gr.Error("Upload a zip of photos first.")
        settings = self._settings(car_threshold, damage_threshold, mask_threshold, always_segment)

        def report(done: int, total: int, name: str) -> None:
            progress((done, total), desc=f"Photo {done}/{total}: {name}", unit="files")

        progress(0, desc="Opening the zip")
        with self.jobs.job() as folder:
            try:
                batch = pipeline.process_zip(archive, folder, settings, progress=report)
            except pipeline.PipelineError as exc:  # refused zip or a model that cannot be loaded
                raise gr.Error(str(exc)) from None
        table = {"headers": ZIP_HEADERS, "data": [[row[c] for c in ZIP_HEADERS] for row in batch.rows]}
        gallery = _gallery(batch.archive, batch.rows) if batch.archive else []
        return str(batch.archive), summary_markdown(batch.summary), table, gallery, batch.summary

    def model_report(self) -> tuple[dict[str, Any], str]:
        """The banner (shown only when a model failed) and the models table, once loading has finished."""
        done = self.status.wait(LOAD_WAIT)
        banner = banner_markdown(self.status) if done else ""
        return gr.update(value=banner, visible=bool(banner)), models_markdown(self.status, done)


def _model_names(settings: pipeline.Settings) -> dict[str, str]:
    return {role: str(ref) for role, ref in settings.model_refs().items()}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The batch summary for people: counts, then each file that was not processed and why."""
    text = (
        f"**{summary['files']} files** · {summary['photos_analyzed']} photos analysed · "
        f"**{summary['cars']} cars** · **{summary['damaged_cars']} damaged cars** · "
        f"{summary['damage_instances']} damaged areas · {summary['not_processed']} not processed "
        f"· {summary['seconds']:.1f} s"
    )
    if summary["damage_classes"]:
        text += "\n\nDamage classes: " + ", ".join(f"{k} ({v})" for k, v in summary["damage_classes"].items())
    if summary["failures"]:
        text += "\n\n**Not processed:**\n" + "\n".join(
            f"- `{f['file']}` ({f['status']}): {f['message']}" for f in summary["failures"]
        )
    return text


def _gallery(archive: Path, rows: list[dict[str, Any]]) -> list[tuple[Image.Image, str]]:
    """Thumbnails of the first annotated photos, read back from the result archive."""
    items = []
    with zipfile.ZipFile(archive) as zf:
        for row in [r for r in rows if r["status"] == "ok"][:GALLERY_SIZE]:
            with Image.open(io.BytesIO(zf.read(row["annotated_file"]))) as image:
                thumb = image.convert("RGB")
            thumb.thumbnail((768, 768))
            items.append((thumb, f"{row['file']}: {row['message']}"))
    return items


# ---------------------------------------------------------------- the page


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


def threshold_controls(settings: pipeline.Settings, open_: bool) -> list[gr.components.Component]:
    """Sliders starting at the app's thresholds (Settings defaults, or the model profile's)."""
    with gr.Accordion("Thresholds", open=open_):
        return [
            gr.Slider(0, 1, value=settings.car_threshold, step=0.01, label="Car threshold"),
            gr.Slider(0, 1, value=settings.damage_threshold, step=0.01, label="Damage threshold"),
            gr.Slider(0, 1, value=settings.mask_threshold, step=0.01, label="Mask threshold (damage instances)"),
            gr.Checkbox(value=settings.always_segment, label="Always segment (masks for undamaged cars too)"),
        ]


def build_demo(settings: pipeline.Settings | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The Blocks app for these settings; ``examples`` defaults to EXAMPLES_DIR plus EXAMPLES_REPO."""
    app = CarDamageApp(settings or pipeline.Settings.from_env())
    if examples is None:
        repo_dir = fetch_examples_repo(EXAMPLES_REPO)
        examples = find_examples([EXAMPLES_DIR, *([repo_dir] if repo_dir else [])])
    # Gradio's cache (uploads, results) is swept every 30 min of files older than 1 h.
    with gr.Blocks(title="Car damage detection", delete_cache=(1800, 3600)) as demo:
        demo.car_damage_app = app  # for tests and main()
        gr.Markdown(DESCRIPTION)
        banner = gr.Markdown(visible=False, elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Photo", id="photo"):
                with gr.Row():
                    with gr.Column():
                        photo = PhotoInput(
                            type="filepath",
                            sources=["upload", "webcam", "clipboard"],
                            label="Photo",
                            height=400,
                            elem_id="photo-input",
                        )
                        photo_controls = threshold_controls(app.settings, open_=True)
                        photo_button = gr.Button("Analyze photo", variant="primary")
                    with gr.Column():
                        verdict = gr.Markdown(elem_id="verdict")
                        confidences = gr.Label(label="Confidences", show_heading=False, elem_id="confidences")
                        annotated = gr.Image(
                            label="Annotated photo", format="png", interactive=False, elem_id="annotated"
                        )
                photo_outputs = [verdict, confidences, annotated]
                damages = gr.Dataframe(headers=DAMAGE_HEADERS, label="Damages", interactive=False)
                with gr.Accordion("Raw JSON", open=False):
                    photo_json = gr.JSON(label="Result")
                photo_outputs += [damages, photo_json]
                if examples:
                    gr.Examples(
                        examples=examples,
                        inputs=photo,
                        outputs=photo_outputs,
                        fn=app.analyze_example,
                        cache_examples=True,
                        cache_mode="lazy",
                        examples_per_page=12,
                        elem_id="photo-examples",
                    )
            with gr.Tab("Zip of photos", id="zip"):
                with gr.Row():
                    with gr.Column():
                        archive = gr.File(
                            label="Zip of photos", file_types=[".zip"], type="filepath", elem_id="zip-input"
                        )
                        zip_controls = threshold_controls(app.settings, open_=False)
                        zip_button = gr.Button("Analyze zip", variant="primary")
                    with gr.Column():
                        results = gr.File(label="Results (zip)", interactive=False, elem_id="zip-results")
                        zip_summary = gr.Markdown(elem_id="zip-summary")
                gallery = gr.Gallery(label="First annotated photos", columns=4, height="auto", elem_id="gallery")
                report = gr.Dataframe(headers=ZIP_HEADERS, label="Per-photo report", interactive=False, wrap=True)
                with gr.Accordion("Summary (JSON)", open=False):
                    zip_json = gr.JSON(label="Summary")
        with gr.Accordion("Models in use", open=False):
            models = gr.Markdown(models_markdown(app.status, done=False))

        photo_button.click(
            app.analyze_image,
            inputs=[photo, *photo_controls],
            outputs=photo_outputs,
            api_name="analyze_image",
            concurrency_id="photo",
            concurrency_limit=1,
        )
        zip_button.click(
            app.analyze_zip,
            inputs=[archive, *zip_controls],
            outputs=[results, zip_summary, report, gallery, zip_json],
            api_name="analyze_zip",
            concurrency_id="zip",
            concurrency_limit=1,
        )
        demo.load(
            app.model_report, outputs=[banner, models], api_visibility="private", concurrency_limit=None, queue=False
        )
    # Photos and zips run side by side (one each: 2 vCPUs); at most QUEUE_SIZE requests wait.
    return demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


CSS = """
#model-banner { border: 1px solid #f59e0b; background: rgba(245, 158, 11, 0.12); border-radius: 8px; padding: 0 12px; }
#verdict p { font-size: 1.2em; font-weight: 600; }
"""
LAUNCH_OPTIONS: dict[str, Any] = {
    "max_file_size": MAX_FILE_SIZE,
    "footer_links": ["api", "gradio", "settings"],
    "css": CSS,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Car damage detection: the Gradio app.")
    parser.add_argument("--models", metavar="PROFILE", help="TOML model profile (default: MODELS_PROFILE, env vars)")
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    parser.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT or the first free from 7860)")
    return parser.parse_args(argv)


demo = build_demo()


def main(argv: list[str] | None = None) -> None:
    global demo
    args = parse_args(argv)
    if args.models:
        demo = build_demo(pipeline.Settings.from_env(args.models))
    demo.car_damage_app.status.start()  # load the models while the server starts
    demo.launch(share=args.share or None, server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
