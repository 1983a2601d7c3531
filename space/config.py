"""What the Space reads from the environment, read once at import (names and defaults: README.md, env vars)."""

from __future__ import annotations

import os
from pathlib import Path

EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR") or Path(__file__).parent.parent / "examples")
EXAMPLES_REPO = os.environ.get("EXAMPLES_REPO", "").strip()
MAX_EXAMPLES = 24
# The free tier: 2 vCPUs, 16 GB. An upload over this never reaches the app; a zip is also held to a pixel budget
# (decoding is what costs) and a wall-clock budget, after which it returns what it has done.
MAX_FILE_SIZE = os.environ.get("MAX_FILE_SIZE", "100mb")
MAX_ZIP_MEGAPIXELS = int(os.environ.get("MAX_ZIP_MEGAPIXELS", "2000"))
JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "600"))
QUEUE_SIZE = int(os.environ.get("QUEUE_SIZE", "40"))  # waiting requests beyond this are turned away
ZIP_QUEUE_SIZE = int(os.environ.get("ZIP_QUEUE_SIZE", "8"))  # waiting zips: the rest of the queue is for photos
GALLERY_SIZE = 12
JOB_MAX_AGE = 600  # seconds a finished job folder is kept (gradio has copied the archive by then)
