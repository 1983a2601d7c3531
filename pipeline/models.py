"""Resolve model references (Hub id + revision, or local path) and load each model once, lazily.

Nothing here runs at import time: the first call for a given reference downloads (if needed) and
loads; later calls, from any thread, get the same object.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from .errors import ModelLoadError
from .settings import ENV_VARS, ModelRef

T = TypeVar("T")
logger = logging.getLogger(__name__)

_cache: dict[tuple[str, str, str], object] = {}
_key_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def load_once(role: str, ref: ModelRef, precision: str, loader: Callable[[], T]) -> T:
    """Return the cached model for (role, ref, precision), loading it under a per-key lock."""
    key = (role, str(ref), precision)
    if key in _cache:
        return _cache[key]  # type: ignore[return-value]
    with _locks_guard:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:  # one loader per key; other keys load in parallel
        if key not in _cache:
            _cache[key] = loader()
    return _cache[key]  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget loaded models (tests; switching profiles in a long-lived process)."""
    with _locks_guard:
        _cache.clear()
        _key_locks.clear()


def is_loaded(role: str, ref: ModelRef, precision: str) -> bool:
    return (role, str(ref), precision) in _cache


def load_error(role: str, ref: ModelRef, cause: BaseException | str) -> ModelLoadError:
    """The one error users see for any model that cannot be had: names model, env var and cause."""
    text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    text = " ".join(str(text).split())  # one line
    if len(text) > 300:
        text = text[:297] + "..."
    return ModelLoadError(role, str(ref), ENV_VARS[role], text)


def resolve_folder(role: str, ref: ModelRef) -> Path:
    """A transformers model folder: the local path, or a Hub snapshot (cached; offline-aware)."""
    if ref.is_local:
        path = Path(ref.id)
        if not (path / "config.json").is_file():
            raise load_error(role, ref, f"{path} is not a transformers model folder (no config.json)")
        return path
    if _looks_like_path(ref.id):
        raise load_error(role, ref, "no such file or folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref.id, revision=ref.revision))
    except Exception as exc:  # offline and not cached, unknown repo, bad revision, ...
        raise load_error(role, ref, _hub_cause(exc)) from exc


def resolve_file(role: str, ref: ModelRef) -> Path:
    """A single weights file (segmenter): the local path, or ``filename`` inside a Hub repo."""
    if ref.is_local:
        path = Path(ref.id)
        if not path.is_file():
            raise load_error(role, ref, f"{path} is a folder, not a .pt or .onnx file")
        return path
    if _looks_like_path(ref.id) or not ref.filename:
        cause = "no such file" if _looks_like_path(ref.id) else "a Hub repo needs a file, e.g. owner/repo:best.pt"
        raise load_error(role, ref, cause)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref.id, ref.filename, revision=ref.revision))
    except Exception as exc:
        raise load_error(role, ref, _hub_cause(exc)) from exc


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or text.endswith((".pt", ".onnx"))


def _hub_cause(exc: BaseException) -> str:
    name = type(exc).__name__
    if "LocalEntryNotFound" in name or "Offline" in name:
        return "not in the local Hugging Face cache and the Hub is unreachable (offline?)"
    if "RepositoryNotFound" in name:
        return "no such repository on the Hub (or it is private: set HF_TOKEN)"
    if "RevisionNotFound" in name:
        return "no such revision in that repository"
    if "EntryNotFound" in name:
        return "no such file in that repository"
    return f"{name}: {exc}"


PRECISIONS = ("auto", "fp32", "bf16", "int8")


def _cpu_supports(feature: str) -> bool:
    return bool(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)())


def resolve_precision(precision: str) -> str:
    """What 'auto' means on this machine, measured on 2-core x86 CPUs (see README, Performance):

    - AMX (bf16 matrix tiles): bf16.
    - VNNI without AMX: int8 linear layers in the classifiers (OpenVINO, else torch's dynamic quantisation);
      bf16 there is emulated and *slower* than fp32 (1.7x slower, torch and OpenVINO alike).
    - otherwise: fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if _cpu_supports("amx_tile"):
        return "bf16"
    if _cpu_supports("vnni"):
        return "int8"
    return "fp32"


def for_inference(model: torch.nn.Module, precision: str) -> tuple[torch.nn.Module, torch.dtype]:
    """The model in the resolved precision, and the dtype its inputs must have."""
    resolved = resolve_precision(precision)
    model = model.eval()
    if resolved == "bf16":
        return model.to(torch.bfloat16), torch.bfloat16
    if resolved == "int8":
        with warnings.catch_warnings():  # torch announces a move of these kernels to torchao; they work
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return quantized, torch.float32
    return model, torch.float32


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

    int8: OpenVINO with int8 linear weights and their inputs quantised on the fly, converted once and cached
    (on a 2-core VNNI CPU 1.4x faster than torch's dynamic quantisation for ViT-B/16 and 2.8x for CLIP
    ViT-B/32, with half its error); torch's dynamic quantisation if OpenVINO or NNCF is missing or fails.
    ``load`` gives the PyTorch model; with a cached OpenVINO copy it is never called (a faster start).
    """
    load = functools.cache(load)
    if resolve_precision(precision) == "int8" and not torch.cuda.is_available():
        try:
            from .accel import fingerprint, folder_files, int8_classifier

            key = fingerprint(folder_files(folder), head.__name__, tuple(example.shape))
            return int8_classifier(lambda: _Head(load().eval(), head), example, key), torch.float32
        except Exception as exc:  # not installed, an operator OpenVINO cannot convert, a read-only cache, ...
            logger.warning("OpenVINO int8 copy of %s failed (%s); using PyTorch", folder.name, _one_line(exc))
    module, dtype = for_inference(load(), precision)
    return functools.partial(head, module), dtype


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
