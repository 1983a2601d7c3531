"""OpenVINO + NNCF: int8 copies of the models, built once into a cache folder and loaded from it later.

- Classifiers: the linear layers' weights in int8, their inputs quantised on the fly by OpenVINO (dynamic
  quantisation: VNNI int8 matrix products). Data-free, like torch's dynamic quantisation, and closer to fp32.
- Segmenter: static int8 (NNCF post-training quantisation), calibrated on photos the operator gives.

Everything here is optional: callers catch any failure and fall back to PyTorch or f32 OpenVINO.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

# Bump when a conversion below changes: cache entries of older recipes are then ignored (and rebuilt).
RECIPE = "int8-v1"
# OpenVINO quantises activations on the fly in groups of this many input channels: 128 ran CLIP ViT-B/32
# 1.2x faster than 32 on a 2-core VNNI CPU with the same error (relative 0.014 vs fp32).
DYNAMIC_QUANTIZATION_GROUP_SIZE = "128"


def cache_dir() -> Path:
    return Path(os.environ.get("CAR_DAMAGE_CACHE", Path.home() / ".cache" / "car-damage")) / "openvino"


def build_once(final: Path, build: Callable[[Path], Path], ready: str) -> Path:
    """``final`` when it holds ``ready``; else ``build(staging folder)`` and rename its result to ``final``.

    Readers never see a half-written folder (a build killed midway leaves only a hidden staging folder, removed
    here), and when two processes build at once the first rename wins and the other's copy is dropped.
    """
    if (final / ready).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        built = build(staging)
        if final.exists() and not (final / ready).is_file():
            shutil.rmtree(final, ignore_errors=True)  # left by an interrupted build of an older version
        try:
            os.rename(built, final)
        except OSError:
            if not (final / ready).is_file():  # not just another process winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs every layer it leaves alone and draws progress bars on stdout, which the CLI's --json owns."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)


def fingerprint(files: Iterable[Path], *extra: object) -> str:
    """Identity of model files or photos: names, sizes and modification times, plus ``extra`` and the library
    versions. Not a content hash: hashing a 350 MB ViT would add a second to every start."""
    import nncf
    import openvino

    digest = hashlib.sha256(f"{RECIPE}|{openvino.__version__}|{nncf.__version__}|{extra}".encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"|{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


class CompiledForward:
    """Pixels (torch) -> the model's output (torch) on a compiled OpenVINO model. Thread-safe: each call
    gets its own infer request (the compiled model is shared)."""

    def __init__(self, compiled) -> None:  # openvino.CompiledModel
        self.compiled = compiled

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        request = self.compiled.create_infer_request()
        request.infer({0: pixels.float().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


def int8_classifier(module: Callable[[], torch.nn.Module], example: torch.Tensor, key: str) -> CompiledForward:
    """``module()`` (pixels -> output) converted to OpenVINO with int8 linear weights (cached under ``key``; the
    module is only built when the cache misses), compiled with dynamic quantisation of their inputs."""
    folder = build_once(cache_dir() / "classifiers" / key, lambda staging: _convert(module(), example, staging), "ok")
    return CompiledForward(compile_model(folder / "model.xml", dynamic_quantization=True))


def _convert(module: torch.nn.Module, example: torch.Tensor, staging: Path) -> Path:
    import nncf
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notes (shape checks become constants: our shapes are fixed)
        model = ov.convert_model(module.eval(), example_input=example, input=[(-1, *example.shape[1:])])
    # Linear layers only: int8 convolution weights moved a trained EfficientNet's probabilities by up to 0.10
    # (0.009 with its convolutions left in f32), and torch's dynamic quantisation also keeps them in fp32.
    convolutions = nncf.IgnoredScope(types=["Convolution", "GroupConvolution"], validate=False)
    with _quiet_nncf():
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=convolutions)
    out = staging / "model"
    out.mkdir()
    ov.save_model(model, out / "model.xml", compress_to_fp16=False)
    (out / "ok").touch()
    return out


def compile_model(xml: Path, precision_hint: str = "f32", dynamic_quantization: bool = False):
    """An OpenVINO CPU model at an explicit precision: OpenVINO would pick bf16 on any CPU with AVX512-BF16,
    where it is emulated and slower than f32 unless the CPU also has AMX."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision_hint}
    if dynamic_quantization:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE
    core = ov.Core()
    return core.compile_model(core.read_model(str(xml)), "CPU", config)


def int8_segmenter(exported: Path, inputs: Callable[[], Sequence[np.ndarray]], key: str) -> Path:
    """A static int8 copy of an Ultralytics OpenVINO export (folder), calibrated on ``inputs()`` (letterboxed,
    NCHW float32 in [0, 1]; only called when the copy is not cached yet); cached beside the export under ``key``."""
    stem = exported.name.removesuffix("_openvino_model")
    final = exported.parent / f"{stem}_{key}_int8_openvino_model"  # Ultralytics knows the backend by the suffix
    return build_once(final, lambda staging: _quantize_segmenter(exported, inputs, staging), "metadata.yaml")


def _quantize_segmenter(exported: Path, inputs: Callable[[], Sequence[np.ndarray]], staging: Path) -> Path:
    """Measured against fp32 on a trained YOLO11n-seg and real photos, the settings that keep masks closest:
    full min/max activation ranges (the default mean of per-photo ranges clipped the rare large activations
    that decide a detection), the slower, more accurate bias correction, and the head's box decoding in f32.
    Quantising only the backbone kept masks closer but gave back most of the speed (1.3x vs 3.1x)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    xml = next(exported.glob("*.xml"))
    model = ov.Core().read_model(str(xml))
    photos = list(inputs())
    with _quiet_nncf():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(photos),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(photos),
            fast_bias_correction=False,
            ignored_scope=_head_decoding(model),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
            ),
        )
    out = staging / exported.name
    out.mkdir()
    ov.save_model(quantized, out / xml.name, compress_to_fp16=False)
    shutil.copyfile(exported / "metadata.yaml", out / "metadata.yaml")  # last: marks the copy complete
    return out


def _head_decoding(model):
    """The detection head's decoding (sigmoid, DFL, box arithmetic) stays f32, as in Ultralytics' own int8
    export: the head is the module of the last Sigmoid."""
    import nncf

    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return None
    head = sigmoids[-1].split("/", 1)[0]
    names = [op.get_friendly_name() for op in ops if op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl"))]
    return nncf.IgnoredScope(names=sorted({*names, *sigmoids}), validate=False)
