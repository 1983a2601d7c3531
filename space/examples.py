"""The example photos under the photo tab: a folder (EXAMPLES_DIR), and a Hub dataset (EXAMPLES_REPO)."""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

from pipeline.formats import IMAGE_SUFFIXES, list_photos

from .config import MAX_EXAMPLES

logger = logging.getLogger("app")


def find_examples(folders: list[Path]) -> list[str]:
    """Photos in the given folders (recursively), sorted, at most MAX_EXAMPLES."""
    photos = [path for folder in folders if folder.is_dir() for path in list_photos(folder)]
    return [str(path) for path in photos[:MAX_EXAMPLES]]


@functools.cache
def fetch_examples_repo(repo_id: str) -> Path | None:
    """Download the photos of a Hub dataset (EXAMPLES_REPO) into a temp folder; None if unreachable."""
    if not repo_id:
        return None
    try:
        from huggingface_hub import snapshot_download

        patterns = [f"*{suffix}" for suffix in IMAGE_SUFFIXES]
        target = Path(tempfile.mkdtemp(prefix="car-damage-examples-"))
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, local_dir=target))
    except Exception as exc:
        logger.warning("EXAMPLES_REPO=%s: cannot fetch the example photos (%s); continuing without them", repo_id, exc)
        return None
