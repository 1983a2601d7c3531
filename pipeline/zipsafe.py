"""Reading entries from untrusted zips (and from folders), with limits and refusals. The only module that knows
about zips.

A zip is checked as a whole before any work (entry count, declared bytes, and the pixels its photos declare in
their headers); then each entry is refused by name and header (traversal, links, encryption, nested archives,
bomb ratios) or read lazily, with the byte limits enforced again while reading (headers can lie).
"""

from __future__ import annotations

import io
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from .errors import InputError, UnsafeArchiveError
from .formats import ARCHIVE_MAGIC, ARCHIVE_SUFFIXES, DECODERS, is_system_file, suffix
from .results import Status

# Enough of an entry to find the photo's size in its header (JPEG: past EXIF and ICC segments).
HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded zip may hold. Checked on the declared sizes and again while reading."""

    max_entries: int = 2_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed, all entries
    max_entry_bytes: int = 200 * 1024**2  # uncompressed, one entry
    max_ratio: float = 100.0  # uncompressed / compressed, for entries over 1 MB
    max_name_length: int = 1_024
    max_total_pixels: int = 4_000_000_000  # what the photos' headers declare, all entries


@dataclass(frozen=True)
class Entry:
    """One input file: its name, and either how to read its bytes or why it is not read; the vehicle it belongs to
    ('' until the input's grouping is known)."""

    name: str
    read: Callable[[], bytes] | None = None
    status: Status = Status.OK
    message: str = ""
    vehicle: str = ""


@dataclass(frozen=True)
class Entries:
    """The entries of one input, counted and named before any is read (progress bars, rows for what is never
    read, and which vehicle each belongs to)."""

    count: int
    items: Iterator[Entry]
    names: tuple[str, ...] = ()


# ---------------------------------------------------------------- zips


def open_zip(zip_path: str | Path, limits: ZipLimits = ZipLimits()) -> Entries:
    """The entries of a zip, read lazily. Raises UnsafeArchiveError for a zip refused as a whole."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeArchiveError(f"{Path(zip_path).name}: not a readable zip archive ({_one_line(exc)})") from None
    infos = [info for info in archive.infolist() if not info.is_dir()]
    try:
        _check_archive(infos, limits)
        _check_pixel_budget(archive, [i for i in infos if not _refusal(i, limits)], limits)
    except UnsafeArchiveError:
        archive.close()
        raise
    return Entries(len(infos), _entries(archive, infos, limits), tuple(info.filename for info in infos))


def _check_archive(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    if not infos:
        raise UnsafeArchiveError("the zip is empty: no files in it")
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(f"the zip has {len(infos)} files; the limit is {limits.max_entries}")
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"the zip would unpack to {declared / 1e6:.0f} MB; the limit is {limits.max_total_bytes / 1e6:.0f} MB "
            "(zip bomb?)"
        )


def _check_pixel_budget(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """Refuse, before any photo is decoded, a zip whose photos declare more pixels in all than the budget."""
    total = sum(_declared_pixels(archive, info) for info in infos)
    if total > limits.max_total_pixels:
        raise UnsafeArchiveError(
            f"the photos in the zip hold {total / 1e6:,.0f} MP in all; the limit is "
            f"{limits.max_total_pixels / 1e6:,.0f} MP a zip: split it into smaller zips"
        )


def _declared_pixels(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """width x height from the entry's header (0 when it has no photo header we read)."""
    try:
        with archive.open(info) as stream:
            head = stream.read(HEADER_BYTES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: the budget is what judges size here
            with Image.open(io.BytesIO(head), formats=DECODERS) as image:
                width, height = image.size
    except Exception:  # not a photo, encrypted, corrupt: its own row says so later
        return 0
    return width * height


def _entries(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> Iterator[Entry]:
    budget = _ByteBudget(limits.max_total_bytes)
    with archive:
        for info in infos:
            refusal = _refusal(info, limits)
            if refusal:
                yield Entry(info.filename, status=Status.REFUSED, message=refusal)
            elif is_system_file(info.filename):
                yield Entry(info.filename, status=Status.SKIPPED, message="system metadata file, not a photo")
            else:
                yield Entry(info.filename, read=_reader(archive, info, limits, budget))


class _ByteBudget:
    """Uncompressed bytes left for the rest of the zip."""

    def __init__(self, total: int) -> None:
        self.left = total


def _reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits, budget: _ByteBudget):
    def read() -> bytes:
        allowed = min(limits.max_entry_bytes, budget.left)
        try:
            with archive.open(info) as stream:
                data = stream.read(allowed + 1)  # headers can lie: never trust file_size alone
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, NotImplementedError) as exc:
            raise InputError(f"cannot read this entry ({_one_line(exc)})") from None
        if len(data) > allowed:
            raise UnsafeArchiveError("unpacks to more than the size limit (zip bomb?)")
        budget.left -= len(data)
        if data.startswith(ARCHIVE_MAGIC):
            raise UnsafeArchiveError("nested archives are not opened")
        return data

    return read


def _refusal(info: zipfile.ZipInfo, limits: ZipLimits) -> str:
    """Why an entry is refused before reading it, or ''."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path refused"
    if ".." in parts:
        return "path outside the archive ('..') refused"
    if "\x00" in name or len(name) > limits.max_name_length:
        return "invalid or too long file name"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link refused"
    if info.flag_bits & 0x1:
        return "encrypted entry refused (no passwords)"
    if suffix(name) in ARCHIVE_SUFFIXES:
        return "nested archives are not opened"
    if info.file_size > 1_000_000 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return "compression ratio too high (zip bomb?)"
    if info.file_size > limits.max_entry_bytes:
        return f"larger than {limits.max_entry_bytes / 1e6:.0f} MB unpacked"
    return ""


def read_zip_entry(zip_path: str | Path, index: int, limits: ZipLimits = ZipLimits()) -> bytes:
    """The bytes of the zip's ``index``-th file entry, read with the limits (for engines that read entries in
    other processes; its listing by ``open_zip`` has already refused what the entry's name and header betray)."""
    with zipfile.ZipFile(zip_path) as archive:
        info = [i for i in archive.infolist() if not i.is_dir()][index]
        return _reader(archive, info, limits, _ByteBudget(limits.max_entry_bytes))()


def read_zip_member(zip_path: str | Path, name: str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` + 1 bytes of the entry called ``name``: a small side file such as vehicles.csv, whose
    reader judges the size (reading stops there, whatever the entry's header says). InputError when unreadable."""
    try:
        with zipfile.ZipFile(zip_path) as archive, archive.open(name) as stream:
            return stream.read(max_bytes + 1)
    except (KeyError, zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, NotImplementedError) as exc:
        raise InputError(f"cannot read it ({_one_line(exc)})") from None


# ---------------------------------------------------------------- files and folders (CLI)


def open_paths(paths: Iterable[Path], limits: ZipLimits = ZipLimits()) -> Entries:
    """Photos and folders (recursively) as entries named relative to what was given; a file over the entry
    size limit is refused before it is read."""
    files: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            files += [
                (f"{path.name}/{p.relative_to(path).as_posix()}", p) for p in sorted(path.rglob("*")) if p.is_file()
            ]
        else:
            files.append((path.name, path))
    entries = (Entry(name, read=file_reader(path, limits.max_entry_bytes)) for name, path in files)
    return Entries(len(files), entries, tuple(name for name, _ in files))


def read_head(path: Path, max_bytes: int) -> bytes:
    """At most ``max_bytes`` + 1 bytes of a file (its reader judges the size); InputError when unreadable."""
    try:
        with path.open("rb") as stream:
            return stream.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})") from None


def file_reader(path: Path, max_bytes: int) -> Callable[[], bytes]:
    """A reader of the file's bytes that refuses a file over ``max_bytes`` (read no further than that)."""

    def read() -> bytes:
        data = read_head(path, max_bytes)
        if len(data) > max_bytes:
            raise UnsafeArchiveError(f"larger than {max_bytes / 1e6:.0f} MB")
        return data

    return read


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__
