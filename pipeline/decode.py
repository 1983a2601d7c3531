"""Bytes, paths or arrays -> an RGB PIL image: EXIF orientation, odd modes, size limits."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, NotAnImageError

ImageSource = str | Path | bytes | Image.Image | np.ndarray

READABLE = "JPEG, PNG, WebP, HEIC, BMP, GIF or TIFF"


def _register_heif() -> None:
    """HEIC/HEIF (iPhone photos) through pi-heif, when installed; decode-only, no network."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()


def load_image(source: ImageSource, max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485) -> Image.Image:
    """Decode any supported input into an RGB image with EXIF orientation applied.

    Raises NotAnImageError (unreadable, truncated, not a photo) or ImageTooLargeError (more than
    ``max_pixels`` pixels: checked from the header, before any pixel is decoded).
    """
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source))
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        return to_rgb(ImageOps.exif_transpose(source))
    name = Path(source).name if isinstance(source, (str, Path)) else "upload"  # never the server's folders
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise NotAnImageError(f"{name}: cannot open ({exc.strerror or exc})") from None
    with stream:
        return _decode(stream, name, max_pixels)


def _decode(stream: io.IOBase, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            _check_pixels(image.size, max_pixels)
            image.seek(0)  # animated GIF/WebP/TIFF: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own guard
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "too many pixels"
        raise ImageTooLargeError(f"{name}: photo too large: {size} (limit {max_pixels / 1e6:.0f} MP)") from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not a photo we can read (supported: {READABLE})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImageError(f"{name}: the photo is truncated or corrupt ({_short(exc)})") from None
    return to_rgb(image)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise NotAnImageError(f"the photo is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"photo too large: {width}x{height} = {width * height / 1e6:.0f} MP (limit {max_pixels / 1e6:.0f} MP)"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency over white, 16-bit and float scaled (not clipped) to 8 bit."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array)
    raise NotAnImageError(f"an array of shape {array.shape} is not a photo")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    if array.max(initial=0) > 255:
        top = 65535.0 if array.max() <= 65535 else float(array.max())
        array = array / top * 255.0
    elif array.max(initial=0) <= 1.0:
        array = array * 255.0
    return np.clip(array, 0, 255).astype(np.uint8)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__
