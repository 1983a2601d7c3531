"""Mask figures of the release evaluation: predictions.json (as the CLI wrote it) against the held-out polygons,
with pycocotools: class-agnostic mask mAP50 per kind of photo, and the damage type of matched lensor masks."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

MASK_KINDS = ("nmpd", "lensor")
DAMAGE_TYPES = ("dent", "scratch", "broken")


def staged_name(file_name: str) -> str:
    """The staged name (``kind/photo``) of a file the CLI names under the input folder (``photos/kind/photo``)."""
    return "/".join(file_name.replace("\\", "/").split("/")[-2:])


def _image_ids(coco: dict, staged: dict) -> dict[str, tuple[int, dict]]:
    """staged name -> (predictions.json image id, its image entry)."""
    names = ((staged_name(image["file_name"]), image) for image in coco.get("images", []))
    return {name: (image["id"], image) for name, image in names if name in staged}


def ground_truth(names: Sequence[str], staged: dict, ids: dict) -> dict:
    """A COCO dict of the photos' polygons, one category (class-agnostic), RLE masks."""
    entries = []
    for name in names:
        image_id, image = ids[name]
        entries.append((image_id, staged[name].sample.polygons, image["height"], image["width"], (1.0, 1.0)))
    return polygon_coco(entries)


def polygon_coco(entries: Sequence[tuple[int, Sequence, int, int, tuple[float, float]]]) -> dict:
    """COCO ground truth from (image id, (label, polygon) pairs, height, width, scale) per photo: each polygon divided
    by the scale (a working copy's: ``Photo.scale``), one category (class-agnostic), RLE masks, labels kept."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for image_id, polygons, height, width, (sx, sy) in entries:
        images.append({"id": image_id, "width": width, "height": height})
        for label, polygon in polygons:
            points = (np.asarray(polygon, dtype=float).reshape(-1, 2) / [sx, sy]).reshape(-1).tolist()
            if len(points) < 6:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects([points], height, width))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
                "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 0,
                "label": label,
            })  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "damage"}]}


def predictions(coco: dict, image_ids: set[int]) -> list[dict]:
    """The CLI's instances on those photos, every class as one (as shipped, class-agnostic)."""
    return [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "segmentation": a["segmentation"],
            "score": a["score"],
            "label": _category(coco, a["category_id"]),
        }
        for a in coco.get("annotations", [])
        if a["image_id"] in image_ids
    ]


def _category(coco: dict, category_id: int) -> str:
    return next((c["name"] for c in coco.get("categories", []) if c["id"] == category_id), "")


def map50(truth: dict, found: list[dict]) -> float | None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not truth["annotations"]:
        return None
    if not found:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress and tables: not ours to print
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        dt = gt.loadRes([dict(f) for f in found])
        evaluation = COCOeval(gt, dt, "segm")
        evaluation.params.imgIds = [image["id"] for image in truth["images"]]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return max(float(evaluation.stats[1]), 0.0)  # AP at IoU 0.5 (-1 when undefined)


def type_accuracy(truth: dict, found: list[dict]) -> dict:
    """Each typed polygon's best-overlapping mask (IoU >= 0.5): does the mask name the polygon's type?"""
    from pycocotools import mask as mask_utils

    right = matched = typed = 0
    for annotation in truth["annotations"]:
        kind = annotation["label"].split("-")[-1]
        if kind not in DAMAGE_TYPES:
            continue
        typed += 1
        candidates = [f for f in found if f["image_id"] == annotation["image_id"]]
        if not candidates:
            continue
        ious = mask_utils.iou([c["segmentation"] for c in candidates], [annotation["segmentation"]], [0])[:, 0]
        best = int(np.argmax(ious))
        if ious[best] >= 0.5:
            matched += 1
            right += candidates[best]["label"] == kind
    return {"type_accuracy_lensor": right / matched if matched else None, "type_matched": matched, "typed": typed}


def map50_interval(truth: dict, found: list[dict], draws: int = 200, seed: int = 0) -> list[float] | None:
    """The 95 % interval of ``map50`` over photos drawn with replacement (a bootstrap): how far the figure could
    move on another draw of photos like these (30 nm/pd photos: 0.269 had 0.16-0.41), so that two runs are not
    told apart by noise."""
    by_photo: dict[int, tuple[list, list]] = {image["id"]: ([], []) for image in truth["images"]}
    for annotation in truth["annotations"]:
        by_photo[annotation["image_id"]][0].append(annotation)
    for instance in found:
        by_photo[instance["image_id"]][1].append(instance)
    images, rng, values = {image["id"]: image for image in truth["images"]}, np.random.default_rng(seed), []
    for _ in range(draws):
        drawn = {"images": [], "annotations": [], "categories": truth["categories"]}
        instances = []
        for new_id, old_id in enumerate(rng.choice(list(images), size=len(images)), start=1):
            drawn["images"].append(images[int(old_id)] | {"id": new_id})
            annotations, detections = by_photo[int(old_id)]
            drawn["annotations"] += [a | {"id": len(drawn["annotations"]) + k + 1, "image_id": new_id}
                                     for k, a in enumerate(annotations)]  # fmt: skip
            instances += [d | {"image_id": new_id} for d in detections]
        value = map50(drawn, instances)
        if value is not None:
            values.append(value)
    if not values:
        return None
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def mask_figures(coco: dict, staged: dict) -> dict:
    ids = _image_ids(coco, staged)
    figures = {}
    for kind in MASK_KINDS:
        names = [n for n in ids if staged[n].kind == kind and staged[n].sample is not None]
        truth = ground_truth(names, staged, ids)
        found = predictions(coco, {ids[n][0] for n in names})
        figures[f"mask_map50_{kind}"] = map50(truth, found)
        figures[f"mask_map50_{kind}_interval"] = map50_interval(truth, found)
        if kind == "lensor":
            figures |= type_accuracy(truth, found)
    return figures
