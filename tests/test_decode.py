"""Decoding: every photo mode becomes RGB at its shown orientation; bad files give clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import ImageTooLargeError, NotAnImageError, testing
from pipeline.decode import load_image


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_modes_become_rgb():
    base = testing.photo(40, 30)
    cases = {
        "cmyk jpeg": _encoded(base.convert("CMYK"), "JPEG"),
        "grayscale": _encoded(base.convert("L"), "PNG"),
        "palette": _encoded(base.convert("P"), "PNG"),
        "rgba": _encoded(base.convert("RGBA"), "PNG"),
        "16-bit": _encoded(Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257), "PNG"),
        "webp": _encoded(base, "WEBP"),
        "bmp": _encoded(base, "BMP"),
        "tiff": _encoded(base, "TIFF"),
    }
    for name, data in cases.items():
        image = load_image(data)
        assert (image.mode, image.size) == ("RGB", (40, 30)), name


def test_16_bit_is_scaled_not_clipped():
    gradient = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    image = np.asarray(load_image(_encoded(Image.fromarray(gradient), "PNG")))
    assert image[..., 0].min() == 0 and image[..., 0].max() == 255
    assert 100 < image[..., 0].mean() < 155


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(load_image(_encoded(rgba, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_applied():
    data = testing.jpeg_bytes(testing.photo(60, 20), orientation=8)
    assert load_image(data).size == (20, 60)


def test_animated_gif_first_frame():
    frames = [Image.new("P", (10, 6), i) for i in range(3)]
    data = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).size == (10, 6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a photo"),
        (b"just some text pretending to be a photo", "not a photo"),
        (testing.jpeg_bytes(testing.photo(64, 64))[:400], "truncated or corrupt"),
    ],
)
def test_unreadable_inputs(data, message):
    with pytest.raises(NotAnImageError, match=message):
        load_image(data)


def test_pixel_limit_checked_before_decoding():
    header_only = _encoded(Image.new("1", (20000, 20000)), "PNG")  # tiny file, 400 MP
    with pytest.raises(ImageTooLargeError, match="400 MP"):
        load_image(header_only)


def test_missing_file(tmp_path):
    with pytest.raises(NotAnImageError, match="cannot open"):
        load_image(tmp_path / "nope.jpg")
