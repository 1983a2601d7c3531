"""Where results go (a zip or a folder), under names that are safe and unique on any file system.

Input names come from strangers: they may differ only in case or Unicode normal form (one file on macOS and
Windows), put a file where another entry needs a folder (``a.jpg`` beside ``a.jpg/b.jpg``), exceed 255 bytes,
or be a device name on Windows (``CON.jpg``). ``OutputNames`` turns each into a name that is none of these and
unique after NFC + casefold, so every entry keeps its own output.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import Protocol

from .errors import UnsafeArchiveError

MAX_COMPONENT_BYTES = 240  # under the common 255-byte limit, with room for a " (12)" made unique
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


class Sink(Protocol):
    def write(self, name: str, data: bytes) -> None: ...


class ZipSink:
    """Writes into a zip; ``name`` is already a safe relative name."""

    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)

    def write(self, name: str, data: bytes) -> None:
        self.zip.writestr(name, data)

    def close(self) -> None:
        self.zip.close()


class DirSink:
    """Writes under a folder, refusing any name that would land outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, data: bytes) -> None:
        target = (self.root / name).resolve()
        if not target.is_relative_to(self.root):
            raise UnsafeArchiveError(f"{name}: would be written outside the output folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def safe_component(part: str) -> str:
    """One path component, NFC, without control or reserved characters, not a Windows device, <= 240 bytes."""
    part = _UNSAFE_CHARS.sub("_", unicodedata.normalize("NFC", part)).rstrip(". ")
    if part in {"", ".", ".."}:
        part = "_"
    if _WINDOWS_DEVICES.match(part):
        part = f"_{part}"
    return _truncated(part, MAX_COMPONENT_BYTES)


def _truncated(part: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, keeping the suffix (a photo keeps its extension)."""
    if len(part.encode()) <= limit:
        return part
    stem, dot, ext = part.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = part, ""
    keep = limit - len(ext.encode()) - (1 if ext else 0)
    stem = stem.encode()[:keep].decode(errors="ignore")
    return f"{stem}.{ext}" if ext else stem


def _key(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


class OutputNames:
    """Hands out output names, each unique after NFC + casefold, no file where a folder is needed or the other
    way round. The same folder of the input always maps to the same output folder."""

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self.files: set[str] = {_key(name) for name in reserved}
        self.dirs: dict[str, str] = {}  # key of a folder path as asked for -> the output folder path
        self.folder_keys: set[str] = set()  # keys of the output folder paths

    def claim(self, name: str) -> str:
        parts = [safe_component(p) for p in PurePosixPath(name.replace("\\", "/").lstrip("/")).parts] or ["_"]
        folder = self._folder(parts[:-1])
        leaf = self._free_leaf(folder, parts[-1])
        self.files.add(_key(f"{folder}{leaf}"))
        return f"{folder}{leaf}"

    def _folder(self, parts: list[str]) -> str:
        """The output folder path (with a trailing '/') for these input folder parts."""
        out = ""
        for part in parts:
            key = _key(out + part)
            if key not in self.dirs:
                candidate, n = part, 1
                while _key(out + candidate) in self.files or (n > 1 and _key(out + candidate) in self.folder_keys):
                    n += 1
                    candidate = f"{part} ({n})"
                self.dirs[key] = out + candidate
                self.folder_keys.add(_key(out + candidate))
            out = self.dirs[key] + "/"
        return out

    def _free_leaf(self, folder: str, leaf: str) -> str:
        candidate, n = leaf, 1
        while _key(folder + candidate) in self.files or _key(folder + candidate) in self.folder_keys:
            n += 1
            stem, dot, ext = leaf.rpartition(".")
            candidate = f"{stem} ({n}).{ext}" if dot and stem else f"{leaf} ({n})"
        return candidate
