"""Resolve model references (Hub id + revision, or local path) and load each model once, lazily.

Nothing here runs at import time: the first call for a given reference downloads (if needed) and
loads; later calls, from any thread, get the same object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from .errors import ModelLoadError
from .settings import ENV_VARS, ModelRef

T = TypeVar("T")

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


def inference_dtype(precision: str) -> torch.dtype:
    """bf16 where the CPU computes it natively (AVX512-BF16/AMX: ~3x faster for ViTs), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if torch.cuda.is_available():
        return torch.float16
    supported = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    return torch.bfloat16 if supported else torch.float32
