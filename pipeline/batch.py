"""Running entries through the cascade in batches: one row per entry, in the input's order, whatever happens.

A fault while reading, decoding, analysing, drawing, encoding or writing one entry becomes that entry's row and
never stops the others. Photos are decoded, analysed and written one batch at a time, so memory stays flat
however large the zip. A job stops early (the rest listed as not processed) when its time budget runs out or its
client goes away.
"""

from __future__ import annotations

import contextvars
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .analyze import analyze_photos
from .decode import ImageSource, Photo, load_photo
from .errors import CorruptPhotoError, InputError, ModelLoadError, NotAnImageError, UnsafeArchiveError
from .formats import has_photo_suffix, not_a_photo_message
from .report import ReportWriter, Summary
from .results import Analysis, ReportRow, Status, VehiclePhoto, VehicleResult, VehicleRow
from .settings import Settings
from .sinks import DirSink, ZipSink
from .vehicles import MAX_CSV_BYTES, Grouping, PartDamage, PhotoFacts, grouping_of, vehicle_row
from .zipsafe import Entries, Entry, ZipLimits, file_reader, open_paths, open_zip, read_head, read_zip_member

Progress = Callable[[int, int, str], None]  # (entries done, entries in all, current name)
MAX_VEHICLE_PHOTOS = 30  # analyze_vehicle: every angle of a car, and each photo's working copy stays in memory
T = TypeVar("T")
U = TypeVar("U")


@dataclass
class JobControl:
    """When a job stops before its end: a wall-clock budget, and whether anybody still waits for it."""

    seconds: float | None = None
    client_gone: Callable[[], bool] | None = None
    started: float = field(default_factory=time.monotonic)

    def stop_reason(self) -> str:
        """Why the job must stop now, or ''."""
        if self.client_gone is not None and self.client_gone():
            return "not processed: the job was cancelled (the client went away)"
        if self.seconds is not None and time.monotonic() - self.started > self.seconds:
            return f"not processed: the job's time budget ({self.seconds:g} s) ran out"
        return ""


@dataclass(frozen=True)
class BatchResult:
    """What ``process_zip`` (or the CLI) produced."""

    archive: Path | None
    rows: list[ReportRow]
    summary: Summary
    coco: dict[str, Any] = field(repr=False)

    @property
    def vehicles(self) -> list[VehicleRow]:
        """vehicles.csv's rows: one per vehicle, in the input's order."""
        return self.summary.vehicles


@dataclass
class Decoded:
    """An entry on its way: its decoded photo, or the row it gets instead."""

    name: str
    photo: Photo | None = None
    status: Status = Status.OK
    message: str = ""
    vehicle: str = ""


def run_entries(
    entries: Entries,
    writer: ReportWriter,
    settings: Settings,
    progress: Progress | None = None,
    control: JobControl | None = None,
) -> None:
    """Every entry through the cascade, in order, into the writer, three stages overlapping: a thread decodes the
    next batch and another runs the models on this one while this thread draws, encodes and writes the last one
    (the models, Pillow and numpy release the GIL for their work). At most a batch waits between stages, so
    memory stays flat however large the input."""
    control = control or JobControl()
    decoded = _threaded(_decoded_batches(entries.items, settings, control), lambda batch: batch)
    done = 0
    for batch, outcomes in _threaded(decoded, lambda batch: _analysed_batch(batch, settings, control)):
        for position, item in enumerate(batch):
            _write(writer, item, outcomes.get(position))
            done += 1
            if progress:
                progress(done, entries.count, item.name)
        writer.stopped = writer.stopped or next((i.message for i in batch if i.status == Status.NOT_PROCESSED), "")


def _decoded_batches(entries: Iterable[Entry], settings: Settings, control: JobControl) -> Iterator[list[Decoded]]:
    """Entries decoded (or turned into their rows) in order, cut after every ``batch_size`` photos."""
    batch: list[Decoded] = []
    for entry in entries:
        batch.append(_decoded(entry, settings, control))
        if sum(item.photo is not None for item in batch) >= settings.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _decoded(entry: Entry, settings: Settings, control: JobControl) -> Decoded:
    reason = control.stop_reason()
    if reason:
        item = Decoded(entry.name, status=Status.NOT_PROCESSED, message=reason)
    elif entry.read is None:
        item = Decoded(entry.name, status=entry.status, message=entry.message)
    else:
        item = decode_entry(entry, settings)
    item.vehicle = entry.vehicle
    return item


def _analysed_batch(
    batch: list[Decoded], settings: Settings, control: JobControl
) -> tuple[list[Decoded], dict[int, Analysis | str]]:
    """The batch and its photos' outcomes by position; photos the job stopped before become not processed."""
    positions = [i for i, item in enumerate(batch) if item.photo is not None]
    reason = control.stop_reason() if positions else ""
    if reason:
        return [_not_processed(item, reason) for item in batch], {}
    return batch, dict(zip(positions, analysed([batch[i].photo for i in positions], settings)))


def _not_processed(item: Decoded, reason: str) -> Decoded:
    if item.photo is None:
        return item
    return Decoded(item.name, status=Status.NOT_PROCESSED, message=reason, vehicle=item.vehicle)


def _write(writer: ReportWriter, item: Decoded, outcome: Analysis | str | None) -> None:
    if outcome is None:
        writer.add_failure(item.name, item.status, item.message, item.vehicle)
    elif isinstance(outcome, Analysis):
        writer.add_analysis(item.name, outcome, item.vehicle)
    else:
        writer.add_failure(item.name, Status.ERROR, outcome, item.vehicle)


def _threaded(items: Iterable[T], work: Callable[[T], U], depth: int = 1) -> Iterator[U]:
    """``work(item)`` for each item, in a thread of its own running at most ``depth`` results ahead, in order.
    The thread runs in a copy of the caller's context (gradio's request); its exception comes out here; leaving
    the loop early stops it."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                results.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set() or not put("item", work(item)):
                    return
            put("end", None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put("error", exc)
        finally:
            getattr(items, "close", lambda: None)()  # an upstream stage stops with this one

    thread = threading.Thread(target=contextvars.copy_context().run, args=(produce,), daemon=True)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def decode_entry(entry: Entry, settings: Settings) -> Decoded:
    """The entry's photo, or the row it gets: refused (unsafe), skipped (not a photo, by name and content) or
    error (a photo we cannot read, or any decoder fault)."""
    try:
        data = entry.read()  # type: ignore[misc]
        return Decoded(entry.name, load_photo(data, settings.limits))
    except UnsafeArchiveError as exc:
        return Decoded(entry.name, status=Status.REFUSED, message=str(exc))
    except CorruptPhotoError as exc:
        return Decoded(entry.name, status=Status.ERROR, message=_message(exc))
    except NotAnImageError as exc:
        if has_photo_suffix(entry.name):
            return Decoded(entry.name, status=Status.ERROR, message=_message(exc))
        return Decoded(entry.name, status=Status.SKIPPED, message=not_a_photo_message(entry.name))
    except InputError as exc:
        return Decoded(entry.name, status=Status.ERROR, message=_message(exc))
    except Exception as exc:  # a decoder fault on a hostile file costs its own row, never the zip
        return Decoded(entry.name, status=Status.ERROR, message=f"could not decode this photo ({type(exc).__name__})")


def _message(exc: Exception) -> str:
    return str(exc).removeprefix("upload: ")


def analysed(photos: list[Photo], settings: Settings) -> list[Analysis | str]:
    """Analyse a batch; if it fails, photo by photo, so one bad photo costs only its own row."""
    try:
        return list(analyze_photos(photos, settings))
    except ModelLoadError:
        raise  # nothing can be analysed: the caller reports it once
    except Exception as exc:
        if len(photos) == 1:
            return [f"analysis failed for this photo ({type(exc).__name__})"]
    return [outcome for photo in photos for outcome in analysed([photo], settings)]


def process_zip(
    zip_path: str | Path,
    out_dir: str | Path,
    settings: Settings | None = None,
    progress: Progress | None = None,
    limits: ZipLimits = ZipLimits(),
    control: JobControl | None = None,
) -> BatchResult:
    """Analyse every photo of a zip; write ``<zip name>-results.zip`` into ``out_dir``.

    The archive holds the annotated photos under their original relative names, ``report.csv`` (one row per
    entry), ``vehicles.csv`` (one row per vehicle: each top-level folder, unless the zip's vehicles.csv says
    otherwise), ``predictions.json`` (COCO, RLE masks), ``summary.json`` and ``report.html``. It appears only when
    complete: a failed or cancelled job leaves no half-written archive behind.
    """
    settings = settings or Settings.from_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = open_zip(zip_path, limits)
    grouping = grouping_of(entries.names, lambda name: read_zip_member(zip_path, name, MAX_CSV_BYTES))
    final = out_dir / f"{_safe_stem(Path(zip_path).stem)}-results.zip"
    fd, partial_name = tempfile.mkstemp(prefix=".partial-", suffix=".zip", dir=out_dir)
    os.close(fd)
    partial = Path(partial_name)
    try:
        sink = ZipSink(partial)
        writer = ReportWriter(sink, settings, [grouping.note] if grouping.note else [])
        try:
            run_entries(with_vehicles(entries, grouping), writer, settings, progress, control)
            writer.finish()
        finally:
            sink.close()
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return BatchResult(final, writer.rows, writer.summary(), writer.coco.to_dict())


def process_inputs(
    inputs: list[Path],
    out_dir: Path,
    settings: Settings,
    progress: Progress | None = None,
    limits: ZipLimits = ZipLimits(),
    control: JobControl | None = None,
) -> BatchResult:
    """Photos, folders and zips (entries named '<zip stem>/<entry>') into a folder: the command line's job."""
    opened = [open_input(path, limits) for path in inputs]
    writer = ReportWriter(DirSink(out_dir), settings, [note for _, note in opened if note])
    entries = Entries(sum(e.count for e, _ in opened), (entry for e, _ in opened for entry in e.items))
    run_entries(entries, writer, settings, progress, control)
    writer.finish()
    return BatchResult(None, writer.rows, writer.summary(), writer.coco.to_dict())


def open_input(path: Path, limits: ZipLimits = ZipLimits()) -> tuple[Entries, str]:
    """A photo, a folder or a zip as entries named as the report names them (a zip's under its stem), each with
    its vehicle (named likewise: 'claims/AB-123-CD'); and the note on its vehicles.csv ('' when it has none)."""
    if is_zip(path):
        entries = open_zip(path, limits)
        grouping = grouping_of(entries.names, lambda name: read_zip_member(path, name, MAX_CSV_BYTES))
        note = f"{path.name}: {grouping.note}" if grouping.note else ""
        return _prefixed(path.stem, with_vehicles(entries, grouping)), note
    entries = open_paths([path], limits)
    if not path.is_dir():
        return with_vehicles(entries, Grouping()), ""
    grouping = grouping_of(entries.names, lambda name: read_head(path.parent / name, MAX_CSV_BYTES), f"{path.name}/")
    return with_vehicles(entries, grouping), grouping.note


def with_vehicles(entries: Entries, grouping: Grouping) -> Entries:
    """The entries, each told its vehicle."""
    items = (replace(entry, vehicle=grouping.vehicle_of(entry.name)) for entry in entries.items)
    return Entries(entries.count, items, entries.names)


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _prefixed(prefix: str, entries: Entries) -> Entries:
    items = (replace(e, name=f"{prefix}/{e.name}", vehicle=f"{prefix}/{e.vehicle}") for e in entries.items)
    return Entries(entries.count, items, tuple(f"{prefix}/{name}" for name in entries.names))


def analyze_vehicle(
    photos: Sequence[ImageSource],
    settings: Settings | None = None,
    names: Sequence[str] | None = None,
    vehicle: str = "vehicle",
) -> VehicleResult:
    """One vehicle's photos (paths, bytes, PIL images or arrays) -> each photo's result and the vehicle's row
    (``names`` name the photos in it: by default a path's file name, else 'photo N'). A photo that cannot be read
    or analysed costs only its own result. Raises InputError for no photo or more than ``MAX_VEHICLE_PHOTOS``
    (their working copies stay in the result), ModelLoadError when a model cannot load."""
    settings = settings or Settings.from_env()
    if not photos or len(photos) > MAX_VEHICLE_PHOTOS:
        raise InputError(f"a vehicle takes 1 to {MAX_VEHICLE_PHOTOS} photos; {len(photos)} were given")
    names = list(names) if names is not None else [_source_name(photo, i) for i, photo in enumerate(photos)]
    if len(names) != len(photos):
        raise InputError(f"{len(names)} names for {len(photos)} photos")
    results: list[VehiclePhoto] = []
    size = max(1, settings.batch_size)
    for start in range(0, len(photos), size):  # one batch decoded at a time, as in a zip
        chunk = zip(names[start : start + size], photos[start : start + size])
        decoded = [decode_entry(_source_entry(name, photo), settings) for name, photo in chunk]
        results += _vehicle_photos(decoded, settings)
    facts = [_photo_facts(result, vehicle) for result in results]
    return VehicleResult(vehicle_row(vehicle, facts), tuple(results))


def _source_name(source: ImageSource, index: int) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else f"photo {index + 1}"


def _source_entry(name: str, source: ImageSource) -> Entry:
    """Paths are read with the zip entries' size limit; bytes, images and arrays go to the decoder as they are."""
    if isinstance(source, (str, Path)):
        return Entry(name, read=file_reader(Path(source), ZipLimits().max_entry_bytes))
    return Entry(name, read=lambda: source)  # type: ignore[arg-type, return-value] - load_photo takes them all


def _vehicle_photos(decoded: list[Decoded], settings: Settings) -> list[VehiclePhoto]:
    positions = [i for i, item in enumerate(decoded) if item.photo is not None]
    outcomes = dict(zip(positions, analysed([decoded[i].photo for i in positions], settings))) if positions else {}
    results = []
    for i, item in enumerate(decoded):
        outcome = outcomes.get(i)
        if isinstance(outcome, Analysis):
            results.append(VehiclePhoto(item.name, Status.OK, outcome.summary, outcome))
        else:
            status = Status.ERROR if outcome or item.status == Status.SKIPPED else item.status  # all meant as photos
            results.append(VehiclePhoto(item.name, status, outcome or item.message))
    return results


def _photo_facts(result: VehiclePhoto, vehicle: str) -> PhotoFacts:
    if result.analysis is None:
        return PhotoFacts.of(ReportRow(result.file, result.status, result.message), vehicle)
    damages = [PartDamage.of_detection(detection) for detection in result.analysis.detections]
    return PhotoFacts.of(ReportRow.of(result.file, "", result.analysis), vehicle, damages)


def _safe_stem(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80].strip("._")
    return cleaned or "photos"
