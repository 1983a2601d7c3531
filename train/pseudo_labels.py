"""Pseudo-labelled photos for the damage segmenter: graded damaged photos (vds-severity) carry no polygons; a trained
segmenter (the resumed release's) labels them, and the build adds them to the segmenter's training photos.

nm / pd, the photos the nm/pd figure is measured like, give the segmenter 81 training photos; vds-severity holds
~1,800 damaged cars of the same kind. Only a sure instance becomes a label. An unsure one is painted grey, so that it
teaches neither "damage here" nor "nothing here"; a photo whose unsure instance is too large to grey out is skipped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.build_data import resized_copy
from train.prepare import Polygon, Sample, write_yolo_split

GREY = 114  # Ultralytics' letterbox fill: the colour the model already reads as "no photo here"


@dataclass(frozen=True)
class PseudoRule:
    sure: float = 0.5  # an instance at or above becomes a label
    unsure: float = 0.1  # an instance between unsure and sure is greyed out
    max_grey_share: float = 0.1  # a photo whose unsure instance covers more of it is skipped


@dataclass(frozen=True)
class Instance:
    polygon: Polygon  # pixel coordinates in the photo
    confidence: float
    name: str  # the segmenter's own class name
    area_share: float  # of the photo


def labelled_photo(
    image: np.ndarray, instances: Sequence[Instance], rule: PseudoRule
) -> list[tuple[str, Polygon]] | None:
    """The sure instances as (class name, polygon) pairs, greying ``image`` (in place) under the unsure ones; None
    where the photo should not be used (no sure instance, or an unsure one too large to grey out)."""
    import cv2

    kept = [i for i in instances if i.confidence >= rule.unsure and len(i.polygon) >= 3]
    sure = [i for i in kept if i.confidence >= rule.sure]
    unsure = [i for i in kept if i.confidence < rule.sure]
    if not sure or any(i.area_share > rule.max_grey_share for i in unsure):
        return None
    for instance in unsure:
        region = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(region, [instance.polygon.astype(np.int32)], 1)
        image[cv2.dilate(region, np.ones((9, 9), np.uint8)) > 0] = GREY  # a margin: masks are a little tight
    return [(i.name, i.polygon) for i in sure]


def predicted_instances(model, image: np.ndarray, imgsz: int, rule: PseudoRule) -> list[Instance]:
    """The segmenter's instances on one photo (Ultralytics results converted here, at the edge)."""
    result = model.predict(image, imgsz=imgsz, conf=rule.unsure, agnostic_nms=True, verbose=False)[0]
    if result.masks is None:
        return []
    shares = result.masks.data.float().mean(dim=(1, 2)).tolist()
    return [
        Instance(np.asarray(polygon), float(conf), result.names[int(cls)], share)
        for polygon, conf, cls, share in zip(
            result.masks.xy, result.boxes.conf.tolist(), result.boxes.cls.tolist(), shares, strict=True
        )
    ]


def add_pseudo_labelled(
    weights: Path,
    photos: Sequence[Path],
    root: Path,
    names: Sequence[str],
    count: int,
    imgsz: int,
    rule: PseudoRule,
    seed: int = 0,
) -> int:
    """Label up to ``count`` of ``photos`` (shuffled) into ``root``/train as the build's other training photos
    (resized to ``imgsz``, classes indexed by ``names``); returns how many were added."""
    import cv2
    from ultralytics import YOLO

    model, order, samples = YOLO(str(weights)), sorted(photos), []
    random.Random(seed).shuffle(order)
    for path in order:
        if len(samples) >= count:
            break
        copy = resized_copy(path, root / "resized" / "pseudo" / f"{path.parent.name}-{path.stem}.jpg", imgsz)
        image = cv2.imread(str(copy))
        polygons = (
            None if image is None else labelled_photo(image, predicted_instances(model, image, imgsz, rule), rule)
        )
        copy.unlink()  # a link to ../shared where the photo was small enough: the greyed photo is a file of its own
        if polygons is not None:
            cv2.imwrite(str(copy), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            samples.append(Sample(copy, polygons))
    return write_yolo_split(samples, root, "train", names, "pseudo")
