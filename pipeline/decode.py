"""Bytes, paths, arrays or PIL images -> a ``Photo``: an RGB copy at the working resolution, plus the size of the
original (as shown: EXIF orientation applied).

Memory stays bounded whatever the upload: only the formats in ``formats.DECODERS`` are opened, the pixel count
and aspect ratio are checked from the header before any pixel is decoded, JPEGs are decoded at a reduced scale
where the working size allows, and every mode is shrunk in its own mode before it becomes RGB (a 16-bit photo
is never converted to 8 bytes a pixel at full size).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import CorruptPhotoError, ImageShapeError, ImageTooLargeError, NotAnImageError
from .formats import DECODERS, READABLE
from .settings import Limits

ImageSource = str | Path | bytes | Image.Image | np.ndarray

# EXIF orientation -> the transposition that shows the photo upright (as ImageOps.exif_transpose does).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _register_heif() -> None:
    """HEIC/HEIF (iPhone photos) through pi-heif, when installed; decode-only, no network."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo: ``image`` is RGB, its longest side at most the working size; ``size`` is the original
    photo's (width, height) as shown. Boxes and areas are reported in the original's pixels."""

    image: Image.Image
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per working pixel, (x, y)."""
        return self.size[0] / self.image.width, self.size[1] / self.image.height


def load_photo(source: ImageSource | Photo, limits: Limits = Limits()) -> Photo:
    """Decode any supported input. Raises NotAnImageError (unreadable, truncated, not a photo format we read),
    ImageTooLargeError (more than ``limits.max_pixels``) or ImageShapeError (aspect ratio over the limit)."""
    if isinstance(source, Photo):
        return source
    if isinstance(source, np.ndarray):
        source = _from_array(source)
    if isinstance(source, Image.Image):
        check_shape(source.size, limits)
        return _shrunk(source, limits.working_size)
    name = Path(source).name if isinstance(source, (str, Path)) else "upload"  # never the server's folders
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise NotAnImageError(f"{name}: cannot open ({exc.strerror or exc})") from None
    with stream:
        return _decode(stream, name, limits)


def load_image(source: ImageSource, limits: Limits = Limits()) -> Image.Image:
    """The working-resolution RGB image of ``load_photo``."""
    return load_photo(source, limits).image


def _decode(stream: io.IOBase, name: str, limits: Limits) -> Photo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=DECODERS)
            check_shape(image.size, limits)
            image.seek(0)  # animated GIF/WebP/TIFF: the first frame
            return _shrunk(image, limits.working_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own guard
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "too many pixels"
        raise ImageTooLargeError(f"{name}: photo too large: {size} (limit {limits.max_pixels / 1e6:.0f} MP)") from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not a photo we can read (supported: {READABLE})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptPhotoError(f"{name}: the photo is truncated or corrupt ({_short(exc)})") from None


def check_shape(size: tuple[int, int], limits: Limits) -> None:
    """Refuse, from the header, photos with no pixels, too many pixels or an aspect ratio over the limit."""
    width, height = size
    if width < 1 or height < 1:
        raise NotAnImageError(f"the photo is empty ({width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"photo too large: {width}x{height} = {width * height / 1e6:.0f} MP "
            f"(limit {limits.max_pixels / 1e6:.0f} MP)"
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise ImageShapeError(
            f"photo too {'wide' if width > height else 'tall'} to analyse: {width}x{height} pixels "
            f"(aspect ratio over {limits.max_aspect:g}:1)"
        )


def _shrunk(image: Image.Image, working_size: int) -> Photo:
    """The working copy: decoded at a reduced scale where the format allows, shrunk in its own mode, then RGB,
    then upright. ``size`` is the original's, as shown."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    width, height = image.size
    target = _fit(image.size, working_size)
    if image.format in {"JPEG", "MPO"} and target != image.size:
        image.draft(None, target)  # the JPEG decoder skips the detail the working copy drops (2-8x less memory)
    image = _resizable(image)
    if image.size != target:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    rgb = to_rgb(image)
    if rgb is image:
        rgb = rgb.copy()  # never hand back a caller's own object
    if orientation in _ORIENTATIONS:
        rgb = rgb.transpose(_ORIENTATIONS[orientation])
        if orientation >= 5:
            width, height = height, width
    rgb.info = {}  # upright now: no EXIF orientation left for a library to apply a second time
    return Photo(rgb, (width, height))


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    width, height = size
    if max(width, height) <= longest:
        return size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resizable(image: Image.Image) -> Image.Image:
    """Pillow resizes most modes as they are; these few it cannot, so they become the nearest mode it can."""
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency over white, 16-bit and float scaled (not clipped) to 8 bit."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array)
    raise NotAnImageError(f"an array of shape {array.shape} is not a photo")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """float32, not float64: called on the working copy, but an array handed in by a caller can be any size."""
    array = array.astype(np.float32, copy=False)
    top = float(array.max(initial=0))
    if top > 255:
        array = array * (255.0 / (65535.0 if top <= 65535 else top))
    elif top <= 1.0:
        array = array * 255.0
    return np.clip(array, 0, 255).astype(np.uint8)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__
