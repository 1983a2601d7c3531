"""How a model runs fast: the precision for this CPU, OpenVINO / int8 copies, and the on-disk cache they live in.

Stage modules hand how to load their model (or its weights file) here and get back something to call. Cached copies
run on OpenVINO alone (``pixels``, ``yolo_runtime``): a warm start imports neither PyTorch, transformers nor
Ultralytics. Everything here is optional: any failure falls back to PyTorch or f32 OpenVINO, with a warning.
"""

from .cache import build_once, cache_dir, cached_arrays
from .classifiers import Loaders, image_forward
from .pixels import shared_pixels
from .precision import for_inference, resolve_precision
from .yolo import choose_backend, import_yolo, on_openvino, quiet_ultralytics

__all__ = [
    "Loaders",
    "build_once",
    "cache_dir",
    "cached_arrays",
    "choose_backend",
    "for_inference",
    "image_forward",
    "import_yolo",
    "on_openvino",
    "quiet_ultralytics",
    "resolve_precision",
    "shared_pixels",
]
