"""Offline fixtures: tiny models with real label names, built once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Offline hygiene before any library import: nothing in the tests may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
os.environ.setdefault("CAR_DAMAGE_CACHE", tempfile.mkdtemp(prefix="car-damage-cache-"))  # OpenVINO exports
for _var in ("CAR_MODEL", "DAMAGE_MODEL", "SEG_MODEL", "MODELS_PROFILE"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def car_imagenet_yes(model_dir: Path) -> Path:
    """ImageNet-style labels, biased towards 'sports car': every photo is a car."""
    return tiny_models.vit_classifier(model_dir / "car-yes", tiny_models.IMAGENET_STYLE_LABELS, favour="sports car")


@pytest.fixture(scope="session")
def car_imagenet_no(model_dir: Path) -> Path:
    """ImageNet-style labels, biased towards 'tench': no photo is a car."""
    return tiny_models.vit_classifier(model_dir / "car-no", tiny_models.IMAGENET_STYLE_LABELS, favour="tench")


@pytest.fixture(scope="session")
def car_imagenet_random(model_dir: Path) -> Path:
    """ImageNet-style labels, random weights: scores vary photo by photo (batch == single)."""
    return tiny_models.vit_classifier(model_dir / "car-random", tiny_models.IMAGENET_STYLE_LABELS, favour=None)


@pytest.fixture(scope="session")
def car_binary(model_dir: Path) -> Path:
    return tiny_models.vit_classifier(model_dir / "car-binary", ["not_car", "car"], favour="car")


@pytest.fixture(scope="session")
def damage_yes(model_dir: Path) -> Path:
    return tiny_models.vit_classifier(model_dir / "damage-yes", ["whole", "damaged"], favour="damaged")


@pytest.fixture(scope="session")
def damage_no(model_dir: Path) -> Path:
    return tiny_models.vit_classifier(model_dir / "damage-no", ["whole", "damaged"], favour="whole")


@pytest.fixture(scope="session")
def damage_clip(model_dir: Path) -> Path:
    return tiny_models.clip_model(model_dir / "clip")


@pytest.fixture(scope="session")
def seg_model(model_dir: Path) -> Path:
    """yolov8n-seg with 2 classes, biased so it finds 'dent' instances in any photo."""
    return tiny_models.yolo_seg(model_dir / "seg", ["dent", "scratch"])


@pytest.fixture(scope="session")
def settings_factory(car_imagenet_yes: Path, damage_yes: Path, seg_model: Path):
    """Settings with tiny models: pass overrides for the branch under test."""
    from pipeline import ModelRef, Settings

    def make(car: Path = car_imagenet_yes, damage: Path = damage_yes, seg: Path = seg_model, **changes) -> Settings:
        base = Settings(
            car_model=ModelRef(str(car)),
            damage_model=ModelRef(str(damage)),
            seg_model=ModelRef(str(seg)),
            seg_image_size=320,
            max_detections=5,
            precision="fp32",
        )
        return base.with_overrides(**changes)

    return make


@pytest.fixture(scope="session")
def profile(
    tmp_path_factory: pytest.TempPathFactory, car_imagenet_yes: Path, damage_yes: Path, seg_model: Path
) -> Path:
    """A model profile (TOML) naming the tiny car, damage and segmenter models, for the CLI and the app."""
    path = tmp_path_factory.mktemp("profile") / "tiny.toml"
    path.write_text(
        f'[car]\nmodel = "{car_imagenet_yes}"\n[damage]\nmodel = "{damage_yes}"\n[segmenter]\nmodel = "{seg_model}"\n'
    )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real photos and models need ../shared beside the checkout ({SHARED} not found)")
    return SHARED
