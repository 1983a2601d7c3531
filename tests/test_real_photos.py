"""Real photos from ../shared with the real pretrained ImageNet classifier as car model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline import ModelRef, analyze_batch
from pipeline.__main__ import main as cli

pytestmark = pytest.mark.shared

# Files whose ImageNet class is a vehicle or a car part: neither side of a car / not-car test.
_VEHICLE_WORDS = (
    "car", "van", "truck", "bus", "jeep", "cab", "limo", "wagon", "ambulance", "Model_T", "racer", "pickup",
    "grille", "wheel", "mirror", "go-kart", "golfcart", "amphibian", "snowplow", "tractor", "moped", "scooter",
    "trolley", "locomotive", "tank", "forklift", "half_track", "recreational", "bike", "bicycle", "cycle", "motor",
    "snowmobile", "train", "harvester", "thresher", "tow", "fire_engine", "garbage", "trailer", "plow", "cart",
    "jinrikisha", "barrow", "sled", "brake", "gas_pump", "parking_meter", "odometer", "seat_belt", "helmet",
    "convertible", "minivan", "tire", "license",
)  # fmt: skip


@pytest.fixture(scope="module")
def imagenet_model(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "imagenet-efficientnet-lite0"
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} not found")
    pytest.importorskip("timm", reason="the shared ImageNet model is a timm model")
    return path


def _sample(files: list[Path], count: int) -> list[Path]:
    return random.Random(0).sample(sorted(files), min(count, len(files)))


def test_cars_are_cars_and_other_photos_are_not(settings_factory, imagenet_model, shared_dir):
    data = shared_dir / "data"
    cars = _sample(list((data / "dsmlr-carparts" / "JPEGImages").glob("*.jpg")), 24) + _sample(
        list((data / "nm-damage-via" / "train").glob("*.jpg")), 24
    )
    others = _sample(
        [
            p
            for p in (data / "imagenet-sample").glob("*.jpg")
            if not any(w.lower() in p.stem.lower() for w in _VEHICLE_WORDS)
        ],
        48,
    )
    settings = settings_factory(car=imagenet_model, car_threshold=0.1, cascade=True).with_models(
        car=ModelRef(str(imagenet_model))
    )
    car_hits = [a.is_car for a in analyze_batch(cars, settings)]
    other_hits = [a.is_car for a in analyze_batch(others, settings)]
    assert sum(car_hits) / len(car_hits) >= 0.95, [str(p.name) for p, hit in zip(cars, car_hits) if not hit]
    assert sum(not hit for hit in other_hits) / len(other_hits) >= 0.95, [
        p.name for p, hit in zip(others, other_hits) if hit
    ]


def test_cli_reports_a_real_car(imagenet_model, shared_dir, tmp_path, damage_no, seg_model, capsys):
    """The command line in this process (a child process spent ~5 s importing PyTorch again; test_cli runs
    ``python -m pipeline`` itself)."""
    photo = sorted((shared_dir / "data" / "dsmlr-carparts" / "JPEGImages").glob("*.jpg"))[0]
    profile = tmp_path / "p.toml"
    profile.write_text(
        f'[car]\nmodel = "{imagenet_model}"\n[damage]\nmodel = "{damage_no}"\n[segmenter]\nmodel = "{seg_model}"\n'
        '[thresholds]\ncar = 0.1\n[runtime]\nprecision = "fp32"\n'  # the real photo is the point, not the copies
    )
    assert cli([str(photo), "--out", str(tmp_path / "o"), "--models", str(profile), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["is_car"] is True and float(result["car_score"]) > 0.5
