"""The models: loaded once, in a background thread, and what the page says about them (banner, table)."""

from __future__ import annotations

import logging
import threading

import pipeline
from pipeline.settings import ENV_VARS

from .text import public_text

logger = logging.getLogger("app")


class ModelStatus:
    """Loads the models once, in a background thread; the page polls ``done`` instead of waiting for it."""

    def __init__(self, settings: pipeline.Settings) -> None:
        self.settings = settings
        self.problems: dict[str, pipeline.ModelLoadError | None] | None = None
        self.error = ""  # an unexpected failure of the loader itself
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> ModelStatus:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="load-models", daemon=True)
                self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether loading has finished within ``timeout`` seconds (tests and the command line)."""
        self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        return self.done

    def _load(self) -> None:
        try:
            self.problems = pipeline.load_models(self.settings)
        except Exception as exc:  # the banner must still appear, whatever went wrong
            logger.exception("loading the models failed")
            self.error = f"Loading the models failed: {public_text(str(exc))}"
        for problem in (self.problems or {}).values():
            if problem is not None:
                logger.error("%s", problem)  # the server's log keeps the paths


def banner_markdown(status: ModelStatus) -> str:
    """A warning naming each model that cannot be loaded, why, and the env var to set; '' when all loaded."""
    lines = [f"- {public_text(str(problem))}" for problem in (status.problems or {}).values() if problem is not None]
    if status.error:
        lines.append(f"- {status.error}")
    if not lines:
        return ""
    return "### ⚠️ Some models could not be loaded\n" + "\n".join(lines)


def models_markdown(status: ModelStatus) -> str:
    """A table of the models in use: id (a local model by its name only), revision, and whether it loaded."""
    rows = ["| role | model | revision | env var | status |", "|---|---|---|---|---|"]
    for role, ref in status.settings.models.refs().items():
        revision = ref.revision or ("local" if ref.looks_local else "default branch")
        model = ref.public_name if ref.looks_local else (f"{ref.id} (file {ref.filename})" if ref.filename else ref.id)
        rows.append(f"| {role} | `{model}` | {revision} | `{ENV_VARS[role]}` | {_load_state(status, role)} |")
    return "\n".join(rows)


def _load_state(status: ModelStatus, role: str) -> str:
    if not status.done:
        return "⏳ loading"
    if status.error or status.problems is None:
        return "❌ not loaded"
    return "❌ failed" if status.problems.get(role) else "✅ loaded"
