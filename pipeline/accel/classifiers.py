"""Image classifiers in their fast form: int8 linear layers on OpenVINO (cached), else PyTorch.

int8 = the linear layers' weights in int8 (NNCF, data-free) and their inputs quantised on the fly by OpenVINO
(dynamic quantisation: VNNI int8 matrix products); convolutions stay f32. Any failure falls back to PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .cache import build_once, cache_dir, fingerprint, folder_files
from .precision import for_inference, resolve_precision

logger = logging.getLogger(__name__)

# OpenVINO quantises activations on the fly in groups of this many input channels: 128 ran CLIP ViT-B/32
# 1.2x faster than 32 on a 2-core VNNI CPU with the same error.
DYNAMIC_QUANTIZATION_GROUP_SIZE = "128"

Head = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]  # (model, pixels) -> the one output we use


class _Head(torch.nn.Module):
    """pixels -> head(model, pixels): the single-input, single-output module OpenVINO converts."""

    def __init__(self, model: torch.nn.Module, head: Head) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.model, pixel_values)


def inference_forward(
    load: Callable[[], torch.nn.Module], head: Head, precision: str, folder: Path, example: torch.Tensor
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.dtype]:
    """pixels -> head(model, pixels) in the resolved precision, and the dtype the pixels must have.

    ``load`` gives the PyTorch model; with a cached OpenVINO copy it is never called (a faster start).
    """
    load = functools.cache(load)
    if resolve_precision(precision) == "int8" and not torch.cuda.is_available():
        try:
            key = fingerprint(folder_files(folder), head.__name__, tuple(example.shape))
            return int8_classifier(lambda: _Head(load().eval(), head), example, key), torch.float32
        except Exception as exc:  # not installed, an operator OpenVINO cannot convert, a read-only cache, ...
            logger.warning("OpenVINO int8 copy of %s failed (%s); using PyTorch", folder.name, one_line(exc))
    module, dtype = for_inference(load(), precision)
    return functools.partial(head, module), dtype


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
    """``module()`` converted to OpenVINO with int8 linear weights (cached under ``key``; the module is only
    built when the cache misses), compiled with dynamic quantisation of their inputs."""
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
    with quiet_nncf():
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

    config = {"INFERENCE_PRECISION_HINT": precision_hint} | thread_config()
    if dynamic_quantization:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE
    core = ov.Core()
    return core.compile_model(core.read_model(str(xml)), "CPU", config)


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
