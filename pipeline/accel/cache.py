"""The on-disk cache of converted models: one folder per copy, built once, never seen half-written."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

# Bump when a conversion changes: cache entries of older recipes are then ignored (and rebuilt).
# int8-v2: the segmenter's class-score branch stays f32. v3: classifier copies carry their pixel spec.
RECIPE = "v3"


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


def fingerprint(files: Iterable[Path], *extra: object) -> str:
    """Identity of model files or photos: names, sizes and modification times, plus ``extra`` and the library
    versions. Not a content hash: hashing a 350 MB ViT would add a second to every start."""
    from importlib.metadata import version  # not the packages themselves: importing NNCF takes seconds

    digest = hashlib.sha256(f"{RECIPE}|{version('openvino')}|{version('nncf')}|{extra}".encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"|{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def folder_files(folder: Path) -> list[Path]:
    """A model folder's files, less its documents: rewriting a model card must not rebuild the copies."""
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() != ".md"]


def file_digest(path: Path) -> str:
    """A content hash of one weights file (segmenters are small): the export folder's key."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_arrays(folder: Path, kind: str, extra: object, compute: Callable[[], dict[str, np.ndarray]]):
    """Arrays computed once from a model folder (and ``extra``), then read from the cache on later starts; computed
    afresh, uncached, when the cache cannot be used."""
    try:
        key = fingerprint(folder_files(folder), kind, extra)
    except Exception:  # no OpenVINO/NNCF to version the key with: compute every time
        return compute()
    path = cache_dir() / kind / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.stem}-{os.getpid()}.npz")
        np.savez(staging, **arrays)
        os.replace(staging, path)  # whole or not at all
    except OSError:
        pass  # a read-only cache costs the next start the computation, nothing else
    return arrays
