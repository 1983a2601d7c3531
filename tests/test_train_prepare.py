"""train.prepare: converters round-trip polygons; splits keep near-duplicates on one side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import testing
from train import prepare

SQUARE = np.array([[10.0, 20.0], [90.0, 20.0], [90.0, 60.0], [10.0, 60.0]])


def test_polygon_round_trip() -> None:
    line = prepare.polygon_to_yolo(3, SQUARE, width=200, height=100)
    class_id, back = prepare.yolo_to_polygon(line, width=200, height=100)
    assert class_id == 3
    np.testing.assert_allclose(back, SQUARE, atol=1e-3)


def _save(folder: Path, name: str, seed: int, size: tuple[int, int] = (200, 100)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    testing.photo(*size, seed=seed).save(path)
    return path


def _read_labels(out: Path, split: str, stem: str, width: int, height: int) -> list[tuple[int, np.ndarray]]:
    text = (out / split / "labels" / f"{stem}.txt").read_text()
    return [prepare.yolo_to_polygon(line, width, height) for line in text.splitlines()]


@pytest.mark.parametrize("regions_as_dict", [False, True])
def test_via_to_yolo_round_trip(tmp_path: Path, regions_as_dict: bool) -> None:
    _save(tmp_path / "via", "a.jpg", seed=1)
    region = {
        "shape_attributes": {
            "name": "polygon",
            "all_points_x": SQUARE[:, 0].tolist(),
            "all_points_y": SQUARE[:, 1].tolist(),
        },
        "region_attributes": {"name": "damage"},
    }
    regions = {"0": region} if regions_as_dict else [region]
    via = {
        "a.jpg123": {"filename": "a.jpg", "regions": regions},
        "missing.jpg9": {"filename": "missing.jpg", "regions": []},  # listed but absent: skipped
    }
    (tmp_path / "via" / "via.json").write_text(json.dumps(via))
    samples = prepare.read_via(tmp_path / "via" / "via.json")
    assert [s.image.name for s in samples] == ["a.jpg"]
    data_yaml = prepare.build_yolo_dataset({"": samples}, tmp_path / "out", names=["damage"], val_fraction=0.0)
    assert "nc: 1" in data_yaml.read_text()
    [(class_id, polygon)] = _read_labels(tmp_path / "out", "train", "a", 200, 100)
    assert class_id == 0
    np.testing.assert_allclose(polygon, SQUARE, atol=1e-3)
    assert (tmp_path / "out" / "train" / "images" / "a.jpg").exists()


def test_coco_to_yolo_round_trip(tmp_path: Path) -> None:
    _save(tmp_path / "coco" / "JPEGImages", "b.jpg", seed=2)
    coco = {
        "images": [{"id": 7, "file_name": "b.jpg", "path": "JPEGImages/b.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "_background_"}, {"id": 2, "name": "door"}, {"id": 3, "name": "hood"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [SQUARE.ravel().tolist()]},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [SQUARE.ravel().tolist()]},
        ],
    }
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(coco))
    samples = prepare.read_coco(tmp_path / "coco" / "annotations.json")
    assert [name for name, _ in samples[0].polygons] == ["hood"]  # background dropped
    prepare.build_yolo_dataset({"src": samples}, tmp_path / "out", names=["door", "hood"], val_fraction=0.0)
    [(class_id, polygon)] = _read_labels(tmp_path / "out", "train", "src__b", 200, 100)
    assert class_id == 1
    np.testing.assert_allclose(polygon, SQUARE, atol=1e-3)


def test_split_keeps_near_duplicates_together(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(8):
        _save(root / ("damaged" if i % 2 else "whole"), f"p{i}.jpg", seed=10 + i, size=(128, 128))
    # A resized copy of p0, filed under the other label: it must land on p0's side.
    original = root / "whole" / "p0.jpg"
    from PIL import Image

    Image.open(original).resize((96, 96)).save(root / "damaged" / "p0-copy.jpg")
    groups = prepare.near_duplicate_groups([original, root / "damaged" / "p0-copy.jpg", root / "whole" / "p2.jpg"])
    assert groups[0] == groups[1] != groups[2]
    for seed in range(4):
        out = tmp_path / f"split{seed}"
        counts = prepare.split_image_folder(root, out, val_fraction=0.3, seed=seed)
        assert sum(counts["train"].values()) + sum(counts["val"].values()) == 9
        sides = {split for split in ("train", "val") for p in (out / split).rglob("p0*.jpg")}
        assert len(sides) == 1


def test_training_code_leaves_truncated_uploads_refused(tmp_path) -> None:
    """Importing (and using) the training code must not switch Pillow to accepting truncated photos globally: a
    process that trains and serves, or a test session, would then analyse broken uploads as photos."""
    from PIL import ImageFile

    import train.build_profile  # the imports are the point
    import train.train_classifier  # noqa: F401
    from pipeline.decode import load_photo
    from pipeline.errors import CorruptPhotoError
    from train.common import open_rgb

    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(testing.jpeg_bytes(testing.photo(256, 192, seed=3))[:1500])
    assert open_rgb(truncated).size == (256, 192)  # training takes what a truncated photo holds
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(CorruptPhotoError):
        load_photo(truncated.read_bytes())
