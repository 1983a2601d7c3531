"""The shipped release in models/: the default everywhere, intact (sha256), documented (cards), small enough, and
answering like an assessor on the shipped examples. None of it needs ../shared or the Hub."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import pipeline
from pipeline.hub import FOLDER_WEIGHTS, file_sha256
from pipeline.settings import HUB_PROFILE, RELEASE_PROFILE, Settings

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "models"
EXAMPLES = ROOT / "examples"
ROLES = ("car", "damage", "segmenter", "parts")
pytestmark = pytest.mark.xdist_group("release")  # the release's models loaded (and exported) in one worker


def _profile() -> dict:
    return tomllib.loads((RELEASE / "profile.toml").read_text(encoding="utf-8"))


def test_the_release_names_every_model_with_its_sha256():
    profile = _profile()
    for role in ROLES:
        path = RELEASE / profile[role]["model"]
        weights = path / FOLDER_WEIGHTS if path.is_dir() else path
        assert file_sha256(weights) == profile[role]["sha256"], role
    assert "calibration_photos" not in profile.get("runtime", {})  # photos never ship


def test_the_release_is_at_most_80_mb_and_holds_no_photos():
    files = [p for p in RELEASE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 80 * 1024 * 1024
    assert not [p for p in files if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}]


@pytest.mark.parametrize("folder", ["car-check", "damage-classifier", "damage-segmenter", "part-segmenter"])
def test_every_model_has_a_card_with_hub_metadata(folder):
    text = (RELEASE / folder / "README.md").read_text(encoding="utf-8")
    front = text.split("---")[1]
    for key in ("license:", "base_model:", "pipeline_tag:"):
        assert key in front, (folder, key)
    if folder != "car-check":  # a trained model names every set it saw, with its licence
        assert "datasets:" in front
        assert "| training" in text and "licence" in text


def test_the_release_is_the_default_and_hub_is_one_flag_away(monkeypatch):
    monkeypatch.delenv("MODELS_PROFILE", raising=False)
    models = Settings.from_env().models
    assert Path(models.car.id) == RELEASE / "car-check" and models.parts is not None
    assert RELEASE_PROFILE == RELEASE / "profile.toml"
    assert str(Settings.from_env(HUB_PROFILE).models.car) == "google/vit-base-patch16-224"
    monkeypatch.setenv("MODELS_PROFILE", HUB_PROFILE)
    assert Settings.from_env().models == Settings().models


@pytest.fixture(scope="module")
def release_settings() -> Settings:
    return Settings.from_env(RELEASE_PROFILE)


@pytest.fixture(scope="module")
def example_answers(release_settings):
    photos = sorted(EXAMPLES.glob("*.jpg"))
    return dict(zip([p.name for p in photos], pipeline.analyze_batch(photos, release_settings), strict=True))


def test_damaged_examples_get_a_mask_a_grade_and_a_part(example_answers):
    damaged = [a for a in example_answers.values() if a.is_car and a.is_damaged]
    assert len(damaged) >= len(example_answers) - 1  # every example shows a damaged car
    complete = [a for a in damaged if a.detections and a.severity and a.damaged_parts]
    assert complete, {name: a.summary for name, a in example_answers.items()}


def _undamaged_side(photo: Path) -> Image.Image:
    """The rear half of the red car in nm-39 (its dent is on the front door): a car with no damage in view."""
    with Image.open(photo) as image:
        width, height = image.size
        return image.convert("RGB").crop((0, int(0.15 * height), int(0.42 * width), int(0.75 * height)))


def _no_car_scene() -> Image.Image:
    """A drawn landscape: sky, hills, a tree and grass texture; nothing a car classifier should call a car."""
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (640, 480), (135, 180, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((-200, 250, 500, 700), fill=(70, 140, 60))
    draw.ellipse((250, 280, 900, 760), fill=(60, 125, 50))
    draw.rectangle((420, 200, 440, 330), fill=(100, 70, 40))
    draw.ellipse((370, 120, 490, 240), fill=(40, 110, 40))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 12, (480, 640, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def test_a_whole_car_is_not_damaged_and_a_landscape_is_no_car(release_settings):
    whole, scene = pipeline.analyze_batch([_undamaged_side(EXAMPLES / "nm-39-door-dent.jpg"), _no_car_scene()],
                                          release_settings)  # fmt: skip
    assert whole.is_car and not whole.is_damaged, whole.summary
    assert not scene.is_car, scene.summary


def test_the_cli_uses_the_release_offline_with_no_models_flag(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MODELS_PROFILE"}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}  # run from elsewhere: the release is the package's
    command = [sys.executable, "-m", "pipeline", str(EXAMPLES / "nm-41-front-crash.jpg"), "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "report.csv").open(encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["status"] == "ok" and row["is_damaged"] == "True", row
