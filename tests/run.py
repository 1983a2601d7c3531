"""Run the real command line (`python -m pipeline ...`) in a child process, from the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cli_json(*args: str | Path, timeout: float = 300) -> dict[str, Any]:
    """`python -m pipeline ARGS --json`: assert it exits 0 and return its JSON."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
