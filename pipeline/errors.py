"""Precise exceptions the pipeline raises; the UI and CLI turn them into one-line messages."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: every error the pipeline raises on purpose is one of these."""


class InputError(PipelineError):
    """The user's input cannot be used (not an image, too large, hostile archive, ...)."""


class NotAnImageError(InputError):
    """The bytes are not a photo format we decode."""


class CorruptPhotoError(NotAnImageError):
    """The bytes start as a photo we decode, but the photo is truncated or corrupt."""


class ImageTooLargeError(InputError):
    """The photo has more pixels than the limit (decompression-bomb guard)."""


class ImageShapeError(InputError):
    """The photo's aspect ratio is beyond the limit (a 40000x1 strip is no photo of a car)."""


class UnsafeArchiveError(InputError):
    """A zip (or one of its entries) is refused for safety: traversal, bomb, symlink, budget, ..."""


class VehiclesCsvError(InputError):
    """A vehicles.csv (which photo belongs to which vehicle) that cannot be used: it is ignored, the folders
    decide, and the summary says why."""


class ModelLoadError(PipelineError):
    """A model could not be resolved or loaded; the message names it, its env var and the cause."""

    def __init__(self, role: str, ref: str, env_var: str, cause: str) -> None:
        self.role, self.ref, self.env_var, self.cause = role, ref, env_var, cause
        super().__init__(
            f"Cannot load the {role} model '{ref}': {cause}. "
            f"Set {env_var} to a local path or a reachable Hub repo id (or use a --models profile)."
        )


class UnsupportedLabelsError(ModelLoadError):
    """A classifier loaded, but its labels cannot be mapped to the check it is used for."""


class IntegrityError(ModelLoadError):
    """A weights file does not have the sha256 its reference names: it is not loaded (pickle runs code)."""
