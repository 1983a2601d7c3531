"""Car damage detection: is there a car, is it damaged, how badly, where (instance masks) and on which part.

Public names: ``analyze``, ``analyze_batch``, ``analyze_vehicle``, ``process_zip``, ``annotate``, ``Settings``,
``Analysis``, ``VehicleResult``.
Importing this package loads no model and downloads nothing.

Architecture (one module per stage; the data goes one way):

    photo -> decode -> car -> damage (+ grade) -> segment -> parts -> draw -> results
    zips, folders: zipsafe (read entries safely) -> batch (the loop, one row per entry) -> report (files)
                   vehicles (which vehicle each entry is, and a vehicle's row from its photos' rows)

- ``settings``: ModelSet (what is loaded once), Thresholds (per request), Limits (what a photo may be); profiles.
- ``hub``: model references resolved and loaded once (``Stage.model``), sha256 checks, clear load errors.
- ``accel``: how a model runs fast (precision, OpenVINO / int8 copies, the on-disk cache).
- ``formats``: what a photo is; ``decode``: bytes -> ``Photo`` at the working resolution.
- ``car``, ``damage``, ``segment``, ``parts``: the stages (``classify`` is the classifiers' shared engine).
- ``draw``: the overlay; ``results``: the typed records; ``analyze``: the cascade, the only module that knows
  the order of the stages.
- ``zipsafe``, ``batch``, ``report``, ``sinks``: zips and folders in, rows and files out.
- ``vehicles``: one vehicle, many photos: the grouping (folders, or the input's vehicles.csv) and the vehicle's
  answer from its photos' rows (any engine's: the Ray engine makes them after its run).
- ``testing``: tiny model builders and answer comparisons for tests and benchmarks.
- ``__main__``: the command line.

Imports run one way: ``app``, ``train``, ``bench`` and ``tests`` import ``pipeline``; ``pipeline`` imports none of
them (nor gradio). Stage modules know ``results``, ``hub``, ``accel`` and ``decode``, not each other (``parts``
uses the segmenter it is given). To add a stage: a module with a ``hub.Stage`` subclass (its ``role`` in
``settings.ENV_VARS``, its reference in ``ModelSet``), a field in ``analyze.Stages``, and its place in
``analyze.analyze_photos``; its answer goes into ``results.Analysis`` and from there into every output.
"""

from .analyze import analyze, analyze_batch, load_models
from .batch import MAX_VEHICLE_PHOTOS, BatchResult, JobControl, analyze_vehicle, process_zip
from .decode import Photo, load_photo
from .draw import annotate
from .errors import (
    CorruptPhotoError,
    ImageShapeError,
    ImageTooLargeError,
    InputError,
    IntegrityError,
    ModelLoadError,
    NotAnImageError,
    PipelineError,
    UnsafeArchiveError,
    VehiclesCsvError,
)
from .results import (
    Analysis,
    Check,
    DamagedPart,
    Detection,
    Grade,
    MaskCrop,
    ReportRow,
    Status,
    Summary,
    VehiclePhoto,
    VehicleResult,
    VehicleRow,
)
from .settings import Limits, ModelRef, ModelSet, Settings, Thresholds, load_profile
from .zipsafe import ZipLimits

__all__ = [
    "MAX_VEHICLE_PHOTOS",
    "Analysis",
    "BatchResult",
    "Check",
    "CorruptPhotoError",
    "DamagedPart",
    "Detection",
    "Grade",
    "ImageShapeError",
    "ImageTooLargeError",
    "InputError",
    "IntegrityError",
    "JobControl",
    "Limits",
    "MaskCrop",
    "ModelLoadError",
    "ModelRef",
    "ModelSet",
    "NotAnImageError",
    "Photo",
    "PipelineError",
    "ReportRow",
    "Settings",
    "Status",
    "Summary",
    "Thresholds",
    "UnsafeArchiveError",
    "VehiclePhoto",
    "VehicleResult",
    "VehicleRow",
    "VehiclesCsvError",
    "ZipLimits",
    "analyze",
    "analyze_batch",
    "analyze_vehicle",
    "annotate",
    "load_models",
    "load_photo",
    "load_profile",
    "process_zip",
]
