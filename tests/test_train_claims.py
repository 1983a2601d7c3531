"""Issue 14/15 training code on tiny synthetic data: set labels, damage rules, grades, damaged parts (the last
through the product's own cascade)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from train import build_data
from train.classifier_data import folder_targets
from train.evaluate.damage_rules import rule_report, rule_scores
from train.evaluate.damaged_parts import evaluate_damaged_parts, part_group
from train.evaluate.metrics import set_f1, target_metrics
from train.evaluate.severity import coverage_sweep
from train.prepare import Sample
from train.train_classifier import class_weights, set_loss

LABELS = ["whole", "minor", "moderate", "severe"]


def test_folder_targets_map_folders_to_labels_or_sets() -> None:
    folders = ["whole", "minor", "damaged", "ignored"]
    targets = folder_targets(folders, LABELS, {"damaged": ["minor", "moderate", "severe"], "ignored": None})
    assert targets == {"whole": (0,), "minor": (1,), "damaged": (1, 2, 3)}
    with pytest.raises(ValueError, match="not among the labels"):
        folder_targets(["dents"], LABELS)


def test_set_loss_is_cross_entropy_for_one_label_and_the_set_probability_otherwise() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    one = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    assert set_loss(logits, one).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, one.argmax(1)))
    any_grade = torch.tensor([[0, 1.0, 1.0, 1.0]])
    p = logits[1].softmax(-1)
    assert set_loss(logits[1:], any_grade).item() == pytest.approx(-math.log(p[1:].sum()), rel=1e-5)
    weights = class_weights([(0,), (0,), (0,), (1,), (1, 2, 3)], 4)
    assert weights[1] == pytest.approx(3 * weights[0]) and weights[2] == 0  # sets do not count as known labels


def test_target_metrics_of_a_graded_model() -> None:
    targets = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1]])  # the last: damaged, grade unknown
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.3, 0.5, 0.1], [0.1, 0.1, 0.1, 0.7], [0.2, 0.2, 0.3, 0.3]])
    metrics = target_metrics(targets, probabilities, LABELS)
    assert metrics["damage_balanced_accuracy"] == 1.0  # P(damaged) = 1 - P(whole) >= 0.5 for the three damaged
    assert metrics["grade_accuracy"] == 0.5  # minor taken for moderate, severe right
    assert metrics["selection_score"] == pytest.approx((1.0 + metrics["grade_balanced_accuracy"]) / 2)


def test_rule_scores() -> None:
    p_cls, p_mask = np.array([0.2, 0.2, 0.9]), np.array([0.5, 0.1, 0.0])
    assert rule_scores("classifier", p_cls, p_mask, 0.25).tolist() == [0.2, 0.2, 0.9]
    np.testing.assert_allclose(rule_scores("noisy_or", p_cls, p_mask, 0.25), [0.6, 0.2, 0.9])
    np.testing.assert_allclose(rule_scores("max", p_cls, p_mask, 0.25), [0.5, 0.2, 0.9])
    np.testing.assert_allclose(rule_scores("any_mask", p_cls, p_mask, 0.25), [1.0, 0.2, 0.9])


def test_rule_report_prefers_the_evidence_that_separates() -> None:
    """The classifier misses half the damaged photos; the masks find them and are absent on whole cars."""
    kinds = np.array(["vds"] * 20 + ["lensor"] * 20 + ["web"] * 20 + ["dsmlr"] * 20)
    y_true = np.array([1] * 40 + [0] * 40)
    p_cls = np.where(y_true == 1, np.where(np.arange(80) % 2 == 0, 0.9, 0.02), 0.05)  # misses score below whole
    p_mask = np.where(y_true == 1, 0.6, 0.05)
    classifier = rule_report("classifier", kinds, y_true, p_cls, p_mask)
    any_mask = rule_report("any_mask", kinds, y_true, p_cls, p_mask)
    assert classifier["source_balanced_accuracy"] == pytest.approx(0.75)
    assert any_mask["source_balanced_accuracy"] == 1.0 and any_mask["cv_source_balanced_accuracy"] == 1.0
    assert any_mask["balanced_accuracy_vs"] == {"web": 1.0, "dsmlr": 1.0}


def test_rule_scores_give_the_products_verdicts() -> None:
    """The sweep's vectorised rules call a photo damaged exactly when pipeline.analyze's verdict does."""
    from types import SimpleNamespace

    from pipeline.analyze import _verdict
    from pipeline.results import Check
    from pipeline.settings import DAMAGE_RULES, Settings

    p_cls, p_mask = np.array([0.05, 0.3, 0.45, 0.7, 0.3, 0.05]), np.array([0.0, 0.12, 0.3, 0.0, 0.55, 0.9])
    for rule in DAMAGE_RULES:
        for mask_t, damage_t in ((0.1, 0.5), (0.25, 0.4), (0.5, 0.6)):
            settings = Settings(damage_rule=rule).with_thresholds(mask=mask_t, damage=damage_t)
            product = [
                _verdict(Check(float(c), damage_t), (SimpleNamespace(score=float(m)),) if m else (), settings).positive
                for c, m in zip(p_cls, p_mask, strict=True)
            ]
            assert (rule_scores(rule, p_cls, p_mask, mask_t) >= damage_t).tolist() == product, (rule, mask_t)


def test_grades_and_coverage() -> None:
    """Two photos graded minor (0.8) and severe (0.5), truly minor and moderate."""
    y_true, predicted, confidence = np.array([0, 1]), np.array([0, 2]), np.array([0.8, 0.5])
    sweep = {r["confidence"]: r for r in coverage_sweep(y_true, predicted, confidence)}
    assert sweep[0.36]["coverage"] == 1.0 and sweep[0.36]["accuracy"] == 0.5
    assert sweep[0.6]["coverage"] == 0.5 and sweep[0.6]["accuracy"] == 1.0
    assert sweep[0.9]["coverage"] == 0.0 and sweep[0.9]["accuracy"] is None


def _yb_style_yaml(root: Path) -> Path:
    """Two photos with yb damaged-part labels: a bumper; a bumper and a door."""
    from pipeline import testing

    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    square = "0.1 0.1 0.6 0.1 0.6 0.6 0.1 0.6"
    for name, classes in (("a", [0]), ("b", [0, 1])):
        testing.photo(160, 96, seed=len(name)).save(root / "val" / "images" / f"yb__{name}.jpg")
        (root / "val" / "labels" / f"yb__{name}.txt").write_text("".join(f"{c} {square}\n" for c in classes))
    (root / "data.yaml").write_text(f"path: {root}\nval: val/images\nnames: [Bumper, door]\n")
    return root / "data.yaml"


def test_damaged_parts_are_the_products(tmp_path: Path) -> None:
    """The figure is what pipeline.analyze reports: each damage on the part pipeline.parts puts it on (the part
    segmenter has the damage segmenter's tiny weights, so its masks fall where the damages do: front_bumper), and
    none when the cascade shows no mask."""
    from pipeline import testing
    from pipeline.settings import ModelRef, ModelSet, Settings

    data = _yb_style_yaml(tmp_path / "yb")
    car = testing.vit_classifier(tmp_path / "car", testing.IMAGENET_STYLE_LABELS, favour="sports car")
    seg = testing.yolo_seg(tmp_path / "seg", ["dent", "scratch"])
    parts = testing.yolo_seg(tmp_path / "parts", ["front_bumper", "front_left_door"])
    for favour, f1 in (("damaged", 0.8), ("whole", 0.0)):
        damage = testing.vit_classifier(tmp_path / favour, ["whole", "damaged"], favour=favour)
        models = ModelSet(
            car=ModelRef(str(car)), damage=ModelRef(str(damage)), segmenter=ModelRef(str(seg)),
            parts=ModelRef(str(parts)), precision="fp32", seg_image_size=320, part_image_size=320,
        )  # fmt: skip
        metrics = evaluate_damaged_parts(Settings(models=models, max_detections=5), data)
        assert metrics["n"] == 2 and metrics["f1"] == pytest.approx(f1), favour
        assert metrics["photos_with_a_damage_mask"] == (1.0 if favour == "damaged" else 0.0)
    assert metrics["per_group"]["all"]["n_true"] == 3  # bumper, bumper + door
    assert part_group("Bonnet") == part_group("hood") == "bonnet/hood"
    assert part_group("wheel") is None
    scores = set_f1([{"bumper", "door"}, {"light"}], [{"bumper"}, {"light", "fender"}])
    assert scores["all"]["precision"] == pytest.approx(2 / 3) and scores["all"]["recall"] == pytest.approx(2 / 3)
    assert scores["door"]["recall"] == 0.0 and scores["fender"]["precision"] == 0.0


def test_damage_classes_of_the_segmenter() -> None:
    assert build_data.damage_class("minor-dent", "damage") == "damage"
    assert build_data.damage_class("severe-broken", "type") == "broken"
    assert build_data.damage_class("damage", "type") == "damage"  # nm / pd polygons carry no type
    assert build_data.damage_class("moderate-scratch", "grade_type") == "moderate-scratch"
    assert "minor-broken" not in build_data.seg_class_names("grade_type")


def test_resized_copy_scales_the_polygons(tmp_path: Path) -> None:
    from pipeline import testing

    testing.photo(1024, 512, seed=0).save(tmp_path / "big.jpg")
    square = np.array([[100.0, 100.0], [300.0, 100.0], [300.0, 200.0]])
    resized = build_data._resized_sample(Sample(tmp_path / "big.jpg", [("damage", square)]), tmp_path / "r.jpg", 512)
    from PIL import Image

    assert Image.open(resized.image).size == (512, 256)
    np.testing.assert_allclose(resized.polygons[0][1], square / 2)


def test_graded_classifier_trains_on_photos_of_unknown_grade(tmp_path: Path) -> None:
    """One pass for the damage check and the grade: nm-style photos of unknown grade train as "one of the grades"."""
    import json

    from transformers import AutoConfig

    from pipeline import testing
    from pipeline.damage import damage_label_ids
    from train.train_classifier import main

    for split in ("train", "dev"):
        for k, folder in enumerate(("whole", "minor", "moderate", "severe", "damaged")):
            (tmp_path / split / folder).mkdir(parents=True)
            for i in range(2):
                testing.photo(48, 40, seed=10 * k + i).save(tmp_path / split / folder / f"src__{i}.jpg")
    base = testing.vit_classifier(tmp_path / "base", ["a", "b", "c"], favour=None)
    out = tmp_path / "out"
    main(
        [
            "--model_name_or_path", str(base), "--train_dir", str(tmp_path / "train"),
            "--validation_dir", str(tmp_path / "dev"), "--labels", *LABELS,
            "--folder_map", json.dumps({"damaged": ["minor", "moderate", "severe"]}), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "steps", "--eval_steps", "1",
            "--save_strategy", "steps", "--save_steps", "1", "--dataloader_num_workers", "0",
        ]
    )  # fmt: skip
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == dict(enumerate(LABELS))
    damaged, whole = damage_label_ids(config.id2label)
    assert (damaged, whole) == ([1, 2, 3], [0])  # the pipeline reads P(damaged) = 1 - P(whole)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["train_images"] == 10 and "eval_grade_accuracy" in summary["eval"]
