"""Image classifiers in their fast form: an OpenVINO copy (cached), else PyTorch.

The copy has int8 linear layers where int8 was chosen (NNCF, data-free; their inputs quantised on the fly by OpenVINO:
VNNI int8 matrix products; convolutions stay f32), and is f32 where 'auto' chose fp32 (the same answers as PyTorch).
Beside it, the pixel spec (``pixels.PixelSpec``) when it matches the model's processor: a warm start then imports
neither PyTorch nor transformers. An int8 copy that fails falls back to the f32 copy, any other failure to PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache import build_once, cache_dir, fingerprint, folder_files
from .pixels import PixelSpec, matches
from .precision import cuda_available, for_inference, resolve_precision

logger = logging.getLogger(__name__)

# OpenVINO quantises activations on the fly in groups of this many input channels: 128 ran CLIP ViT-B/32
# 1.2x faster than 32 on a 2-core VNNI CPU with the same error.
DYNAMIC_QUANTIZATION_GROUP_SIZE = "128"
# Every inference on an OpenVINO copy, one at a time in a process: two threads in one compiled model were seen to
# deadlock on their first inference (OpenVINO 2026.4.1, docs/scale.md), and the Space runs a photo and a zip in two
# threads. Each inference already takes every core, so little is lost.
OPENVINO_CALLS = threading.Lock()

Head = Callable[..., Any]  # (PyTorch model, pixels) -> the one output we use
ImagesToArray = Callable[[Sequence[Image.Image]], np.ndarray]


@dataclass(frozen=True)
class Loaders:
    """How to build a classifier from its folder; called only when the cache cannot serve it, and each at most
    once (the conversion, the pixels without a spec, a PyTorch fallback and CLIP's text side share them)."""

    model: Callable[[], Any]  # the PyTorch model
    processor: Callable[[], Any]  # transformers' processor: processor(images=..., return_tensors="pt")

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", functools.cache(self.model))
        object.__setattr__(self, "processor", functools.cache(self.processor))


def image_forward(folder: Path, head: Head, precision: str, loaders: Loaders) -> ImagesToArray:
    """images -> head(model, pixels) as float32 NumPy rows, in the resolved precision."""
    kind = openvino_kind(precision)
    # An int8 copy this CPU's OpenVINO will not compile falls back to the f32 copy, which needs no PyTorch at a
    # warm start, before PyTorch itself.
    attempts = {"int8": ("int8", "f32")}.get(kind, (kind,) if kind else ())
    for number, attempt in enumerate(attempts, 1):
        try:
            return _openvino_forward(folder, head, attempt, loaders)
        except Exception as exc:  # not installed, an operator OpenVINO cannot convert, a read-only cache, ...
            then = "the f32 copy" if number < len(attempts) else "PyTorch"
            logger.warning("OpenVINO %s copy of %s failed (%s); using %s", attempt, folder.name, one_line(exc), then)
    return _torch_forward(head, precision, loaders)


def openvino_kind(precision: str) -> str | None:
    """'int8', 'bf16' or 'f32' when the classifiers run on an OpenVINO copy, None for PyTorch (a GPU, or the exact
    fp32 reference asked for by name). bf16 is the f32 copy compiled at bf16 (AMX runs it natively)."""
    resolved = resolve_precision(precision)
    if cuda_available():
        return None
    if resolved == "int8":
        return "int8"
    if importlib.util.find_spec("openvino") is None:
        return None
    if resolved == "bf16":
        return "bf16"
    return "f32" if precision == "auto" and resolved == "fp32" else None


def _openvino_forward(folder: Path, head: Head, kind: str, loaders: Loaders) -> ImagesToArray:
    converted = "int8" if kind == "int8" else "f32"  # bf16 is a compile-time hint on the f32 copy
    key = fingerprint(folder_files(folder), head.__name__, converted)
    copy = build_once(
        cache_dir() / "classifiers" / key, lambda staging: _convert(head, converted, loaders, staging), "ok"
    )
    hint = "bf16" if kind == "bf16" else "f32"
    compiled = compile_model(copy / "model.xml", hint, dynamic_quantization=kind == "int8")
    if kind == "int8":
        first_inference(compiled)
    forward = CompiledForward(compiled)
    spec = PixelSpec.read(copy)
    pixels = spec if spec is not None else _library_pixels(loaders.processor())
    return lambda images: forward(pixels(images))


def first_inference(compiled) -> None:
    """One inference on a blank input, inside the caller's fallback. Why: OpenVINO compiles some int8 copies it
    then cannot run (with oneDNN limited to AVX2, the int8 classifiers' FullyConnectedCompressed node found no
    primitive at the first inference: docs/performance.md), and the error would otherwise come with every photo."""
    shape = [1 if dim.is_dynamic else dim.get_length() for dim in compiled.inputs[0].get_partial_shape()]
    with OPENVINO_CALLS:
        compiled.create_infer_request().infer({0: np.zeros(shape, dtype=np.float32)})


def _library_pixels(processor) -> ImagesToArray:
    return lambda images: processor(images=list(images), return_tensors="pt")["pixel_values"].float().numpy()


def _torch_forward(head: Head, precision: str, loaders: Loaders) -> ImagesToArray:
    import torch

    module, dtype = for_inference(loaders.model(), precision)
    processor = loaders.processor()

    def forward(images: Sequence[Image.Image]) -> np.ndarray:
        with torch.inference_mode():
            pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(dtype)
            return head(module, pixels).float().numpy()

    return forward


class CompiledForward:
    """Pixels -> the model's output, NumPy in and out, on a compiled OpenVINO model. Thread-safe: one call at a
    time (``OPENVINO_CALLS``)."""

    def __init__(self, compiled) -> None:  # openvino.CompiledModel
        self.compiled = compiled

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with OPENVINO_CALLS:
            request = self.compiled.create_infer_request()
            request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)}, share_inputs=True)
            return request.get_output_tensor(0).data.copy()


def _convert(head: Head, kind: str, loaders: Loaders, staging: Path) -> Path:
    """The model's head converted to OpenVINO (int8 linear weights for kind 'int8'), with the pixel spec when it
    matches the processor."""
    import openvino as ov
    import torch

    processor = loaders.processor()
    example = processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")["pixel_values"]
    module = _head_module(loaders.model().eval(), head)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notes (shape checks become constants: our shapes are fixed)
        # Traced here without torch's check (a second trace and run to compare): OpenVINO's own trace of the module
        # checks it, seconds of every first start; the same graph either way (522 ops, outputs equal).
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        model = ov.convert_model(traced, example_input=example, input=[(-1, *example.shape[1:])])
    if kind == "int8":
        model = _int8_linear_weights(model)
    out = staging / "model"
    out.mkdir()
    ov.save_model(model, out / "model.xml", compress_to_fp16=False)
    spec = PixelSpec.from_processor(getattr(processor, "image_processor", processor).to_dict())
    if spec is not None and matches(spec, processor):
        spec.write(out)
    (out / "ok").touch()
    return out


def _int8_linear_weights(model):
    import nncf

    # Linear layers only: int8 convolution weights moved a trained EfficientNet's probabilities by up to 0.10
    # (0.009 with its convolutions left in f32), and torch's dynamic quantisation also keeps them in fp32.
    convolutions = nncf.IgnoredScope(types=["Convolution", "GroupConvolution"], validate=False)
    with quiet_nncf():
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=convolutions)


def _head_module(model, head: Head):
    """pixels -> head(model, pixels): the single-input, single-output module OpenVINO converts."""
    import torch

    class HeadModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return head(self.model, pixel_values)

    return HeadModule()


def compile_model(
    xml: Path,
    precision_hint: str = "f32",
    dynamic_quantization: bool = False,
    performance_hint: str | None = None,
    input_shape: tuple[int, ...] | None = None,
):
    """An OpenVINO CPU model at an explicit precision: OpenVINO would pick bf16 on any CPU with AVX512-BF16,
    where it is emulated and slower than f32 unless the CPU also has AMX. ``input_shape``: compiled for that one
    shape of its first input (no per-call shape work, which a dynamic copy does each time the shape changes)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision_hint} | thread_config()
    if dynamic_quantization:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE
    if performance_hint:
        config["PERFORMANCE_HINT"] = performance_hint
    core = ov.Core()
    model = core.read_model(str(xml))
    if input_shape is not None:
        model.reshape({model.inputs[0].get_any_name(): list(input_shape)})
    cache = compiled_cache()
    try:
        return core.compile_model(model, "CPU", config | cache)
    except RuntimeError as exc:
        if not cache:
            raise
        # A compiled blob it cannot load again (int8 blobs were, in OpenVINO 2022.3), or a full disk: compile
        # afresh rather than leave the copy for PyTorch, which would cost the start seconds of imports.
        logger.warning("OpenVINO's compiled-model cache failed (%s); compiling %s without it", one_line(exc), xml.name)
        return core.compile_model(model, "CPU", config)


def compiled_cache() -> dict[str, str]:
    """OpenVINO's own cache of compiled models: a warm start loads each compiled blob instead of compiling again
    (~1 s of a four-model cold start); none where the cache folder cannot be written."""
    folder = cache_dir() / "compiled"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return {}
    return {"CACHE_DIR": str(folder)} if os.access(folder, os.W_OK) else {}


def thread_config() -> dict[str, str]:
    """OpenVINO's threads when a process has only part of the machine (a Ray actor sets CAR_DAMAGE_THREADS):
    by default it takes every core, and actors side by side would fight over them."""
    threads = os.environ.get("CAR_DAMAGE_THREADS", "").strip()
    return {"INFERENCE_NUM_THREADS": threads} if threads else {}


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs every layer it leaves alone and draws progress bars on stdout, which the CLI's --json owns."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
