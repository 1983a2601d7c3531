"""What a photo is: the formats we decode, the file names we treat as photos, and how to list them.

Every layer (decoding, zips, folders, the app's examples, training data) asks this module, so "is this a photo"
has one answer.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

# Pillow decoder names we allow, and nothing else: Pillow can also open EPS (through Ghostscript), PSD, FITS,
# ICO, SGI, ... which no car photo needs and which widen what a hostile upload can reach. The JPEG decoder also
# opens the MPO JPEGs many cameras write; HEIF is registered by pi-heif (iPhone photos).
DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "HEIF")
READABLE = "JPEG, PNG, WebP, HEIC, BMP, GIF or TIFF"

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"}
)
ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".cbz", ".jar", ".apk"}
)
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def suffix(name: str) -> str:
    """The lower-case suffix of a file name in any separator style ('a/B.JPG' -> '.jpg')."""
    return PurePosixPath(name.replace("\\", "/")).suffix.lower()


def has_photo_suffix(name: str) -> bool:
    return suffix(name) in IMAGE_SUFFIXES


def is_system_file(name: str) -> bool:
    """Files an OS adds to folders and zips (macOS resource forks, thumbnails caches): never photos."""
    clean = name.replace("\\", "/")
    return clean.startswith("__MACOSX/") or PurePosixPath(clean).name in SYSTEM_FILES


def list_photos(folder: Path) -> list[Path]:
    """Photo files under ``folder`` (recursive, sorted; hidden files left out)."""
    return sorted(
        p for p in Path(folder).rglob("*") if has_photo_suffix(p.name) and p.is_file() and not p.name.startswith(".")
    )


def not_a_photo_message(name: str) -> str:
    """The one-line reason a file that is no photo is skipped."""
    return f"not a photo ({suffix(name) or 'no extension'} file)"
