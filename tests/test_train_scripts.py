"""Smoke tests: each training script runs a few steps on tiny data built here; the profile writer round-trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import testing
from train.common import list_images


def _image_folders(root: Path, per_label: int = 4) -> Path:
    for label_index, label in enumerate(("whole", "damaged")):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(per_label):
            testing.photo(48, 40, seed=100 * label_index + i).save(folder / f"{i}.jpg")
    return root


def test_train_classifier_few_steps(tmp_path: Path) -> None:
    from transformers import AutoConfig

    from train.train_classifier import main

    base = testing.vit_classifier(tmp_path / "base", ["a", "b", "c"], favour=None)
    data = _image_folders(tmp_path / "data")
    out = tmp_path / "out"
    main(
        [
            "--model_name_or_path", str(base), "--train_dir", str(data), "--val_fraction", "0.25",
            "--labels", "whole", "damaged", "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--eval_strategy", "steps", "--eval_steps", "1",
            "--save_strategy", "steps", "--save_steps", "1", "--dataloader_num_workers", "0",
            "--max_minutes", "5", "--freeze_fraction", "0.5",
        ]
    )  # fmt: skip
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "whole", 1: "damaged"}  # the pipeline's damage label convention
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["labels"] == ["whole", "damaged"] and summary["eval_images"] >= 1
    assert "eval_balanced_accuracy" in summary["eval"]


def test_augmentation_keeps_the_model_geometry(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    from train.classifier_data import eval_transform, train_transform

    base = testing.vit_classifier(tmp_path / "base", ["whole", "damaged"], favour=None)
    processor = AutoImageProcessor.from_pretrained(base)
    image = testing.photo(300, 200, seed=1)
    for transform in (
        train_transform(processor, "strong"),
        train_transform(processor, "light"),
        eval_transform(processor),
    ):
        assert tuple(transform(image).shape) == (3, 32, 32)


def test_class_weights_balance() -> None:
    from train.train_classifier import class_weights

    weights = class_weights([0, 0, 0, 1], 2).numpy()
    assert weights[1] == pytest.approx(3 * weights[0])
    np.testing.assert_allclose((weights * [3, 1]).sum(), 4.0)  # the loss keeps its scale


def _yolo_dataset(root: Path) -> Path:
    from train.prepare import Sample, build_yolo_dataset

    samples = []
    for i in range(4):
        path = root / "src" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        testing.photo(64, 64, seed=i).save(path)
        polygon = np.array([[8, 8], [40, 10], [44, 40], [10, 36]], dtype=float) + i
        samples.append(Sample(path, [("dent", polygon)]))
    return build_yolo_dataset({"": samples}, root / "yolo", names=["dent", "scratch"], val_fraction=0.5)


def test_train_segmenter_one_epoch(tmp_path: Path) -> None:
    import ultralytics
    import yaml

    from train.evaluate.segmenter import evaluate_segmenter
    from train.train_segmenter import main

    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8-seg.yaml").read_text())
    cfg["nc"] = 2
    base = tmp_path / "yolov8n-seg.yaml"  # the 'n' picks the nano scale; random init, no download
    base.write_text(yaml.safe_dump(cfg))
    data_yaml = _yolo_dataset(tmp_path)
    out = tmp_path / "seg"
    main(
        [
            "--data", str(data_yaml), "--model", str(base), "--output_dir", str(out), "--epochs", "1",
            "--imgsz", "64", "--batch", "2", "--workers", "0", "--cache", "false",
        ]
    )  # fmt: skip
    assert (out / "best.pt").exists()
    metrics = evaluate_segmenter(out / "best.pt", data_yaml, imgsz=64)
    for key in ("box_map50", "box_map50_95", "mask_map50", "mask_map50_95"):
        assert 0.0 <= metrics[key] <= 1.0  # a random-init model finds nothing; the numbers must still exist


def test_profile_round_trip(tmp_path: Path) -> None:
    import tomllib

    from pipeline.settings import load_profile
    from train.build_eval import profile_settings
    from train.build_outputs import write_profile

    car = testing.vit_classifier(tmp_path / "shared" / "car", testing.IMAGENET_STYLE_LABELS, favour=None)
    out = tmp_path / "models" / "offline"
    testing.vit_classifier(out / "damage-classifier", ["whole", "minor", "moderate", "severe"], favour=None)
    seg = testing.yolo_seg(out / "segmenter-build", ["damage"])
    (out / "segmenter").mkdir()
    seg.rename(out / "segmenter" / "best.pt")
    (out / "parts").mkdir()
    shutil.copyfile(out / "segmenter" / "best.pt", out / "parts" / "best.pt")
    models = {"damage": "damage-classifier", "segmenter": "segmenter/best.pt", "parts": "parts/best.pt"}
    thresholds = {"car": 0.01, "damage": 0.5, "mask": 0.25, "grade": 0.5}
    runtime = {"seg_image_size": 512, "part_image_size": 384, "damage_rule": "noisy_or", "seg_agnostic_nms": True}
    runtime["damaged_part_confidence"] = 0.1  # a model of damaged parts names them itself
    profile = write_profile(out, car, models, thresholds, runtime)
    data = tomllib.loads(profile.read_text())
    assert data["parts"]["model"] == "parts/best.pt" and "severity" not in data
    assert data["runtime"] == runtime and data["thresholds"] == thresholds
    settings = load_profile(profile)
    assert settings.models.seg_image_size == 512  # the segmenter runs at the size it was trained at
    assert settings.models.damaged_part_confidence == 0.1 and settings.models.seg_agnostic_nms
    assert Path(settings.models.car.id) == car.resolve()
    assert Path(settings.models.damage.id) == (out / "damage-classifier").resolve()
    assert Path(settings.models.segmenter.id) == (out / "segmenter" / "best.pt").resolve()
    assert (settings.thresholds.car, settings.thresholds.damage) == (0.01, 0.5)
    # The build measures its end-to-end figures on these settings before it writes the profile: the same ones.
    assert profile_settings(car, out, models, thresholds, runtime) == settings


@pytest.mark.xdist_group("shared-split")  # the session's pHashes of ../shared: computed in one worker
def test_build_data_from_shared(shared_dir: Path, shared_split, tmp_path: Path) -> None:
    """The build's folders all keep to the one held-out split: no photo (or near-duplicate) trains one model and
    is measured in another's held-out figures."""
    from train import build_data
    from train.build_profile import BuildArguments, prepare_all

    shutil.copyfile(shared_split[1], tmp_path / "phash-cache.json")  # the session's pHashes: where the build keeps them
    # seg_imgsz 0: the segmenter's training photos linked as they are, not resized (the resizing has its own tests:
    # test_resized_copy_scales_the_polygons, test_train_release's build): ~15 s less, and every one of them a link
    # this test follows back to its source (a resized copy is a new file the check below cannot trace).
    arguments = BuildArguments(shared=str(shared_dir), seg_backgrounds=9, seg_imgsz=0)
    data = prepare_all(arguments, shared_dir, tmp_path)
    split = data["split"]
    # Every path resolved, the split's too: the copies link to resolved paths (../shared may be a link itself).
    groups = {p.resolve(): group for p, group in split.groups.items()}
    held = {p.resolve() for paths in split.held_out.values() for p in paths}
    held_groups = {groups[p] for p in held}

    def resolved(folder: Path) -> set[Path]:
        return {p.resolve() for p in list_images(folder) if p.is_symlink()}

    trained = resolved(data["classify"] / "train") | resolved(data["classify"] / "dev")
    trained |= resolved(data["seg"].data_yaml.parent / "train") | resolved(data["parts"].parent / "train")
    assert trained and not trained & held
    assert not {groups[p] for p in trained if p in groups} & held_groups
    measured = resolved(data["classify"] / "held-out") | resolved(data["combine"]) | resolved(data["yb"].parent)
    assert measured <= held | {p.resolve() for p in list_images(shared_dir / "data" / "imagenet-sample")}
    counts = data["counts"]["classify"]
    assert counts["train"]["damaged"] > 200 and counts["held-out"]["whole"] > 300  # nm/pd copies; web + dsmlr held out
    # The segmenter: held-out photos of each kind in their own yaml; backgrounds have empty labels.
    seg_root = data["seg"].data_yaml.parent
    assert len(list_images(seg_root / "val-lensor")) > 100 and 20 < len(list_images(seg_root / "val-nmpd")) < 40
    backgrounds = list((seg_root / "train" / "labels").glob("background*.txt"))
    assert len(backgrounds) == 9 and all(p.read_text() == "" for p in backgrounds)
    assert build_data.seg_class_names("damage") == ["damage"]


def test_timm_wrapper_base_keeps_our_labels(tmp_path: Path) -> None:
    """timm-wrapper configs save ``label_names``: the base's ImageNet names must not survive the fine-tune."""
    from transformers import AutoConfig

    from pipeline.damage import damage_label_ids
    from train.train_classifier import main

    base = testing.timm_classifier(tmp_path / "base", testing.IMAGENET_STYLE_LABELS[:3])
    data = _image_folders(tmp_path / "data", per_label=2)
    out = tmp_path / "out"
    main(
        [
            "--model_name_or_path", str(base), "--train_dir", str(data), "--validation_dir", str(data),
            "--labels", "whole", "damaged", "--output_dir", str(out), "--max_steps", "1",
            "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--eval_strategy", "no",
            "--save_strategy", "no", "--load_best_model_at_end", "false",
        ]
    )  # fmt: skip
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "whole", 1: "damaged"}
    assert damage_label_ids(config.id2label) == ([1], [0])  # the product reads P(damaged) from label 1
