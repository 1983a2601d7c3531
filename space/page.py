"""The page: a photo tab, a zip tab and the models panel, wired to one ``CarDamageApp``; and its launch options."""

from __future__ import annotations

from typing import Any

import gradio as gr

import pipeline

from .config import MAX_FILE_SIZE, QUEUE_SIZE
from .inputs import PhotoInput, PhotosInput, ZipInput
from .service import DAMAGE_HEADERS, PART_HEADERS, VEHICLE_HEADERS, ZIP_HEADERS, CarDamageApp
from .status import models_markdown
from .text import DESCRIPTION


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
            annotated = gr.Image(
                label="Annotated photo", format="png", interactive=False, height=400, elem_id="annotated"
            )  # fmt: skip
    damages = gr.Dataframe(headers=DAMAGE_HEADERS, label="Damages", interactive=False, elem_id="damages")
    slider = gr.ImageSlider(label="Before / after", type="pil", interactive=False, elem_id="before-after")
    with gr.Accordion("Raw JSON", open=False):
        result = gr.JSON(label="Result")
    outputs = [verdict, confidences, annotated, damages, result]
    if examples:  # an example's cached result holds its before / after too, so the slider follows it
        gr.Examples(
            examples=examples, inputs=photo, outputs=[*outputs, slider], fn=service.analyze_example,
            cache_examples=True, cache_mode="lazy", examples_per_page=12, elem_id="photo-examples",
        )  # fmt: skip
    event = button.click(
        service.analyze_image, inputs=[photo, *controls], outputs=outputs, api_name="analyze_image",
        concurrency_id="photo", concurrency_limit=1,
    )  # fmt: skip
    event.success(service.before_after, inputs=[photo, annotated], outputs=slider, api_visibility="private")
    vehicle_section(service, controls)


def vehicle_section(service: CarDamageApp, controls: list[gr.components.Component]) -> None:
    """Several photos of one vehicle, with the photo tab's thresholds: one answer for the vehicle."""
    gr.Markdown("### Several photos of one vehicle")
    with gr.Row():
        with gr.Column():
            photos = PhotosInput(
                file_count="multiple", file_types=["image"], type="filepath", label="Photos of one vehicle",
                elem_id="vehicle-input",
            )  # fmt: skip
            button = gr.Button("Analyze vehicle", variant="primary")
        with gr.Column():
            summary = gr.Markdown(elem_id="vehicle-summary")
            parts = gr.Dataframe(
                headers=PART_HEADERS, label="Damaged parts", interactive=False, elem_id="vehicle-parts"
            )
    gallery = gr.Gallery(label="Annotated photos", columns=4, height="auto", elem_id="vehicle-gallery")
    with gr.Accordion("Vehicle (JSON)", open=False):
        result = gr.JSON(label="Vehicle")
    button.click(
        service.analyze_vehicle, inputs=[photos, *controls], outputs=[summary, parts, gallery, result],
        api_name="analyze_vehicle", concurrency_id="photo", concurrency_limit=1,
    )  # fmt: skip


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
    vehicles = gr.Dataframe(
        headers=VEHICLE_HEADERS, label="Vehicles (vehicles.csv)", interactive=False, wrap=True, elem_id="zip-vehicles"
    )
    report = gr.Dataframe(headers=ZIP_HEADERS, label="Per-photo report", interactive=False, wrap=True)
    with gr.Accordion("Summary (JSON)", open=False):
        summary = gr.JSON(label="Summary")
    event = button.click(
        service.analyze_zip, inputs=[archive, *controls], outputs=[results, summary_text, report, gallery, summary],
        api_name="analyze_zip", concurrency_id="zip", concurrency_limit=1, validator=service.zip_queue_check,
    )  # fmt: skip
    event.success(service.report_page, inputs=results, outputs=report_page, api_visibility="private")
    event.success(service.vehicles_table, inputs=summary, outputs=vehicles, api_visibility="private")


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
/* The whole annotated photo, letterboxed below its label and buttons (which float over the image otherwise). */
#annotated .image-frame { box-sizing: border-box; padding-top: 2.5rem; }
#annotated .image-frame img { object-fit: contain; }
"""
LAUNCH_OPTIONS: dict[str, Any] = {
    "max_file_size": MAX_FILE_SIZE,
    "footer_links": ["api", "gradio", "settings"],
    "run_history": False,  # a run history would keep visitors' photos (licence plates) in their browsers
    "mcp_server": True,  # /analyze_image, /analyze_vehicle, /analyze_zip as tools for assistants, at /gradio_api/mcp
    "css": CSS,
}
