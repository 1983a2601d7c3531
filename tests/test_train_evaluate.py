"""train.evaluate: perfect predictions give 1.0; a hand-made case gives the hand-computed numbers; the figures of
models come through the product's own stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import testing
from pipeline.settings import DAMAGE_RULES
from train.evaluate.classifiers import evaluate_classifier
from train.evaluate.damage_rules import damage_rules
from train.evaluate.metrics import best_threshold, binary_metrics, classification_metrics, source_balanced_accuracy
from train.evaluate.report import write_report
from train.evaluate.severity import evaluate_severity
from train.evaluate.verdicts import verdict_metrics


def test_perfect_predictions_score_one() -> None:
    metrics = binary_metrics([0, 0, 1, 1, 1], [0.1, 0.2, 0.8, 0.9, 0.7])
    for key in ("accuracy", "balanced_accuracy", "f1", "roc_auc"):
        assert metrics[key] == 1.0
    assert metrics["confusion_matrix"] == [[2, 0], [0, 3]]


def test_hand_made_case() -> None:
    # predictions at 0.5: [1, 1, 0, 0, 0]; TPR 2/3, TNR 1; precision 1, recall 2/3.
    metrics = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.3, 0.4, 0.1], threshold=0.5)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs are ordered
    assert metrics["confusion_matrix"] == [[2, 0], [1, 2]]
    at_025 = next(r for r in metrics["threshold_sweep"] if r["threshold"] == 0.25)
    assert at_025["tpr"] == 1.0 and at_025["tnr"] == 0.5
    assert best_threshold(metrics) == 0.5  # 0.45 to 0.6 all give 0.833: the one nearest 0.5 wins


def test_probability_matrix_and_multiclass() -> None:
    binary = classification_metrics([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert binary["balanced_accuracy"] == 1.0
    multi = classification_metrics([0, 1, 2, 2], np.eye(3)[[0, 1, 2, 0]])
    assert multi["accuracy"] == 0.75
    assert multi["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_verdict_metrics() -> None:
    truth = ["not_car", "not_car", "whole", "whole", "damaged", "damaged"]
    predicted = ["not_car", "whole", "whole", "damaged", "damaged", "damaged"]
    metrics = verdict_metrics(truth, predicted)
    assert metrics["car_check"]["balanced_accuracy"] == pytest.approx(0.75)  # not_car 1/2, car 4/4
    assert metrics["damage_check_on_cars"]["balanced_accuracy"] == pytest.approx(0.75)  # whole 1/2, damaged 2/2
    assert metrics["verdict_accuracy"] == pytest.approx(4 / 6)


def test_classifier_on_a_folder_with_report(tmp_path: Path, damage_yes: Path) -> None:
    model = damage_yes  # the session's whole/damaged model favouring "damaged": its OpenVINO copy is made once
    for i in range(3):
        folder = tmp_path / "data" / "damaged"
        folder.mkdir(parents=True, exist_ok=True)
        testing.photo(48, 40, seed=i).save(folder / f"src__{i}.jpg")
    metrics = evaluate_classifier(model, tmp_path / "data", role="damage")
    assert metrics["n"] == 3 and metrics["accuracy"] == 1.0 and metrics["balanced_accuracy"] == 1.0
    assert metrics["per_source"] == {"src/positive": {"n": 3, "accuracy": 1.0}}
    json_path, card = write_report(metrics, tmp_path / "report", "tiny")
    assert json_path.exists() and "balanced_accuracy" in card.read_text()


def test_photos_the_product_refuses_are_left_out(tmp_path: Path, damage_yes: Path) -> None:
    """The product's decode reads the photos: one it refuses (not an image) counts in no figure, and is counted."""
    model = damage_yes  # the session's whole/damaged model favouring "damaged": its OpenVINO copy is made once
    folder = tmp_path / "data" / "damaged"
    folder.mkdir(parents=True)
    for i in range(2):
        testing.photo(48, 40, seed=i).save(folder / f"src__{i}.jpg")
    (folder / "src__broken.jpg").write_bytes(b"not a photo")
    metrics = evaluate_classifier(model, tmp_path / "data", role="damage")
    assert metrics["n"] == 2 and metrics["refused"] == 1 and metrics["accuracy"] == 1.0
    assert all("broken" not in path for path, _, _ in metrics["scores"])


def test_severity_grades_are_the_products(tmp_path: Path) -> None:
    """A graded damage model answering "minor" for every photo: right on the minor photos, wrong on the moderate
    one, every photo found damaged and graded (the product's one-pass grade)."""
    model = testing.vit_classifier(tmp_path / "m", ["whole", "minor", "moderate", "severe"], favour="minor")
    for grade, count in (("minor", 2), ("moderate", 1)):
        (tmp_path / "d" / grade).mkdir(parents=True)
        for i in range(count):
            testing.photo(48, 40, seed=10 * len(grade) + i).save(tmp_path / "d" / grade / f"vds__{i}.jpg")
    metrics = evaluate_severity(model, tmp_path / "d", damage_threshold=0.5)
    assert metrics["n"] == 3 and metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert metrics["per_source"] == {"vds": {"n": 3, "accuracy": pytest.approx(2 / 3)}}
    assert metrics["coverage_at_threshold"] == 1.0 and metrics["accuracy_at_threshold"] == pytest.approx(2 / 3)
    assert metrics["damage_found"] == 1.0 and metrics["graded_when_damage_found"] == 1.0


def test_imagenet_style_car_check(tmp_path: Path, car_imagenet_yes: Path) -> None:
    model = car_imagenet_yes  # the session's ImageNet-style model favouring "sports car": its copy is made once
    for label in ("car", "not_car"):
        (tmp_path / "d" / label).mkdir(parents=True)
        testing.photo(40, 40, seed=3).save(tmp_path / "d" / label / "x.jpg")
    metrics = evaluate_classifier(model, tmp_path / "d", role="car")
    assert metrics["confusion_matrix"] == [[0, 1], [0, 1]]  # everything is a car to this model
    assert metrics["balanced_accuracy"] == 0.5


def test_source_balanced_accuracy() -> None:
    """Each (source, class) group weighs the same: a small unseen source counts as much as a big seen one."""
    paths = [Path(n) for n in ("a__1.jpg", "a__2.jpg", "b__1.jpg", "c__1.jpg", "c__2.jpg", "c__3.jpg")]
    y_true, scores = [1, 1, 0, 0, 0, 0], [0.9, 0.1, 0.9, 0.1, 0.1, 0.1]
    assert binary_metrics(y_true, scores)["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    # positives: a 1/2; negatives: b 0/1 and c 3/3 -> (0.5 + (0 + 1) / 2) / 2
    assert source_balanced_accuracy(paths, y_true, scores, 0.5) == pytest.approx(0.5)


def test_damage_rules_with_tiny_models(tmp_path: Path, damage_yes: Path, seg_model: Path) -> None:
    # The session's tiny models (the same whole/damaged classifier this test made itself; a segmenter with damage
    # types, as the release's): their OpenVINO copies, in the session's cache, are made once (~6 s less here).
    classifier, segmenter = damage_yes, seg_model
    for label, source in (("whole", "web"), ("damaged", "vds")):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(2):
            testing.photo(64, 64, seed=len(label) + i).save(tmp_path / "d" / label / f"{source}__{i}.jpg")
    metrics = damage_rules(classifier, segmenter, tmp_path / "d", imgsz=64)
    assert set(metrics["rules"]) == set(DAMAGE_RULES) and metrics["recommended_rule"] in DAMAGE_RULES
    assert metrics["n"] == {"vds": 2, "web": 2} and metrics["segmenter_ms_per_whole_photo"] > 0
    classifier_only = metrics["rules"]["classifier"]
    assert classifier_only["per_kind"]["vds"] == 1.0 or classifier_only["damage_threshold"] > 0.5
