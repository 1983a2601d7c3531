"""Car damage detection — the Gradio Space. Builds the page from ``space`` (which wires widgets to ``pipeline``)
and launches it; no model code here.

Run: ``python app.py [--models PROFILE] [--share] [--host 0.0.0.0] [--port 7860]``.
Importing this module only builds the page (``demo``); models load in the background once the server starts.
"""

from __future__ import annotations

import argparse
import logging

import pipeline
from pipeline.settings import MODELS_FLAG_HELP
from space.config import EXAMPLES_DIR, EXAMPLES_REPO
from space.examples import fetch_examples_repo, find_examples
from space.page import LAUNCH_OPTIONS, create_demo
from space.service import CarDamageApp


def space_settings(profile: str | None = None) -> pipeline.Settings:
    """The profile's or the env vars' settings; when neither names calibration photos, the examples (real photos
    of damaged cars, like the uploads) calibrate the int8 segmenter, which runs when the precision is int8 by name."""
    settings = pipeline.Settings.from_env(profile)
    if settings.models.calibration_photos is None and find_examples([EXAMPLES_DIR]):
        settings = settings.with_models(calibration_photos=EXAMPLES_DIR.resolve())
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Car damage detection: the Gradio app.")
    parser.add_argument("--models", metavar="PROFILE", help=MODELS_FLAG_HELP)
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
