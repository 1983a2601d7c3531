"""A segmenter against ground-truth polygons: box and mask mAP with Ultralytics' validator.

A model's own figure, for choosing checkpoints and comparing runs: the validator matches instances to polygons
(no product code does). The masks a user gets are measured through the CLI by ``train.release_eval`` (mask mAP50
per kind, ``train.release_masks``).
"""

from __future__ import annotations

from pathlib import Path

from train.common import offline_env


def evaluate_segmenter(
    model: str | Path, data: str | Path, imgsz: int = 640, split: str = "val", batch: int = 8, single_cls: bool = False
) -> dict:
    """Box and mask mAP50 / mAP50-95, overall and per class, with Ultralytics' validator.

    ``data`` is a YOLO data yaml, or a COCO json (converted to a temporary YOLO dataset first). ``single_cls``:
    class-agnostic figures (every label and prediction counts as one class), comparable across class sets.
    """
    offline_env()
    import tempfile

    from ultralytics import YOLO

    data = Path(data)
    if data.suffix == ".json":
        from train.prepare import build_yolo_dataset, read_coco

        target = Path(tempfile.mkdtemp(prefix="coco-as-yolo-"))
        data = build_yolo_dataset({"": read_coco(data)}, target, val_fraction=0.0)
        split = "train"  # everything went to the one split
    seg = YOLO(str(model))
    results = seg.val(
        data=str(data),
        imgsz=imgsz,
        split=split,
        batch=batch,
        device="cpu",
        plots=False,
        verbose=False,
        single_cls=single_cls,
        project=tempfile.mkdtemp(prefix="seg-val-"),  # not ./runs in the caller's working directory
    )
    names = {0: "all (class-agnostic)"} if single_cls else results.names
    per_class = {}
    for i, class_id in enumerate(results.seg.ap_class_index):
        per_class[names[int(class_id)]] = {
            "box_map50": float(results.box.all_ap[i, 0]),
            "box_map50_95": float(results.box.all_ap[i].mean()),
            "mask_map50": float(results.seg.all_ap[i, 0]),
            "mask_map50_95": float(results.seg.all_ap[i].mean()),
        }
    return {
        "task": "segmenter",
        "model": str(model),
        "data": str(data),
        "split": split,
        "imgsz": imgsz,
        "class_agnostic": single_cls,
        "box_map50": float(results.box.map50),
        "box_map50_95": float(results.box.map),
        "mask_map50": float(results.seg.map50),
        "mask_map50_95": float(results.seg.map),
        "per_class": per_class,
    }
