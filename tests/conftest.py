"""Offline fixtures: tiny models with real label names, built once per test session."""

from __future__ import annotations

import dataclasses
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
# PyTorch's OpenMP threads wait for work asleep, not spinning: a test process on 2 vCPUs also runs gradio's
# servers, OpenVINO's and Ray's threads and child processes, and a spinning thread takes a core from them (on a
# busy 2-vCPU host, once a test server had answered, the tiny segmenter took 3 s a photo in the main thread, 0.06 s
# with this setting).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("CAR_MODEL", "DAMAGE_MODEL", "SEG_MODEL", "SEVERITY_MODEL", "PART_MODEL"):
    os.environ.pop(_var, None)
# The tests swap tiny models in through the env vars over the Hub defaults; the release in models/ (the default
# of a plain run) is tested by name in test_release.py.
os.environ["MODELS_PROFILE"] = "hub"

import pytest  # noqa: E402

from pipeline import testing  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def car_imagenet_yes(model_dir: Path) -> Path:
    """ImageNet-style labels, biased towards 'sports car': every photo is a car."""
    return testing.vit_classifier(model_dir / "car-yes", testing.IMAGENET_STYLE_LABELS, favour="sports car")


@pytest.fixture(scope="session")
def car_imagenet_no(model_dir: Path) -> Path:
    """ImageNet-style labels, biased towards 'tench': no photo is a car."""
    return testing.vit_classifier(model_dir / "car-no", testing.IMAGENET_STYLE_LABELS, favour="tench")


@pytest.fixture(scope="session")
def car_imagenet_random(model_dir: Path) -> Path:
    """ImageNet-style labels, random weights: scores vary photo by photo (batch == single)."""
    return testing.vit_classifier(model_dir / "car-random", testing.IMAGENET_STYLE_LABELS, favour=None)


@pytest.fixture(scope="session")
def car_binary(model_dir: Path) -> Path:
    return testing.vit_classifier(model_dir / "car-binary", ["not_car", "car"], favour="car")


@pytest.fixture(scope="session")
def damage_yes(model_dir: Path) -> Path:
    return testing.vit_classifier(model_dir / "damage-yes", ["whole", "damaged"], favour="damaged")


@pytest.fixture(scope="session")
def damage_no(model_dir: Path) -> Path:
    return testing.vit_classifier(model_dir / "damage-no", ["whole", "damaged"], favour="whole")


@pytest.fixture(scope="session")
def damage_clip(model_dir: Path) -> Path:
    return testing.clip_model(model_dir / "clip")


@pytest.fixture(scope="session")
def seg_model(model_dir: Path) -> Path:
    """yolov8n-seg with 2 classes, biased so it finds 'dent' instances in any photo."""
    return testing.yolo_seg(model_dir / "seg", ["dent", "scratch"])


# Flat names the tests use for the parts of Settings they change.
_THRESHOLDS = {"car_threshold": "car", "damage_threshold": "damage", "mask_threshold": "mask", "always_segment": None}
_MODELS = {
    "precision", "seg_backend", "calibration_photos", "seg_image_size", "part_image_size", "severity", "parts",
    "damaged_part_confidence",
}  # fmt: skip
_LIMITS = {"max_pixels", "max_aspect", "working_size"}


def tiny_settings(car: Path, damage: Path, seg: Path, **changes):
    """Settings with tiny models (fp32, 320 px, up to 5 instances) and the given changes."""
    from pipeline import ModelRef, ModelSet, Settings

    models = ModelSet(
        car=ModelRef(str(car)), damage=ModelRef(str(damage)), segmenter=ModelRef(str(seg)),
        seg_image_size=320, precision="fp32",
    )  # fmt: skip
    settings = Settings(models=models, max_detections=5)
    thresholds = {(_THRESHOLDS[k] or k): changes.pop(k) for k in list(changes) if k in _THRESHOLDS}
    model_changes = {k: changes.pop(k) for k in list(changes) if k in _MODELS}
    limits = {k: changes.pop(k) for k in list(changes) if k in _LIMITS}
    settings = settings.with_thresholds(**thresholds).with_models(**model_changes).with_limits(**limits)
    return dataclasses.replace(settings, **changes)


@pytest.fixture(scope="session")
def settings_factory(car_imagenet_yes: Path, damage_yes: Path, seg_model: Path):
    """Settings with tiny models: pass overrides for the branch under test."""

    def make(car: Path = car_imagenet_yes, damage: Path = damage_yes, seg: Path = seg_model, **changes):
        return tiny_settings(car, damage, seg, **changes)

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


@pytest.fixture(scope="session")
def shared_split(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The held-out split of the shared sets and the file of their pHashes (``hash_cache``), computed once a
    session: hashing every shared photo means thousands of decodes, and the split's test and the build's data
    preparation both need them."""
    from train.sources import held_out_split

    cache = tmp_path_factory.mktemp("phash") / "phash-cache.json"
    return held_out_split(shared_dir, hash_cache=cache), cache


# Started first, so that with a worker per CPU (-n logical --dist loadgroup) the longest work does not run alone at
# the end.
SLOW_FIRST = ("test_scale.py", "test_release.py", "test_pipeline.py", "test_limits.py", "test_train_scripts.py")


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook has given each grouped item its group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: each file keeps its order
    check_groups_reach_the_scheduler(config, items)


def check_groups_reach_the_scheduler(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-xdist passes a test's xdist_group to its scheduler as a suffix of the test's node id; a pytest that
    ignores the suffix (9.2: pytest-xdist#1386) spreads a group over the workers without a word: two Ray
    runtimes side by side, the release loaded twice. The suite then stalled in CI, so it stops here instead."""
    if not getattr(config.option, "loadgroup", False):  # set in the workers of --dist loadgroup only
        return
    lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(
            f"{len(lost)} tests lost their xdist_group (first: {lost[0]}): this pytest drops pytest-xdist's groups; "
            "install requirements-dev.txt's pytest, or run with -n 0"
        )
