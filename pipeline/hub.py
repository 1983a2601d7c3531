"""Resolve model references (Hub id + revision, or local path) and load each model once, lazily.

Nothing here runs at import time: the first call for a given reference downloads (if needed) and loads; later
calls, from any thread, get the same object. A weights file whose reference carries a sha256 is checked before
it is loaded (Ultralytics loads ``.pt`` files with pickle, which runs code).

    python -m pipeline.hub pin     # fill in the commit and sha256 of the default segmenter (needs the Hub)
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import IntegrityError, ModelLoadError
from .settings import DEFAULT_SEG_MODEL, ENV_VARS, ModelRef

T = TypeVar("T")

# The weights file of a transformers model folder: what a folder reference's sha256 is checked against.
FOLDER_WEIGHTS = "model.safetensors"

_cache: dict[tuple[str, str, str], object] = {}
_key_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def load_once(role: str, ref: ModelRef, variant: str, loader: Callable[[], T]) -> T:
    """The cached model for (role, ref, variant), loaded under a per-key lock (other keys load in parallel)."""
    key = (role, str(ref), variant)
    if key in _cache:
        return _cache[key]  # type: ignore[return-value]
    with _locks_guard:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _cache:
            _cache[key] = loader()
    return _cache[key]  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget loaded models (tests; switching profiles in a long-lived process)."""
    with _locks_guard:
        _cache.clear()
        _key_locks.clear()


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
        if ref.sha256:  # a folder's digest is its weights file's
            check_sha256(role, ref, path / FOLDER_WEIGHTS)
        return path
    if _looks_like_path(ref.id):
        raise load_error(role, ref, "no such file or folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref.id, revision=ref.revision))
    except Exception as exc:  # offline and not cached, unknown repo, bad revision, ...
        raise load_error(role, ref, _hub_cause(exc)) from exc


def resolve_file(role: str, ref: ModelRef) -> Path:
    """A single weights file (segmenters): the local path, or ``filename`` inside a Hub repo; its sha256
    checked when the reference names one."""
    if ref.is_local:
        path = Path(ref.id)
        if not path.is_file():
            raise load_error(role, ref, f"{path} is a folder, not a .pt or .onnx file")
    elif _looks_like_path(ref.id) or not ref.filename:
        cause = "no such file" if _looks_like_path(ref.id) else "a Hub repo needs a file, e.g. owner/repo:best.pt"
        raise load_error(role, ref, cause)
    else:
        path = _download(role, ref)
    if ref.sha256:
        check_sha256(role, ref, path)
    return path


def check_sha256(role: str, ref: ModelRef, path: Path) -> None:
    """Weights whose digest is not the reference's are never loaded (.pt files are pickles: they run code)."""
    if not path.is_file():
        raise load_error(role, ref, f"no {path.name} to check its sha256 against")
    digest = file_sha256(path)
    if digest != ref.sha256:
        cause = f"its sha256 is {digest}, not the {ref.sha256} it must have"
        raise IntegrityError(role, str(ref), ENV_VARS[role], cause)


def _download(role: str, ref: ModelRef) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref.id, ref.filename, revision=ref.revision))
    except Exception as exc:
        raise load_error(role, ref, _hub_cause(exc)) from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


class Stage:
    """A stage of the cascade and its model: ``model`` loads it once per (role, reference, variant), lazily, from
    any thread; subclasses say how (``_load``) and which variant (precision, backend, sizes) they run."""

    role = ""

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref

    @property
    def variant(self) -> str:
        return ""

    @property
    def model(self):
        return load_once(self.role, self.ref, self.variant, self._load)

    def _load(self) -> object:
        raise NotImplementedError


# ---------------------------------------------------------------- pinning the default segmenter


def pinned(ref: ModelRef) -> ModelRef:
    """The reference at its current commit with the sha256 of its file (needs the Hub)."""
    from huggingface_hub import HfApi

    commit = HfApi().model_info(ref.id, revision=ref.revision).sha
    unpinned = ModelRef(ref.id, commit, ref.filename)
    return ModelRef(ref.id, commit, ref.filename, file_sha256(_download("segmenter", unpinned)))


def pin_default_segmenter(root: Path) -> ModelRef:
    """Write the pinned default segmenter into settings.py and README.md's ``preload_from_hub``, which a test
    keeps in agreement."""
    ref = pinned(ModelRef.parse(DEFAULT_SEG_MODEL))
    settings = root / "pipeline" / "settings.py"
    text = settings.read_text(encoding="utf-8")
    settings.write_text(re.sub(r'DEFAULT_SEG_MODEL = ".*"', f'DEFAULT_SEG_MODEL = "{ref}"', text), encoding="utf-8")
    readme = root / "README.md"
    line = f"  - {ref.id} {ref.filename} {ref.revision}"
    text = re.sub(rf"^  - {re.escape(ref.id)} .*$", line, readme.read_text(encoding="utf-8"), flags=re.M)
    readme.write_text(text, encoding="utf-8")
    return ref


if __name__ == "__main__":
    if sys.argv[1:] != ["pin"]:
        sys.exit("usage: python -m pipeline.hub pin")
    print(pin_default_segmenter(Path(__file__).resolve().parents[1]))
