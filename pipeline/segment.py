"""Damage masks: an Ultralytics segmentation model -> Detection records at the photo's resolution."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import load_image
from .models import load_error, load_once, resolve_file, resolve_precision
from .results import Detection
from .settings import ModelRef

logger = logging.getLogger(__name__)


class Segmenter:
    role = "segmenter"

    def __init__(
        self,
        ref: ModelRef,
        precision: str = "auto",
        backend: str = "auto",
        calibration: Path | None = None,
        image_size: int = 640,
    ) -> None:
        self.ref, self.precision = ref, precision
        self.backend = _choose_backend(backend, precision)
        # Photos for a static int8 copy (OpenVINO, precision int8); the letterbox size they are calibrated at.
        self.calibration = calibration if self.backend == "openvino" else None
        self.image_size = image_size

    @property
    def model(self):  # ultralytics.YOLO
        variant = f"{self.backend}:{resolve_precision(self.precision)}"
        if self._calibrated():
            variant += f":{self.calibration}@{self.image_size}"
        return load_once(self.role, self.ref, variant, self._load)

    def _calibrated(self) -> bool:
        return self.calibration is not None and resolve_precision(self.precision) == "int8"

    @property
    def class_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.names.items()}

    def _load(self):
        path = resolve_file(self.role, self.ref)
        try:
            from ultralytics import YOLO

            with _quiet_ultralytics():
                model = YOLO(str(path), task="segment")
        except Exception as exc:
            raise load_error(self.role, self.ref, exc) from exc
        if model.task != "segment":
            raise load_error(self.role, self.ref, f"it is a '{model.task}' model, not a segmentation model")
        if self.backend == "openvino" and path.suffix == ".pt":
            calibration = (self.calibration, self.image_size) if self._calibrated() else None
            return _on_openvino(model, path, resolve_precision(self.precision), calibration)
        return model

    def detect(
        self,
        images: Sequence[Image.Image],
        conf: float,
        iou: float = 0.5,
        image_size: int = 640,
        max_det: int = 50,
    ) -> list[tuple[Detection, ...]]:
        """Damage instances per image; masks come back at each image's own size.

        One photo per call: Ultralytics letterboxes a mixed-size batch differently from a single
        photo, and a batch must give exactly the answers of its photos one by one.
        """
        model = self.model
        found = []
        for image in images:
            with _predict_lock(model), _quiet_ultralytics():
                (result,) = model.predict(
                    image,
                    conf=conf,
                    iou=iou,
                    imgsz=image_size,
                    max_det=max_det,
                    retina_masks=False,  # masks at the letterbox size; _to_detections scales them one by one
                    verbose=False,
                )
            found.append(_to_detections(result))
        return found


_predict_locks: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_predict_locks_guard = threading.Lock()


def _predict_lock(model) -> threading.Lock:
    """One lock per loaded model (an Ultralytics predictor keeps per-call state), shared by every Segmenter
    that uses it: settings differing in anything but the segmenter still share its model."""
    with _predict_locks_guard:
        return _predict_locks.setdefault(model, threading.Lock())


def _choose_backend(backend: str, precision: str) -> str:
    """'openvino' or 'torch'. OpenVINO runs YOLOv8s-seg 2.4x faster than PyTorch on a 2-core x86 CPU
    at the same fp32 precision (103 vs 246 ms at 640x480), so 'auto' picks it when it is installed,
    there is no GPU, and precision="fp32" (the exact PyTorch reference) was not asked for.
    """
    if backend not in {"auto", "torch", "openvino"}:
        raise ValueError(f"seg_backend must be auto, torch or openvino, not {backend!r}")
    if backend != "auto":
        return backend
    import torch

    if precision == "fp32" or torch.cuda.is_available():
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


def _on_openvino(model, weights: Path, precision: str, calibration: tuple[Path, int] | None = None):
    """The same model on OpenVINO (static int8 when calibration photos are given), else the f32 OpenVINO copy,
    else the PyTorch one: each step that fails (odd layers, no NNCF, unreadable photos) logs a warning."""
    from ultralytics import YOLO

    try:
        with _quiet_ultralytics():
            exported = _openvino_copy(model, weights)
    except Exception as exc:
        logger.warning("OpenVINO export of %s failed (%s); using PyTorch", weights.name, exc)
        return model
    candidates = [exported]
    if calibration is not None:
        try:
            candidates.insert(0, _int8_copy(exported, *calibration))
        except Exception as exc:
            logger.warning("int8 calibration of %s failed (%s); using f32 OpenVINO", weights.name, exc)
    for folder in candidates:
        try:
            with _quiet_ultralytics():
                fast = YOLO(str(folder), task="segment")
                _pin_openvino_precision(fast, folder, precision)
            return fast
        except Exception as exc:
            logger.warning("OpenVINO copy %s of %s does not load (%s)", folder.name, weights.name, exc)
    logger.warning("no OpenVINO copy of %s loads; using PyTorch", weights.name)
    return model


def _openvino_copy(model, weights: Path) -> Path:
    """Export once to OpenVINO (dynamic shapes, so non-square photos keep their rectangular letterbox)
    into a cache folder keyed by the weights' hash; later starts load the cached copy. The export runs in a
    staging folder renamed when complete, so an interrupted export is never loaded."""
    from .accel import build_once, cache_dir

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    final = cache_dir() / digest / f"{weights.stem}_openvino_model"

    def export(staging: Path) -> Path:
        staged = staging / weights.name
        shutil.copyfile(weights, staged)
        with _quiet_ultralytics(redirect_prints=True):  # one-off, before any request is served
            return Path(model.__class__(str(staged), task="segment").export(format="openvino", dynamic=True))

    return build_once(final, export, "metadata.yaml")


def _int8_copy(exported: Path, photos: Path, image_size: int) -> Path:
    """NNCF static int8 copy of the export, calibrated on up to 32 of the photos (cached by their identity)."""
    from .accel import fingerprint, int8_segmenter

    files = calibration_files(photos)
    if not files:
        raise ValueError(f"no photos in {photos}")
    key = fingerprint(files, image_size)
    return int8_segmenter(exported, lambda: [_letterboxed(load_image(f), image_size) for f in files], key)


def calibration_files(folder: Path, limit: int = 32) -> list[Path]:
    """Up to ``limit`` photos spread evenly over a folder (sorted, recursive)."""
    from .archive import IMAGE_SUFFIXES  # here, not at the top: archive imports the cascade, which imports us

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:: max(1, len(files) // limit)][:limit]


def _letterboxed(image: Image.Image, image_size: int) -> np.ndarray:
    """The network input Ultralytics makes of a photo: rectangular letterbox, RGB, NCHW float32 in [0, 1]."""
    from ultralytics.data.augment import LetterBox

    boxed = LetterBox((image_size, image_size), auto=True, stride=32)(image=np.asarray(image)[:, :, ::-1])
    return np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def _pin_openvino_precision(model, exported: Path, precision: str) -> None:
    """OpenVINO defaults to bf16 on any CPU with AVX512-BF16, where it is emulated and 1.6x slower than
    f32 unless the CPU also has AMX: compile with the precision we chose instead.

    Ultralytics builds its OpenVINO backend on the first predict, so set it up with a blank photo
    (which also warms it up), then recompile the same network with the hint.
    """
    model.predict(np.zeros((64, 64, 3), dtype=np.uint8), verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    compile_model = getattr(backend, "compile_model", None)
    compiled = getattr(backend, "ov_compiled_model", None)
    if compile_model is None or compiled is None:  # another Ultralytics layout: keep its defaults
        return
    hint = "bf16" if precision == "bf16" else "f32"
    config = dict(compile_model.keywords.get("config") or {}) | {"INFERENCE_PRECISION_HINT": hint}
    compile_model.keywords["config"] = config
    xml = next(exported.glob("*.xml"))
    backend.ov_compiled_model = compile_model(compile_model.func.__self__.read_model(str(xml)))


@contextlib.contextmanager
def _quiet_ultralytics(redirect_prints: bool = False) -> Iterator[None]:
    """Ultralytics logs to stdout (export, backend set-up), which the CLI's --json owns: warnings only."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr) if redirect_prints else contextlib.nullcontext():
            yield
    finally:
        LOGGER.setLevel(level)


def _full_size_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    """One letterboxed mask -> a boolean mask at the photo's size (padding cropped, then resized).

    One at a time: ultralytics' retina masks upsample every instance at once in float32, which for a
    60 MP photo costs ~240 MB per instance; here the peak is one float mask, the result 1 byte/pixel.
    """
    from ultralytics.utils.ops import scale_masks

    return (scale_masks(mask[None, None].float(), shape)[0, 0] > 0.5).cpu().numpy()


def _to_detections(result) -> tuple[Detection, ...]:
    """ultralytics Results -> our records: the only place that knows its layout."""
    if result.masks is None or result.boxes is None or len(result.boxes) == 0:
        return ()
    masks = [_full_size_mask(m, result.orig_shape) for m in result.masks.data]
    boxes = result.boxes.xyxy.cpu().numpy()
    scores = result.boxes.conf.cpu().numpy()
    classes = result.boxes.cls.cpu().numpy().astype(int)
    names = result.names
    detections = [
        Detection(
            label=str(names[int(c)]),
            class_id=int(c),
            score=float(s),
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            mask=m,
        )
        for b, s, c, m in zip(boxes, scores, classes, masks)
        if m.any()
    ]
    return tuple(sorted(detections, key=lambda d: -d.score))
