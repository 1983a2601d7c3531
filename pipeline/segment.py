"""Damage masks: an Ultralytics segmentation model -> Detection records at the photo's resolution."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .models import load_error, load_once, resolve_file, resolve_precision
from .results import Detection
from .settings import ModelRef

logger = logging.getLogger(__name__)


class Segmenter:
    role = "segmenter"

    def __init__(self, ref: ModelRef, precision: str = "auto", backend: str = "auto") -> None:
        self.ref, self.precision = ref, precision
        self.backend = _choose_backend(backend, precision)
        self._predict_lock = threading.Lock()  # an Ultralytics predictor keeps per-call state

    @property
    def model(self):  # ultralytics.YOLO
        return load_once(self.role, self.ref, f"{self.backend}:{resolve_precision(self.precision)}", self._load)

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
            return _on_openvino(model, path, resolve_precision(self.precision))
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
            with self._predict_lock, _quiet_ultralytics():
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


def _on_openvino(model, weights: Path, precision: str):
    """The same model on OpenVINO; the PyTorch one, with a warning, if the export fails (odd layers)."""
    from ultralytics import YOLO

    try:
        with _quiet_ultralytics():
            exported = _openvino_copy(model, weights)
            fast = YOLO(str(exported), task="segment")
            _pin_openvino_precision(fast, exported, precision)
    except Exception as exc:
        logger.warning("OpenVINO export of %s failed (%s); using PyTorch", weights.name, exc)
        return model
    return fast


def _openvino_copy(model, weights: Path) -> Path:
    """Export once to OpenVINO (dynamic shapes, so non-square photos keep their rectangular letterbox)
    into a cache folder keyed by the weights' hash; later starts load the cached copy."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("CAR_DAMAGE_CACHE", Path.home() / ".cache" / "car-damage")) / "openvino" / digest
    exported = cache / f"{weights.stem}_openvino_model"
    if (exported / "metadata.yaml").is_file():
        return exported
    cache.mkdir(parents=True, exist_ok=True)
    staged = cache / weights.name
    shutil.copyfile(weights, staged)
    with _quiet_ultralytics(redirect_prints=True):  # one-off, before any request is served
        result = Path(model.__class__(str(staged), task="segment").export(format="openvino", dynamic=True))
    staged.unlink(missing_ok=True)
    return result


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
