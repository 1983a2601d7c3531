"""Ultralytics segmenters in their fast form: an OpenVINO copy (f32, the int8 copy shipped beside the weights, or
static int8 when calibration photos are given), exported once into the cache; each step that fails falls back to the
previous one with a warning."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..formats import list_photos
from .cache import build_once, cache_dir, file_digest, fingerprint
from .classifiers import one_line, quiet_nncf, thread_config
from .precision import cuda_available
from .yolo_runtime import OpenVINOSegmenter, letterboxed

logger = logging.getLogger(__name__)


def import_yolo():
    """Ultralytics' YOLO class, with its run-time ``pip install`` of missing packages turned off."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    from ultralytics import YOLO

    return YOLO


def choose_backend(backend: str, precision: str) -> str:
    """'openvino' or 'torch'. OpenVINO runs YOLOv8s-seg 2.4x faster than PyTorch on a 2-core x86 CPU at the same
    fp32 precision, so 'auto' picks it when it is installed, there is no GPU, and precision="fp32" (the exact
    PyTorch reference) was not asked for."""
    if backend != "auto":
        return backend
    if precision == "fp32" or cuda_available():
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


def cached_openvino(weights: Path, precision: str, calibration: tuple[Path, int] | None = None):
    """The OpenVINO copy ``on_openvino`` would pick, run without Ultralytics, when it is already in the cache
    (None otherwise: the caller builds it through Ultralytics)."""
    final = _openvino_folder(weights)
    if calibration is not None:
        files = calibration_files(calibration[0])
        final = _int8_folder(final, files, calibration[1]) if files else None
    if final is None or not (final / "metadata.yaml").is_file():
        return None
    try:
        return OpenVINOSegmenter.load(final, precision_hint(precision))
    except Exception as exc:
        logger.warning("cached OpenVINO copy %s does not load (%s)", final.name, one_line(exc))
        return None


SHIPPED_INT8_SUFFIX = "_int8_openvino_model"  # beside the weights: <stem>_int8_openvino_model/, Ultralytics' name
SHIPPED_INT8_RECORD = "int8.json"  # in it: the sha256 of the weights it was quantized from, how it was judged


def shipped_int8_folder(weights: Path) -> Path:
    return weights.parent / f"{weights.stem}{SHIPPED_INT8_SUFFIX}"


def shipped_int8(weights: Path, weights_sha256: str) -> OpenVINOSegmenter | None:
    """The int8 copy a release ships beside its weights (``train.release_int8``: its most sensitive layers kept
    f32, judged against fp32 on held-out photos), when it was made from these very weights (``weights_sha256``,
    the digest the caller has checked or computed); None otherwise (the caller then runs the f32 copy). Loaded
    without Ultralytics or PyTorch."""
    folder = shipped_int8_folder(weights)
    record = folder / SHIPPED_INT8_RECORD
    if not record.is_file():
        return None
    try:
        if json.loads(record.read_text(encoding="utf-8"))["weights_sha256"] != weights_sha256:
            logger.warning("%s was made from other weights than %s; using the f32 copy", folder.name, weights.name)
            return None
        return OpenVINOSegmenter.load(folder, "f32")  # int8 layers run int8; the rest as exported, in f32
    except Exception as exc:
        logger.warning("shipped int8 copy %s does not load (%s); using the f32 copy", folder.name, one_line(exc))
        return None


def precision_hint(precision: str) -> str:
    """OpenVINO's inference precision for a resolved precision: int8 copies carry their own int8, the rest is f32."""
    return "bf16" if precision == "bf16" else "f32"


def on_openvino(model, weights: Path, precision: str, calibration: tuple[Path, int] | None = None):
    """The same model on OpenVINO (static int8 when calibration photos are given), else the f32 OpenVINO copy,
    else the PyTorch one. A copy runs without Ultralytics (``OpenVINOSegmenter``) when it can."""
    try:
        with quiet_ultralytics():
            exported = _openvino_copy(model, weights)
    except Exception as exc:
        logger.warning("OpenVINO export of %s failed (%s); using PyTorch", weights.name, one_line(exc))
        return model
    candidates = [exported]
    if calibration is not None:
        try:
            candidates.insert(0, _int8_copy(exported, *calibration))
        except Exception as exc:
            logger.warning("int8 calibration of %s failed (%s); using f32 OpenVINO", weights.name, one_line(exc))
    for folder in candidates:
        try:
            runner = OpenVINOSegmenter.load(folder, precision_hint(precision))
            if runner is not None:
                return runner
            with quiet_ultralytics():
                fast = import_yolo()(str(folder), task="segment")
                _pin_openvino_precision(fast, folder, precision)
            return fast
        except Exception as exc:
            logger.warning("OpenVINO copy %s of %s does not load (%s)", folder.name, weights.name, one_line(exc))
    logger.warning("no OpenVINO copy of %s loads; using PyTorch", weights.name)
    return model


def _openvino_copy(model, weights: Path) -> Path:
    """Export once to OpenVINO (dynamic shapes, so non-square photos keep their rectangular letterbox) into a
    cache folder keyed by the weights' hash; later starts load the cached copy."""
    final = _openvino_folder(weights)

    def export(staging: Path) -> Path:
        staged = staging / weights.name
        shutil.copyfile(weights, staged)
        with quiet_ultralytics(redirect_prints=True):  # one-off, before any request is served
            return Path(model.__class__(str(staged), task="segment").export(format="openvino", dynamic=True))

    return build_once(final, export, "metadata.yaml")


def _openvino_folder(weights: Path) -> Path:
    return cache_dir() / file_digest(weights) / f"{weights.stem}_openvino_model"


def _int8_folder(exported: Path, files: list[Path], image_size: int) -> Path:
    stem = exported.name.removesuffix("_openvino_model")
    key = fingerprint(files, image_size)
    return exported.parent / f"{stem}_{key}_int8_openvino_model"  # Ultralytics knows the backend by the suffix


def _int8_copy(exported: Path, photos: Path, image_size: int) -> Path:
    """NNCF static int8 copy of the export, calibrated on up to 32 of the photos (cached by their identity)."""
    files = calibration_files(photos)
    if not files:
        raise ValueError(f"no photos in {photos.name}")
    final = _int8_folder(exported, files, image_size)

    def inputs() -> list[np.ndarray]:
        from ..decode import load_photo

        return [letterboxed(load_photo(f).image, image_size)[1] for f in files]

    return build_once(final, lambda staging: _quantize(exported, inputs, staging), "metadata.yaml")


def calibration_files(folder: Path, limit: int = 32) -> list[Path]:
    """Up to ``limit`` photos spread evenly over a folder (sorted, recursive)."""
    files = list_photos(folder)
    return files[:: max(1, len(files) // limit)][:limit]


def _quantize(exported: Path, inputs: Callable[[], Sequence[np.ndarray]], staging: Path) -> Path:
    """Measured against fp32 on trained YOLO11n-seg models and real photos, the settings that keep the answers
    closest: full min/max activation ranges (the default mean of per-photo ranges clipped the rare large
    activations that decide a detection), the slower, more accurate bias correction, and the head's decoding
    and class-score branch in f32 (``_head_scope``)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    xml = next(exported.glob("*.xml"))
    model = ov.Core().read_model(str(xml))
    photos = list(inputs())
    with quiet_nncf():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(photos),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(photos),
            fast_bias_correction=False,
            ignored_scope=_head_scope(model),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
            ),
        )
    out = staging / exported.name
    out.mkdir()
    ov.save_model(quantized, out / xml.name, compress_to_fp16=False)
    shutil.copyfile(exported / "metadata.yaml", out / "metadata.yaml")  # last: marks the copy complete
    return out


def _head_scope(model):
    """What stays f32: the detection head's decoding (sigmoid, DFL, box arithmetic), as in Ultralytics' own int8
    export, and its class-score branch (``cv3``): which instances cross the confidence threshold is decided
    there, and int8 there lost or added instances where the mask branch kept its shapes. The head is the
    module of the last Sigmoid."""
    import nncf

    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return None
    head = sigmoids[-1].split("/", 1)[0]
    kept = (f"{head}/", f"{head}.dfl", f"{head}.cv3.")
    names = [op.get_friendly_name() for op in ops if op.get_friendly_name().startswith(kept)]
    return nncf.IgnoredScope(names=sorted({*names, *sigmoids}), validate=False)


def _pin_openvino_precision(model, exported: Path, precision: str) -> None:
    """OpenVINO defaults to bf16 on any CPU with AVX512-BF16, where it is emulated and 1.6x slower than f32
    unless the CPU also has AMX: compile with the precision we chose instead.

    Ultralytics builds its OpenVINO backend on the first predict, so set it up with a blank photo (which also
    warms it up), then recompile the same network with the hint.
    """
    model.predict(np.zeros((64, 64, 3), dtype=np.uint8), verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    compile_model = getattr(backend, "compile_model", None)
    compiled = getattr(backend, "ov_compiled_model", None)
    if compile_model is None or compiled is None:  # another Ultralytics layout: keep its defaults
        return
    config = dict(compile_model.keywords.get("config") or {}) | {"INFERENCE_PRECISION_HINT": precision_hint(precision)}
    config |= thread_config()
    compile_model.keywords["config"] = config
    xml = next(exported.glob("*.xml"))
    backend.ov_compiled_model = compile_model(compile_model.func.__self__.read_model(str(xml)))


@contextlib.contextmanager
def quiet_ultralytics(redirect_prints: bool = False) -> Iterator[None]:
    """Ultralytics logs to stdout (export, backend set-up), which the CLI's --json owns: warnings only."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr) if redirect_prints else contextlib.nullcontext():
            yield
    finally:
        LOGGER.setLevel(level)
