"""The release's car check: ImageNet's classes plus "damaged car" (train/release_car.py)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from pipeline import testing
from pipeline.car import CarCheck, car_label_ids
from pipeline.settings import ModelRef
from train.release_car import (
    FOLDER,
    NEW_LABEL,
    CarClassArguments,
    best_threshold,
    car_probability,
    fit_logit,
    point_profile_at,
    pooled_features,
    write_model,
)


def test_the_added_class_is_a_car_class_the_product_counts(tmp_path):
    """One more label and one more classifier row; the product's P(car) then includes the new class."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    labels = testing.IMAGENET_STYLE_LABELS
    base = testing.timm_classifier(tmp_path / "base", labels)
    model = AutoModelForImageClassification.from_pretrained(base).eval()
    photos = [tmp_path / f"{seed}.jpg" for seed in range(2)]
    for seed, path in enumerate(photos):
        testing.photo(64, 48, seed=seed).save(path)
    features = pooled_features(model, AutoImageProcessor.from_pretrained(base), photos)
    assert features.shape == (2, model.timm_model.num_features)
    weight = torch.zeros(features.shape[1])
    out = write_model(base, tmp_path / "build" / FOLDER, weight, torch.tensor(30.0))  # the new class wins
    id2label = AutoConfig.from_pretrained(out).id2label
    assert len(id2label) == len(labels) + 1 and id2label[len(labels)] == NEW_LABEL
    assert len(labels) in car_label_ids(id2label)
    images = [testing.photo(64, 48, seed=seed) for seed in range(2)]
    before = CarCheck(ModelRef(str(base)), "fp32").scores(images, 0.5)
    after = CarCheck(ModelRef(str(out)), "fp32").scores(images, 0.5)
    assert all(check.score < 0.5 for check in before) and all(check.score > 0.99 for check in after)
    again = write_model(out, tmp_path / "again" / FOLDER, weight, torch.tensor(-30.0))  # a resumed build's refit
    assert AutoConfig.from_pretrained(again).id2label == id2label  # the class replaced, not added twice
    assert all(check.score < 0.5 for check in CarCheck(ModelRef(str(again)), "fp32").scores(images, 0.5))


def test_the_fitted_logit_separates_cars_from_other_photos():
    """Features that tell cars apart: the new logit lifts P(car) on cars and leaves the others low."""
    generator = torch.Generator().manual_seed(0)
    is_car = torch.tensor([1.0] * 40 + [0.0] * 40)
    features = torch.randn(80, 16, generator=generator) + (is_car[:, None] * 2 - 1) * 3 * torch.eye(16)[0]
    logits = torch.zeros(80, len(testing.IMAGENET_STYLE_LABELS))
    ids = car_label_ids(dict(enumerate(testing.IMAGENET_STYLE_LABELS)))
    weight, bias = fit_logit(features, logits, is_car, ids, CarClassArguments(build="unused", steps=300))
    p = car_probability(features, logits, ids, weight, bias)
    assert p[is_car == 1].min() > 0.5 > p[is_car == 0].max()


def test_the_threshold_is_the_middle_of_the_best():
    p = np.array([0.9, 0.6, 0.35, 0.05, 0.01, 0.12])
    is_car = np.array([1, 1, 1, 0, 0, 0])
    threshold, accuracy = best_threshold(p, is_car)
    assert accuracy == 1.0 and 0.15 <= threshold <= 0.3  # every threshold in (0.12, 0.35] separates them


def test_the_threshold_comes_from_one_run_of_ties_and_needs_both_kinds():
    """Ties at 0.02 and at 0.4-0.6 with a dip between: the middle of all of them (~0.11) would be a threshold
    measured at 0.5; the longest run of neighbouring ties gives one measured at the best."""
    p, is_car = np.array([0.03, 0.65, 0.012, 0.35]), np.array([1, 1, 0, 0])
    threshold, accuracy = best_threshold(p, is_car)
    assert accuracy == 0.75 and 0.4 <= threshold <= 0.6
    with pytest.raises(ValueError, match="cars and non-cars"):
        best_threshold(np.array([0.2, 0.3]), np.array([1, 1]))


def test_the_builds_profile_names_the_new_car_check(tmp_path):
    """Whatever the build's profile held for the car (another path, a sha256), it now names the new folder and its
    threshold; the other sections are as they were."""
    profile = tmp_path / "profile.toml"
    profile.write_text(
        '[car]\nsha256 = "ab"\nmodel = "../main/models/car-check"\n\n[damage]\nmodel = "damage-classifier"\n\n'
        "[thresholds]\ndamage = 0.65\n\n[runtime]\nseg_image_size = 448\n"
    )
    point_profile_at(tmp_path, 0.25)
    data = tomllib.loads(profile.read_text())
    assert data["car"] == {"model": FOLDER} and data["damage"] == {"model": "damage-classifier"}
    assert data["thresholds"] == {"damage": 0.65, "car": 0.25} and data["runtime"] == {"seg_image_size": 448}


def test_the_car_check_is_never_written_over_its_base(tmp_path):
    base = testing.timm_classifier(tmp_path / "car-check", testing.IMAGENET_STYLE_LABELS[:3])
    with pytest.raises(ValueError, match="over its own base"):
        write_model(base, tmp_path / "car-check", torch.zeros(4), torch.tensor(0.0))
    assert (base / "model.safetensors").is_file()
