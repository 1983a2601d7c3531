"""Per-request folders: one private temp folder per zip request, swept once gradio has its copy."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import JOB_MAX_AGE


class JobFolders:
    """One private temp folder per zip request, under a root only this process uses (never served as-is),
    created with the first job. Gradio copies the returned archive into its own cache, so a finished folder is
    deleted by the next request once it is older than ``max_age``; a failed request deletes its folder at once."""

    def __init__(self, max_age: float = JOB_MAX_AGE) -> None:
        self.max_age = max_age
        self._root: Path | None = None
        self._active: set[Path] = set()
        self._lock = threading.RLock()  # sweep() holds it while it asks for the root

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="car-damage-jobs-"))
                atexit.register(shutil.rmtree, self._root, ignore_errors=True)
            return self._root

    @contextmanager
    def job(self) -> Iterator[Path]:
        self.sweep()
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=self.root))
        with self._lock:
            self._active.add(folder)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._active.discard(folder)

    def sweep(self, max_age: float | None = None) -> None:
        """Delete finished job folders older than ``max_age`` seconds."""
        limit = self.max_age if max_age is None else max_age
        now = time.time()
        with self._lock:
            stale = [p for p in self.root.iterdir() if p not in self._active and now - p.stat().st_mtime >= limit]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
