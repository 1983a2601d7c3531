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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .analyze import analyze_photos
from .decode import Photo, load_photo
from .errors import CorruptPhotoError, InputError, ModelLoadError, NotAnImageError, UnsafeArchiveError
from .formats import has_photo_suffix, not_a_photo_message
from .report import ReportWriter, Summary
from .results import Analysis, ReportRow, Status
from .settings import Settings
from .sinks import DirSink, ZipSink
from .zipsafe import Entries, Entry, ZipLimits, open_paths, open_zip

Progress = Callable[[int, int, str], None]  # (entries done, entries in all, current name)
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


@dataclass
class Decoded:
    """An entry on its way: its decoded photo, or the row it gets instead."""

    name: str
    photo: Photo | None = None
    status: Status = Status.OK
    message: str = ""


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
        reason = control.stop_reason()
        if reason:
            batch.append(Decoded(entry.name, status=Status.NOT_PROCESSED, message=reason))
        elif entry.read is None:
            batch.append(Decoded(entry.name, status=entry.status, message=entry.message))
        else:
            batch.append(decode_entry(entry, settings))
        if sum(item.photo is not None for item in batch) >= settings.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    return Decoded(item.name, status=Status.NOT_PROCESSED, message=reason) if item.photo is not None else item


def _write(writer: ReportWriter, item: Decoded, outcome: Analysis | str | None) -> None:
    if outcome is None:
        writer.add_failure(item.name, item.status, item.message)
    elif isinstance(outcome, Analysis):
        writer.add_analysis(item.name, outcome)
    else:
        writer.add_failure(item.name, Status.ERROR, outcome)


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
    entry), ``predictions.json`` (COCO, RLE masks) and ``summary.json``. It appears only when complete: a
    failed or cancelled job leaves no half-written archive behind.
    """
    settings = settings or Settings.from_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = open_zip(zip_path, limits)
    final = out_dir / f"{_safe_stem(Path(zip_path).stem)}-results.zip"
    fd, partial_name = tempfile.mkstemp(prefix=".partial-", suffix=".zip", dir=out_dir)
    os.close(fd)
    partial = Path(partial_name)
    try:
        sink = ZipSink(partial)
        writer = ReportWriter(sink, settings)
        try:
            run_entries(entries, writer, settings, progress, control)
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
    writer = ReportWriter(DirSink(out_dir), settings)
    opened = [open_zip(p, limits) if _is_zip(p) else open_paths([p], limits) for p in inputs]
    named = [_prefixed(p.stem, e.items) if _is_zip(p) else e.items for p, e in zip(inputs, opened)]
    entries = Entries(sum(e.count for e in opened), (entry for items in named for entry in items))
    run_entries(entries, writer, settings, progress, control)
    writer.finish()
    return BatchResult(None, writer.rows, writer.summary(), writer.coco.to_dict())


def _is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _prefixed(prefix: str, entries: Iterable[Entry]) -> Iterator[Entry]:
    for entry in entries:
        yield Entry(f"{prefix}/{entry.name}", entry.read, entry.status, entry.message)


def _safe_stem(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80].strip("._")
    return cleaned or "photos"
