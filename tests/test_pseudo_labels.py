"""Pseudo-labelled training photos for the damage segmenter (train.pseudo_labels), on a tiny model and photos."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline import testing
from train import pseudo_labels
from train.pseudo_labels import GREY, Instance, PseudoRule, add_pseudo_labelled, labelled_photo

SQUARE = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], float)


def _instance(confidence: float, offset: int = 0, share: float = 0.05, name: str = "scratch") -> Instance:
    return Instance(SQUARE + offset, confidence, name, share)


def test_sure_instances_become_labels_and_unsure_ones_are_greyed_out():
    image = np.zeros((100, 200, 3), np.uint8)
    lines = labelled_photo(image, [_instance(0.8), _instance(0.3, offset=50), _instance(0.05, offset=20)], PseudoRule())
    assert [name for name, _ in lines] == ["scratch"] and np.array_equal(lines[0][1], SQUARE)  # the sure one only
    assert (image[70, 70] == GREY).all()  # inside the unsure square (60..80)
    assert (image[20, 20] == 0).all()  # the sure one's pixels stay as they were
    assert (image[35, 35] == 0).all()  # below the unsure threshold: neither label nor grey


def test_a_photo_without_a_sure_instance_or_with_a_large_unsure_one_is_not_used():
    image = np.zeros((100, 100, 3), np.uint8)
    assert labelled_photo(image, [_instance(0.4)], PseudoRule()) is None
    assert labelled_photo(image, [_instance(0.9), _instance(0.4, share=0.5)], PseudoRule()) is None
    assert not image.any()  # a skipped photo is not painted


def test_the_build_adds_up_to_count_photos_resized_with_their_labels(tmp_path, monkeypatch):
    photos = []
    for i in range(4):
        photos.append(tmp_path / "vds" / "minor" / f"p{i}.jpg")
        photos[-1].parent.mkdir(parents=True, exist_ok=True)
        testing.photo(300, 150, seed=i).save(photos[-1])
    root = tmp_path / "damage-seg"
    for sub in ("images", "labels"):
        (root / "train" / sub).mkdir(parents=True)
    found = iter([[], [_instance(0.9)], [_instance(0.9)], [_instance(0.9)]])  # the first photo: nothing found
    monkeypatch.setattr(pseudo_labels, "predicted_instances", lambda model, image, imgsz, rule: next(found))
    names = ["dent", "scratch", "broken", "damage"]
    weights = testing.yolo_seg(tmp_path / "seg", names)
    assert add_pseudo_labelled(weights, photos, root, names, count=2, imgsz=64, rule=PseudoRule()) == 2
    images = sorted((root / "train" / "images").iterdir())
    labels = sorted((root / "train" / "labels").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels] and len(images) == 2
    assert images[0].name.startswith("pseudo__minor-")
    assert Image.open(images[0]).size == (64, 32)
    # the segmenter's class name -> the build's index; pixels normalised to the resized photo
    assert labels[0].read_text() == "1 0.156250 0.312500 0.468750 0.312500 0.468750 0.937500 0.156250 0.937500\n"
    assert all(p.resolve().parents[1] == root / "resized" for p in images)  # files of the build, not links out
