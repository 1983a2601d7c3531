"""A corpus of hostile and odd uploads, each with the outcome it must get (issue 6).

``build_corpus(folder)`` writes every case into ``folder`` and returns the list of ``Case``; the tests
run each one through the pipeline, the CLI and the API. ``python -m tests.hostile_corpus OUT_DIR`` writes
the files (and ``cases.json``) for trying them by hand in the Space.

Big cases stay cheap: the 20000x20000 photo is a mode-"1" PNG of a few KB, the zip bombs are zeros, and
the one 60-megapixel JPEG is made by resizing a small photo (``big=False`` leaves it out).
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import testing
from pipeline.formats import IMAGE_SUFFIXES
from pipeline.settings import Limits
from tests import zips

RESULT, MESSAGE = "result", "message"
SIXTY_MP = (8000, 7500)


@dataclass(frozen=True)
class Case:
    """One upload and what must come back.

    ``expected`` is "result" (an analysis, or for a zip a result archive) or "message" (a one-line
    InputError, ``error`` names its class, ``fragment`` is part of its text). For zips with a result,
    ``entries`` maps entry names to the status each must get (ok | skipped | refused | error).
    ``layers`` says where the case applies: the size-limit case exists only behind the web server.
    """

    name: str
    path: Path
    kind: str  # "photo" | "zip"
    expected: str  # "result" | "message"
    fragment: str = ""
    error: str = ""  # pipeline error class name for "message" cases
    entries: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # expected (width, height) of a photo result
    layers: tuple[str, ...] = ("pipeline", "cli", "api")
    slow: bool = False

    @property
    def id(self) -> str:
        return self.name

    @property
    def overlay_size(self) -> tuple[int, int] | None:
        """The annotated photo's size: the photo's, shrunk to the working resolution (longest side 1600)."""
        if self.size is None:
            return None
        width, height = self.size
        scale = min(1.0, Limits().working_size / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))


# ---------------------------------------------------------------- bytes


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return testing.photo(width, height, seed)


def _jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return testing.jpeg_bytes(_photo(width, height, seed))


def _gif() -> bytes:
    frames = [_photo(40, 30, seed).convert("P") for seed in range(3)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _png16() -> bytes:
    gray = np.asarray(_photo(40, 30).convert("L"), dtype=np.uint16) * 257
    return _encoded(Image.fromarray(gray), "PNG")


HEIC_GARBAGE = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00not really an HEIC photo" * 40
PSD_HEADER = b"8BPS\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 200
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect/></svg>'
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
UNICODE_NAME = "voiture_éèç_車の写真_🚗.jpg"
LONG_NAME = "l" * 200 + ".jpg"  # most file systems stop at 255 bytes per name


def sixty_mp_jpeg(path: Path) -> Path:
    """An ~8000x7500 JPEG (60 MP) from a small photo: a few seconds, a few MB."""
    _photo(400, 375, seed=7).resize(SIXTY_MP, Image.BILINEAR).save(path, format="JPEG", quality=70)
    return path


def declared_bomb_zip(path: Path) -> Path:
    """A tiny zip whose central directory claims ~4.3 GB unpacked: refused as a whole, before reading."""
    zips.with_entries(path, [("ok.jpg", _jpeg()), ("huge.jpg", b"\0" * 1000)])
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")
    start = data.find(b"PK\x01\x02", start + 1)  # the central header of huge.jpg
    data[start + 24 : start + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))
    return path


def mixed_zip(path: Path) -> Path:
    """Good photos in every odd mode among broken files: the good ones must all come back."""
    base = _photo(48, 36, seed=3)
    return zips.with_entries(
        path,
        [
            ("good.jpg", _jpeg(seed=1)),
            ("cmyk.jpg", _encoded(base.convert("CMYK"), "JPEG")),
            ("gray.png", _encoded(base.convert("L"), "PNG")),
            ("palette.png", _encoded(base.convert("P"), "PNG")),
            ("rgba.png", _encoded(base.convert("RGBA"), "PNG")),
            ("sixteen.png", _png16()),
            ("anim.gif", _gif()),
            ("rotated.jpg", testing.jpeg_bytes(_photo(60, 20), orientation=6)),
            ("tiny.png", _encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
            ("zero.jpg", b""),
            ("truncated.jpg", _jpeg(64, 64)[:400]),
            ("text.jpg", b"this is text named .jpg"),
            ("fake.heic", HEIC_GARBAGE),
            ("huge.png", _encoded(Image.new("1", (20000, 20000)), "PNG")),
            ("notes.txt", b"claim 42"),
            ("__MACOSX/._good.jpg", b"\0\5\26\7"),
        ],
    )


def names_zip(path: Path) -> Path:
    return zips.with_entries(
        path,
        [
            ("ok.jpg", _jpeg()),
            (f"фото/{UNICODE_NAME}", _jpeg(seed=2)),
            ("x" * 1100 + ".jpg", _jpeg(seed=3)),
            ("=HYPERLINK(1).jpg", _jpeg(seed=4)),
        ],
    )


def only_text_zip(path: Path) -> Path:
    return zips.with_entries(path, [("readme.txt", b"hello"), ("data.csv", b"a,b\n1,2\n"), ("script.sh", b"#!/bin/sh")])


def duplicates_zip(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate, and writes it
        return zips.with_entries(path, [("ok.jpg", _jpeg()), ("ok.jpg", _jpeg(seed=5))])


def oversize(path: Path, megabytes: int) -> Path:
    """A valid JPEG padded past the server's upload limit."""
    with path.open("wb") as stream:
        stream.write(_jpeg())
        stream.write(b"\0" * (megabytes * 1024 * 1024))
    return path


# ---------------------------------------------------------------- the corpus


def build_corpus(folder: Path, big: bool = True, upload_limit_mb: int = 30) -> list[Case]:
    """Write every case into ``folder``; ``upload_limit_mb`` is the server limit the oversize cases exceed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def photo(name: str, data: bytes, expected: str, fragment: str = "", error: str = "", **kw) -> None:
        path = folder / name
        path.write_bytes(data)
        cases.append(Case(name.rsplit(".", 1)[0], path, "photo", expected, fragment, error, **kw))

    base = _photo(64, 48, seed=1)
    not_a_photo = ("not a photo", "NotAnImageError")
    photo("zero_bytes.jpg", b"", MESSAGE, *not_a_photo)
    photo("truncated.jpg", _jpeg(64, 64)[:400], MESSAGE, "truncated or corrupt", "CorruptPhotoError")
    # Formats Pillow decodes but the Space does not list: refused by name, never handed to their decoders.
    photo("targa_named.jpg", _encoded(base, "TGA"), MESSAGE, *not_a_photo)
    photo("icon_named.png", _encoded(base, "ICO"), MESSAGE, *not_a_photo)
    photo("pcx_named.jpg", _encoded(base, "PCX"), MESSAGE, *not_a_photo)
    photo("strip_40000x1.png", _encoded(Image.new("L", (40000, 1), 128), "PNG"), MESSAGE, "too wide", "ImageShapeError")
    photo("tall_1x300.png", _encoded(Image.new("L", (1, 300), 128), "PNG"), MESSAGE, "too tall", "ImageShapeError")
    photo("float_tiff.tif", _encoded(Image.new("F", (40, 30), 0.25), "TIFF"), RESULT, size=(40, 30))
    photo("text_named.jpg", b"just some text pretending to be a photo", MESSAGE, *not_a_photo)
    photo("fake_heic.heic", HEIC_GARBAGE, MESSAGE, *not_a_photo)
    photo("photoshop.psd", PSD_HEADER, MESSAGE, *not_a_photo)
    photo("vector.svg", SVG, MESSAGE, *not_a_photo)
    photo("document.pdf", PDF, MESSAGE, *not_a_photo)
    photo("zip_named.jpg", (zips.nested_zip(folder / "_inner.zip")).read_bytes(), MESSAGE, *not_a_photo)
    (folder / "_inner.zip").unlink()
    photo(
        "huge_20000px.png", _encoded(Image.new("1", (20000, 20000)), "PNG"), MESSAGE, "too large", "ImageTooLargeError"
    )
    photo("cmyk.jpg", _encoded(base.convert("CMYK"), "JPEG"), RESULT, size=(64, 48))
    photo("sixteen_bit.png", _png16(), RESULT, size=(40, 30))
    photo("palette.png", _encoded(base.convert("P"), "PNG"), RESULT, size=(64, 48))
    photo("rgba.png", _encoded(base.convert("RGBA"), "PNG"), RESULT, size=(64, 48))
    photo("grayscale.jpg", _encoded(base.convert("L"), "JPEG"), RESULT, size=(64, 48))
    photo("exif_rotated.jpg", testing.jpeg_bytes(_photo(60, 20), orientation=6), RESULT, size=(20, 60))
    photo("animated.gif", _gif(), RESULT, size=(40, 30))
    photo("one_pixel.png", _encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), RESULT, size=(1, 1))
    photo("webp.webp", _encoded(base, "WEBP"), RESULT, size=(64, 48))
    photo(UNICODE_NAME, _jpeg(), RESULT, size=(64, 48))
    photo(LONG_NAME, _jpeg(), RESULT, size=(64, 48))
    if big:
        path = sixty_mp_jpeg(folder / "sixty_mp.jpg")
        # Not through the CLI: same decoding as the library, and ~2 min there on 2 shared cores (see notes).
        cases.append(Case("sixty_mp", path, "photo", RESULT, size=SIXTY_MP, layers=("pipeline", "api"), slow=True))
    too_big = oversize(folder / "over_limit.jpg", upload_limit_mb + 1)
    cases.append(Case("over_limit_photo", too_big, "photo", MESSAGE, "maximum", layers=("api",)))

    def archive(name: str, builder, expected: str, fragment: str = "", entries: dict | None = None) -> None:
        path = builder(folder / f"{name}.zip")
        error = "UnsafeArchiveError" if expected == MESSAGE else ""
        cases.append(Case(name, path, "zip", expected, fragment, error, entries=entries or {}))

    ok = {"ok.jpg": "ok"}
    archive("ratio_bomb", lambda p: zips.ratio_bomb_zip(p, megabytes=60), RESULT, entries=ok | {"bomb.jpg": "refused"})
    archive("declared_bomb", declared_bomb_zip, MESSAGE, "zip bomb")
    archive("many_entries", lambda p: zips.many_entries_zip(p, 2_001), MESSAGE, "the limit is 2000")
    archive("traversal", zips.traversal_zip, RESULT, entries=ok | {"../../escaped.jpg": "refused"})
    archive("absolute", zips.absolute_zip, RESULT, entries=ok | {"/tmp/absolute-escape.jpg": "refused"})
    archive("symlink", zips.symlink_zip, RESULT, entries=ok | {"link.jpg": "refused"})
    archive(
        "nested",
        zips.nested_zip,
        RESULT,
        entries=ok | {"more.zip": "refused", "disguised.jpg": "refused"},
    )
    archive("encrypted", zips.encrypted_zip, RESULT, entries=ok | {"secret.jpg": "refused"})
    archive("duplicates", duplicates_zip, RESULT, entries=ok)
    archive(
        "names",
        names_zip,
        RESULT,
        entries=ok | {f"фото/{UNICODE_NAME}": "ok", "x" * 1100 + ".jpg": "refused", "=HYPERLINK(1).jpg": "ok"},
    )
    archive(
        "mixed",
        mixed_zip,
        RESULT,
        entries={
            **dict.fromkeys(
                ["good.jpg", "cmyk.jpg", "gray.png", "palette.png", "rgba.png", "sixteen.png", "anim.gif"], "ok"
            ),
            **dict.fromkeys(["rotated.jpg", "tiny.png"], "ok"),
            **dict.fromkeys(["zero.jpg", "truncated.jpg", "text.jpg", "huge.png"], "error"),
            **dict.fromkeys(["notes.txt", "__MACOSX/._good.jpg"], "skipped"),
            "fake.heic": "error" if ".heic" in IMAGE_SUFFIXES else "skipped",  # see HARDENING_NOTES.md P5
        },
    )
    archive("empty", lambda p: zipfile.ZipFile(p, "w").close() or p, MESSAGE, "empty")
    archive(
        "only_text", only_text_zip, RESULT, entries=dict.fromkeys(["readme.txt", "data.csv", "script.sh"], "skipped")
    )
    archive(
        "not_a_zip",
        lambda p: p.write_bytes(b"this is not a zip, only named like one") and p,
        MESSAGE,
        "not a readable zip",
    )
    archive("jpeg_named_zip", lambda p: p.write_bytes(_jpeg()) and p, MESSAGE, "not a readable zip")
    big_zip = zips.with_entries(folder / "over_limit.zip", [("ok.jpg", _jpeg())])
    with big_zip.open("ab") as stream:  # trailing bytes: still a zip, just too large to upload
        stream.write(b"\0" * ((upload_limit_mb + 1) * 1024 * 1024))
    cases.append(Case("over_limit_zip", big_zip, "zip", MESSAGE, "maximum", layers=("api",)))
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.hostile_corpus OUT_DIR", file=sys.stderr)
        return 2
    cases = build_corpus(Path(argv[0]))
    listing = [asdict(c) | {"path": str(c.path)} for c in cases]
    (Path(argv[0]) / "cases.json").write_text(json.dumps(listing, indent=2, ensure_ascii=False))
    for case in cases:
        outcome = f"{case.expected}: {case.fragment}" if case.fragment else case.expected
        print(f"{case.kind:5} {case.path.name[:50]:50} -> {outcome}")
    print(f"{len(cases)} cases in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
