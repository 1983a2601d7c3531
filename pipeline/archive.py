"""Zips and folders: safe reading, streaming through the cascade, and the output (archive or folder).

Only this module knows about zips. Every input entry becomes exactly one report row; a bad entry
becomes a row with a reason and never stops the others. Photos are decoded, analysed, annotated and
written one batch at a time, so memory stays flat however large the zip is.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .analyze import analyze_decoded
from .decode import load_image
from .draw import annotate
from .errors import InputError, ModelLoadError, UnsafeArchiveError
from .results import Analysis
from .settings import Settings

Progress = Callable[[int, int, str], None]  # (entries done, entries in all, current name)

REPORT_COLUMNS = (
    "file", "annotated_file", "status", "message", "is_car", "car_score", "is_damaged", "damage_score",
    "damage_count", "damage_classes", "damage_area_pct", "width", "height",
)  # fmt: skip
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".heic", ".heif"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".cbz", ".jar", ".apk"}
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")
_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
_METADATA = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded zip may hold. Checked on the declared sizes and again while reading."""

    max_entries: int = 2_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed, all entries
    max_entry_bytes: int = 200 * 1024**2  # uncompressed, one entry
    max_ratio: float = 100.0  # uncompressed / compressed, for entries over 1 MB
    max_name_length: int = 1_024


@dataclass(frozen=True)
class Entry:
    """One input file: its bytes, or the reason it was not read."""

    name: str
    data: bytes | None = None
    status: str = "ok"  # ok | skipped | refused | error
    message: str = ""


@dataclass(frozen=True)
class BatchResult:
    """What ``process_zip`` (or the CLI) produced."""

    archive: Path | None
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    coco: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------- reading zips safely


def iter_zip_entries(zip_path: str | Path, limits: ZipLimits = ZipLimits()) -> tuple[int, Iterator[Entry]]:
    """(number of file entries, lazy iterator over them). Raises UnsafeArchiveError for a refused zip."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeArchiveError(f"{Path(zip_path).name}: not a readable zip archive ({exc})") from None
    infos = [info for info in archive.infolist() if not info.is_dir()]
    try:
        _check_archive(infos, limits)
    except UnsafeArchiveError:
        archive.close()
        raise
    return len(infos), _read_entries(archive, infos, limits)


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


def _read_entries(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> Iterator[Entry]:
    total = 0
    with archive:
        for info in infos:
            refusal = _refusal(info, limits)
            if refusal:
                yield Entry(info.filename, status="refused", message=refusal)
                continue
            if _is_metadata(info.filename):
                yield Entry(info.filename, status="skipped", message="system metadata file, not a photo")
                continue
            budget = min(limits.max_entry_bytes, limits.max_total_bytes - total)
            try:
                with archive.open(info) as stream:
                    data = stream.read(budget + 1)  # headers can lie: never trust file_size alone
            except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, NotImplementedError) as exc:
                yield Entry(info.filename, status="error", message=f"cannot read this entry ({_one_line(exc)})")
                continue
            if len(data) > budget:
                yield Entry(info.filename, status="refused", message="unpacks to more than the size limit (zip bomb?)")
                continue
            total += len(data)
            if data.startswith(_ARCHIVE_MAGIC):
                yield Entry(info.filename, status="refused", message="nested archives are not opened")
                continue
            yield Entry(info.filename, data)


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
    if PurePosixPath(name).suffix.lower() in ARCHIVE_SUFFIXES:
        return "nested archives are not opened"
    if info.file_size > 1_000_000 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return "compression ratio too high (zip bomb?)"
    if info.file_size > limits.max_entry_bytes:
        return f"larger than {limits.max_entry_bytes / 1e6:.0f} MB unpacked"
    return ""


def _is_metadata(name: str) -> bool:
    return name.startswith("__MACOSX/") or PurePosixPath(name).name in _METADATA


# ---------------------------------------------------------------- reading files and folders (CLI)


def iter_path_entries(paths: Iterable[Path]) -> tuple[int, Iterator[Entry]]:
    """Photos and folders (recursively) as entries named relative to what was given."""
    files: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            files += [
                (f"{path.name}/{p.relative_to(path).as_posix()}", p) for p in sorted(path.rglob("*")) if p.is_file()
            ]
        else:
            files.append((path.name, path))
    return len(files), (_read_file(name, path) for name, path in files)


def _read_file(name: str, path: Path) -> Entry:
    try:
        return Entry(name, path.read_bytes())
    except OSError as exc:
        return Entry(name, status="error", message=f"cannot read ({exc.strerror or exc})")


# ---------------------------------------------------------------- where results go


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


# ---------------------------------------------------------------- the loop


class ResultWriter:
    """Turns entries + analyses into annotated photos, report rows, COCO predictions and a summary."""

    def __init__(self, sink: Sink, settings: Settings) -> None:
        self.sink, self.settings = sink, settings
        self.rows: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.categories: dict[int, str] = {}
        self.used_names: set[str] = set()
        self.started = time.monotonic()

    def add_failure(self, entry: Entry) -> None:
        self.rows.append(_row(entry.name, status=entry.status, message=entry.message))

    def add_analysis(self, name: str, analysis: Analysis) -> None:
        out_name = self._unique(_annotated_name(name))
        self.sink.write(out_name, _encode(annotate(analysis), out_name))
        image_id = len(self.images) + 1
        width, height = analysis.size
        self.images.append({"id": image_id, "file_name": out_name, "width": width, "height": height})
        for detection in analysis.detections:
            self.categories[detection.class_id] = detection.label
            self.annotations.append(_coco_annotation(len(self.annotations) + 1, image_id, detection))
        values = {k: v for k, v in analysis.to_dict().items() if k in REPORT_COLUMNS}
        values["damage_classes"] = ";".join(values["damage_classes"])
        self.rows.append(_row(name, annotated_file=out_name, status="ok", message=analysis.summary, **values))

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.used_names:  # duplicate names in a zip keep both photos
            n += 1
            stem, dot, suffix = name.rpartition(".")
            candidate = f"{stem} ({n}).{suffix}" if dot else f"{name} ({n})"
        self.used_names.add(candidate)
        return candidate

    def coco(self) -> dict[str, Any]:
        categories = [{"id": cid + 1, "name": label} for cid, label in sorted(self.categories.items())]
        return {"images": self.images, "annotations": self.annotations, "categories": categories}

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.rows if r["status"] == "ok"]
        failed = [r for r in self.rows if r["status"] != "ok"]
        classes = Counter(c for r in ok for c in str(r["damage_classes"]).split(";") if c)
        return {
            "files": len(self.rows),
            "photos_analyzed": len(ok),
            "cars": sum(r["is_car"] is True for r in ok),
            "damaged_cars": sum(r["is_damaged"] is True for r in ok),
            "damage_instances": sum(int(r["damage_count"] or 0) for r in ok),
            "damage_classes": dict(classes.most_common()),
            "not_processed": len(failed),
            "failures": [{"file": r["file"], "status": r["status"], "message": r["message"]} for r in failed],
            "seconds": round(time.monotonic() - self.started, 2),
            "models": {role: str(ref) for role, ref in self.settings.model_refs().items()},
        }

    def finish(self) -> None:
        """Write report.csv, predictions.json and summary.json into the sink."""
        self.sink.write("report.csv", _csv(self.rows))
        self.sink.write("predictions.json", json.dumps(self.coco()).encode())
        self.sink.write("summary.json", json.dumps(self.summary(), indent=2, ensure_ascii=False).encode())


def process_entries(
    entries: Iterable[Entry],
    total: int,
    writer: ResultWriter,
    settings: Settings,
    progress: Progress | None = None,
) -> None:
    """Decode, analyse in batches, and hand every entry to the writer, in the input's order.

    One bad photo never stops the rest. Entries that are not photos wait in the batch with the photos,
    so report rows keep the zip's order.
    """
    pending: list[tuple[str, Image.Image | Entry]] = []
    done = 0

    def flush() -> None:
        nonlocal done
        photos = [(name, item) for name, item in pending if isinstance(item, Image.Image)]
        analysed = iter(_analyze_isolated(photos, settings))  # in the order of `photos`
        for name, item in pending:
            outcome = next(analysed)[1] if isinstance(item, Image.Image) else item
            if isinstance(outcome, Analysis):
                writer.add_analysis(name, outcome)
            elif isinstance(outcome, Entry):
                writer.add_failure(outcome)
            else:
                writer.add_failure(Entry(name, status="error", message=outcome))
            done += 1
            if progress:
                progress(done, total, name)
        pending.clear()

    for entry in entries:
        pending.append((entry.name, _decode_entry(entry, settings) if entry.status == "ok" else entry))
        if sum(isinstance(item, Image.Image) for _, item in pending) >= settings.batch_size:
            flush()
    flush()


def _decode_entry(entry: Entry, settings: Settings) -> Image.Image | Entry:
    suffix = PurePosixPath(entry.name).suffix.lower()
    try:
        return load_image(entry.data or b"", settings.max_pixels)
    except InputError as exc:
        message = str(exc).removeprefix("upload: ")
        if suffix not in IMAGE_SUFFIXES and "not a photo" in message:
            return Entry(entry.name, status="skipped", message=f"not a photo ({suffix or 'no extension'} file)")
        return Entry(entry.name, status="error", message=message)


def _analyze_isolated(batch: list[tuple[str, Image.Image]], settings: Settings) -> list[tuple[str, Analysis | str]]:
    """Analyse a batch; if it fails, photo by photo, so one bad photo costs only its own row."""
    if not batch:
        return []
    try:
        return list(zip([n for n, _ in batch], analyze_decoded([p for _, p in batch], settings)))
    except ModelLoadError:
        raise  # nothing can be analysed: the caller reports it once
    except Exception:
        if len(batch) == 1:
            return [(batch[0][0], "analysis failed for this photo")]
    results: list[tuple[str, Analysis | str]] = []
    for item in batch:
        results.extend(_analyze_isolated([item], settings))
    return results


# ---------------------------------------------------------------- the public entry point


def process_zip(
    zip_path: str | Path,
    out_dir: str | Path,
    settings: Settings | None = None,
    progress: Progress | None = None,
    limits: ZipLimits = ZipLimits(),
) -> BatchResult:
    """Analyse every photo of a zip; write ``<zip name>-results.zip`` into ``out_dir``.

    The archive holds the annotated photos under their original relative names, ``report.csv``
    (one row per entry), ``predictions.json`` (COCO, RLE masks) and ``summary.json``. It appears
    only when complete: a failed or cancelled job leaves no half-written archive behind.
    """
    settings = settings or Settings.from_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total, entries = iter_zip_entries(zip_path, limits)
    final = out_dir / f"{_safe_stem(Path(zip_path).stem)}-results.zip"
    fd, partial_name = tempfile.mkstemp(prefix=".partial-", suffix=".zip", dir=out_dir)
    os.close(fd)
    partial = Path(partial_name)
    try:
        sink = ZipSink(partial)
        writer = ResultWriter(sink, settings)
        try:
            process_entries(entries, total, writer, settings, progress)
            writer.finish()
        finally:
            sink.close()
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return BatchResult(final, writer.rows, writer.summary(), writer.coco())


# ---------------------------------------------------------------- small helpers


def _row(file: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(REPORT_COLUMNS, "")
    row.update(file=file, **values)
    return row


def _annotated_name(name: str) -> str:
    """Same relative name; formats we cannot write back (GIF, TIFF, ...) become PNG."""
    clean = name.replace("\\", "/").lstrip("/")
    return clean if PurePosixPath(clean).suffix.lower() in _SAVE_FORMATS else f"{clean}.png"


def _encode(image: Image.Image, name: str) -> bytes:
    buffer = io.BytesIO()
    fmt = _SAVE_FORMATS.get(PurePosixPath(name).suffix.lower(), "PNG")
    options = {"quality": 90} if fmt in {"JPEG", "WEBP"} else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _coco_annotation(ann_id: int, image_id: int, detection) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(detection.mask.astype(np.uint8)))
    x1, y1, x2, y2 = detection.box
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": detection.class_id + 1,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": float(mask_utils.area(rle)),
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "score": round(detection.score, 5),
        "iscrowd": 0,
    }


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_safe(v) for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def _csv_safe(value: Any) -> Any:
    """Names like '=cmd|...' must not run as formulas when the report is opened in a spreadsheet."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _safe_stem(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80].strip("._")
    return cleaned or "photos"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__
