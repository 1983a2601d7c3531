"""Instance masks from an Ultralytics segmentation model -> Detection records (compact masks, original-pixel boxes).

The damage segmenter and the part segmenter are both ``Segmenter``s; they differ only in their role.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .accel import choose_backend, import_yolo, on_openvino, quiet_ultralytics, resolve_precision
from .accel.yolo import cached_openvino, shipped_int8
from .accel.yolo_runtime import Instances, OpenVINOSegmenter
from .decode import Photo
from .hub import Stage, file_sha256, load_error, resolve_file
from .results import Detection, MaskCrop
from .settings import ModelRef


class Segmenter(Stage):
    def __init__(
        self,
        ref: ModelRef,
        precision: str = "auto",
        backend: str = "auto",
        calibration: Path | None = None,
        image_size: int = 640,
        role: str = "segmenter",
        agnostic: bool = False,
    ) -> None:
        super().__init__(ref)
        self.role, self.precision, self.image_size = role, precision, image_size
        self.agnostic = agnostic  # NMS across classes: one instance where two types cover the same damage
        self.backend = choose_backend(backend, precision)
        # Photos for a static int8 copy (OpenVINO, precision "int8" asked by name), calibrated at the letterbox size
        # it runs at. Not what "auto" picks: on trained segmenters it loses and adds instances near the threshold
        # (docs/performance.md), where the f32 copy gives PyTorch's answers.
        self.calibration = calibration if self.backend == "openvino" else None

    @property
    def variant(self) -> str:
        variant = f"{self.backend}:{self.resolved}"
        return variant + (f":{self.calibration}@{self.image_size}" if self._calibrated() else "")

    @property
    def resolved(self) -> str:
        """The precision this segmenter runs at ('auto' resolved for a segmenter on this CPU)."""
        return resolve_precision(self.precision, "segmenter")

    def _calibrated(self) -> bool:
        return self.calibration is not None and self.precision == "int8"

    @property
    def class_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.names.items()}

    def _load(self):
        path = resolve_file(self.role, self.ref)
        on_copy = self.backend == "openvino" and path.suffix == ".pt"
        calibration = (self.calibration, self.image_size) if self._calibrated() else None
        if on_copy and self.resolved == "int8" and calibration is None:
            # resolve_file has checked the digest a reference names: hashed again only when it names none
            shipped = shipped_int8(path, self.ref.sha256 or file_sha256(path))
            if shipped is not None:
                return self._warmed(shipped)
        if on_copy:
            cached = cached_openvino(path, self.resolved, calibration)
            if cached is not None:  # a warm start: neither Ultralytics nor PyTorch is imported
                return self._warmed(cached)
        try:
            with quiet_ultralytics():
                model = import_yolo()(str(path), task="segment")
        except Exception as exc:
            raise load_error(self.role, self.ref, exc) from exc
        if model.task != "segment":
            raise load_error(self.role, self.ref, f"it is a '{model.task}' model, not a segmentation model")
        if on_copy:
            return self._warmed(on_openvino(model, path, self.resolved, calibration))
        return model

    def _warmed(self, model):
        if isinstance(model, OpenVINOSegmenter):
            model.warm_up(self.image_size)
        return model

    def detect(
        self, photos: Sequence[Photo], conf: float, iou: float = 0.5, max_det: int = 50
    ) -> list[tuple[Detection, ...]]:
        """Instances per photo, best first. Each photo letterboxed as it would be alone (Ultralytics letterboxes a
        mixed-size batch differently, and a batch must give the answers of its photos one by one): the OpenVINO
        copy batches the photos whose letterboxes match, Ultralytics takes one photo per call."""
        model = self.model
        if isinstance(model, OpenVINOSegmenter):
            images = [photo.image for photo in photos]
            found = model.predict_many(images, conf, iou, self.image_size, max_det, self.agnostic)
        else:
            found = [self._ultralytics(model, photo, conf, iou, max_det) for photo in photos]
        return [_to_detections(instances, model.names, photo) for instances, photo in zip(found, photos)]

    def _ultralytics(self, model, photo: Photo, conf: float, iou: float, max_det: int) -> Instances:
        with _predict_lock(model), quiet_ultralytics():
            (result,) = model.predict(
                photo.image,
                conf=conf,
                iou=iou,
                imgsz=self.image_size,
                max_det=max_det,
                agnostic_nms=self.agnostic,
                retina_masks=False,  # masks at the letterbox size; _to_detections scales them one by one
                verbose=False,
            )
        return _from_results(result)


_predict_locks: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_predict_locks_guard = threading.Lock()


def _predict_lock(model) -> threading.Lock:
    """One lock per loaded model (an Ultralytics predictor keeps per-call state), shared by every Segmenter
    that uses it."""
    with _predict_locks_guard:
        return _predict_locks.setdefault(model, threading.Lock())


def _working_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    """One letterboxed mask -> a boolean mask at the working image's size (padding cropped, then resized).

    One at a time, at the working size: the peak is one float mask of the working image, never of the original.
    """
    from ultralytics.utils.ops import scale_masks

    return (scale_masks(mask[None, None].float(), shape)[0, 0] > 0.5).cpu().numpy()


def _from_results(result) -> Instances:
    """ultralytics Results -> Instances: the only place that knows its layout."""
    if result.masks is None or result.boxes is None or len(result.boxes) == 0:
        return Instances(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), (), lambda mask: mask)
    return Instances(
        result.boxes.xyxy.cpu().numpy(),
        result.boxes.conf.cpu().numpy(),
        result.boxes.cls.cpu().numpy().astype(int),
        result.masks.data,
        lambda mask: _working_mask(mask, result.orig_shape),
    )


def _to_detections(instances: Instances, names: dict, photo: Photo) -> tuple[Detection, ...]:
    """Instances in the working image -> our records, boxes in the original photo's pixels."""
    scale_x, scale_y = photo.scale
    boxes = np.asarray(instances.boxes, dtype=np.float64) * np.array([scale_x, scale_y, scale_x, scale_y])
    detections = []
    for box, score, cls, mask in zip(boxes, instances.scores, instances.classes, instances.masks):
        crop = MaskCrop.from_full(instances.to_image(mask), photo.size)
        if crop is not None:
            box = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
            detections.append(Detection(str(names[int(cls)]), int(cls), float(score), box, crop))
    return tuple(sorted(detections, key=lambda d: -d.score))
