"""Builders for good and hostile zips (shared by the archive, CLI and app tests)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from pipeline import testing


def photos_zip(path: Path, count: int, broken: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """``count`` entries, the last ``broken`` of which are not usable photos."""
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count - broken):
            folder = "cars/" if i % 2 else ""
            archive.writestr(f"{folder}photo_{i:03d}.jpg", testing.jpeg_bytes(testing.photo(*size, seed=i)))
        bad = [
            ("notes.txt", b"not a photo"),
            ("fake.jpg", b"this is text named .jpg"),
            ("truncated.jpg", testing.jpeg_bytes(testing.photo(*size))[:300]),
            ("empty.png", b""),
            ("broken.png", testing.png_bytes(testing.photo(*size))[:60]),
        ]
        for i in range(broken):
            name, data = bad[i % len(bad)]
            archive.writestr(f"bad_{i}_{name}", data)
    return path


def with_entries(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return path


def good_photo() -> bytes:
    return testing.jpeg_bytes(testing.photo(48, 32))


def traversal_zip(path: Path) -> Path:
    return with_entries(path, [("ok.jpg", good_photo()), ("../../escaped.jpg", good_photo())])


def absolute_zip(path: Path) -> Path:
    info = zipfile.ZipInfo("ok.jpg")
    evil = zipfile.ZipInfo("placeholder")
    evil.filename = "/tmp/absolute-escape.jpg"  # ZipInfo strips a leading '/', the raw field keeps it
    return with_entries(path, [(info, good_photo()), (evil, good_photo())])


def symlink_zip(path: Path) -> Path:
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return with_entries(path, [("ok.jpg", good_photo()), (link, b"/etc/passwd")])


def nested_zip(path: Path) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("inner.jpg", good_photo())
    return with_entries(
        path, [("ok.jpg", good_photo()), ("more.zip", inner.getvalue()), ("disguised.jpg", inner.getvalue())]
    )


def encrypted_zip(path: Path) -> Path:
    with_entries(path, [("ok.jpg", good_photo()), ("secret.jpg", good_photo())])
    data = bytearray(path.read_bytes())
    # Set the 'encrypted' flag bit of secret.jpg in its local and central headers.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        start = data.find(signature, start + 1)  # the second entry
        data[start + flag_offset] |= 0x1
    path.write_bytes(bytes(data))
    return path


def ratio_bomb_zip(path: Path, megabytes: int = 300) -> Path:
    """One entry that inflates ~1000x (a few hundred KB on disk)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("ok.jpg", good_photo())
        with archive.open("bomb.jpg", "w", force_zip64=True) as stream:
            block = b"\0" * (1024 * 1024)
            for _ in range(megabytes):
                stream.write(block)
    return path


def many_entries_zip(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(f"f{i}.txt", b"")
    return path
