"""Car damage detection: is there a car, is it damaged, and where (instance masks).

Public names: ``analyze``, ``analyze_batch``, ``process_zip``, ``annotate``, ``Settings``, ``Analysis``.
Importing this package loads no model and downloads nothing.
"""

from .analyze import analyze, analyze_batch, load_models
from .archive import BatchResult, ZipLimits, process_zip
from .draw import annotate
from .errors import (
    ImageTooLargeError,
    InputError,
    ModelLoadError,
    NotAnImageError,
    PipelineError,
    UnsafeArchiveError,
)
from .results import Analysis, Check, Detection
from .settings import ModelRef, Settings, load_profile

__all__ = [
    "Analysis",
    "BatchResult",
    "Check",
    "Detection",
    "ImageTooLargeError",
    "InputError",
    "ModelLoadError",
    "ModelRef",
    "NotAnImageError",
    "PipelineError",
    "Settings",
    "UnsafeArchiveError",
    "ZipLimits",
    "analyze",
    "analyze_batch",
    "annotate",
    "load_models",
    "load_profile",
    "process_zip",
]
