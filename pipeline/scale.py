"""The Ray Data engine: the same analysis over a million photos, on a cluster, resumable.

    python -m pipeline INPUT... --out DIR --engine ray [--ray-address ADDRESS] [--actors N] [--batch-size B]

Inputs are listed on the driver (photos, folders, zips, and text / CSV / Parquet lists of paths or URIs that
pyarrow's file systems read: local, s3://, gs://, ...). Ray Data decodes them in tasks (the local engine's limits
and messages), runs the cascade in a pool of actors (models loaded once per actor, retried when an actor dies)
and streams the rows back; the driver appends each batch to ``DIR/results.parquet/`` as its own file, so a killed
run loses at most the batches in flight and a rerun skips what is done. From the dataset it writes the local
engine's report.csv, vehicles.csv, predictions.json and summary.json: vehicles are grouped on the driver while
listing (as the local engine groups them) and their rows made from the results after the run, wherever each
photo was analysed. Only this module imports ray, and only when it runs.
"""

from __future__ import annotations

import csv
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .batch import Decoded, analysed, decode_entry, is_zip, open_input
from .errors import UnsafeArchiveError
from .report import Coco, annotated_name, coco_prediction, encode, summarize, write_reports
from .results import REPORT_COLUMNS, ReportRow, Status
from .settings import Settings
from .sinks import DirSink, OutputNames
from .vehicles import PartDamage, PhotoFacts, vehicle_rows
from .zipsafe import Entry, ZipLimits, read_zip_entry

RESULTS = "results.parquet"
LIST_SUFFIXES = {".txt": "text", ".csv": "csv", ".parquet": "parquet"}
# Env vars the workers need as the driver has them: offline hubs, caches, model references.
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HOME", "YOLO_OFFLINE", "YOLO_CONFIG_DIR",
              "YOLO_AUTOINSTALL", "CAR_DAMAGE_CACHE")  # fmt: skip


@dataclass(frozen=True)
class Unit:
    """One input: where it is, the name the report gives it, and its identity for resuming (path + size + mtime,
    or the URI of an object store's immutable key)."""

    key: str
    name: str
    source: str  # a path or URI (a zip's own path for its entries)
    entry: str = ""  # the position of the zip entry among the zip's files, or ''
    status: str = ""  # a row decided while listing (a refused zip entry), or '' to read
    message: str = ""
    annotated_file: str = ""  # where its annotated photo goes, with --save-images
    vehicle: str = ""  # the vehicle it belongs to (a listed path or URI is a vehicle of its own)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray runtime sized to this machine
    actors: int = 2
    batch_size: int = 8
    gpus_per_actor: float = 0.0
    save_images: bool = False


# ---------------------------------------------------------------- listing (driver)


def list_units(inputs: list[str], limits: ZipLimits, save_images: bool) -> tuple[list[Unit], list[str]]:
    """Every input as a unit, in order, and the notes on the inputs' vehicles.csv files; output names claimed once
    for all, so reruns name alike."""
    listed = [_units_of(given, limits) for given in inputs]
    units = [unit for input_units, _ in listed for unit in input_units]
    if save_images:
        names = OutputNames(reserved=("report.csv", "vehicles.csv", "predictions.json", "summary.json", RESULTS))
        units = [replace(u, annotated_file=names.claim(annotated_name(u.name))) if not u.status else u for u in units]
    return units, [note for _, note in listed if note]


def _units_of(given: str, limits: ZipLimits) -> tuple[list[Unit], str]:
    """One input's units (each with its vehicle, grouped as the local engine groups them) and its note."""
    path = Path(given)
    if "://" in given or path.suffix.lower() in LIST_SUFFIXES:
        return [_uri_unit(item) for item in read_list(given)], ""
    entries, note = open_input(path, limits)  # listed by name: no photo is read here
    if is_zip(path):
        return list(_zip_units(path, entries.items)), note
    local = (lambda entry: path.parent / entry.name) if path.is_dir() else (lambda entry: path)
    return [replace(_local_unit(local(entry), entry.name), vehicle=entry.vehicle) for entry in entries.items], note


def _zip_units(path: Path, entries: Iterator[Entry]) -> Iterator[Unit]:
    stat = path.stat()
    for index, entry in enumerate(entries):
        raw = entry.name.removeprefix(f"{path.stem}/")  # the key as earlier runs wrote it
        key = f"{path.resolve()}::{index}:{raw}@{stat.st_size}:{stat.st_mtime_ns}"
        source = str(path.resolve())
        yield Unit(key, entry.name, source, str(index), _status(entry), entry.message, vehicle=entry.vehicle)


def _status(entry: Entry) -> str:
    return "" if entry.read is not None else str(entry.status)


def _local_unit(path: Path, name: str) -> Unit:
    stat = path.stat()
    return Unit(f"{path.resolve()}@{stat.st_size}:{stat.st_mtime_ns}", name, str(path.resolve()))


def _uri_unit(item: str) -> Unit:
    if "://" not in item and Path(item).is_file():
        return replace(_local_unit(Path(item), item), vehicle=item)
    return Unit(item, item, item, vehicle=item)


def read_list(source: str) -> list[str]:
    """Paths or URIs from a text file (one a line), a CSV or a Parquet file (the 'path' column, else the first)."""
    kind = LIST_SUFFIXES.get(Path(source.split("?")[0]).suffix.lower())
    if kind is None:  # a URI of one photo
        return [source]
    if kind == "text":
        return [line.strip() for line in _read_uri(source, 1 << 30).decode().splitlines() if line.strip()]
    if kind == "csv":
        rows = list(csv.reader(_read_uri(source, 1 << 30).decode().splitlines()))
        column = rows[0].index("path") if rows and "path" in rows[0] else 0
        return [row[column] for row in rows[1:] if row and row[column]]
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    return [str(v) for v in table.column("path" if "path" in table.column_names else 0).to_pylist() if v]


def _read_uri(uri: str, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of a local path or any URI pyarrow's file systems read."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
    with filesystem.open_input_stream(path) as stream:
        return stream.read(limit + 1)


# ---------------------------------------------------------------- decoding (tasks)


def decode_row(row: dict[str, Any], settings: Settings, limits: ZipLimits) -> dict[str, Any]:
    """A unit -> its working image (uint8 array) and original size, or the row it gets instead."""
    out = {**row, "image": np.zeros((0, 0, 3), np.uint8), "width": 0, "height": 0}
    if row["status"]:
        return out
    decoded: Decoded = decode_entry(Entry(row["name"], read=lambda: _unit_bytes(row, limits)), settings)
    if decoded.photo is None:
        return out | {"status": str(decoded.status), "message": decoded.message}
    width, height = decoded.photo.size
    return out | {"image": np.asarray(decoded.photo.image), "width": width, "height": height}


def _unit_bytes(row: dict[str, Any], limits: ZipLimits) -> bytes:
    if row["entry"]:
        return read_zip_entry(row["source"], int(row["entry"]), limits)
    data = _read_uri(row["source"], limits.max_entry_bytes)
    if len(data) > limits.max_entry_bytes:
        raise UnsafeArchiveError(f"larger than {limits.max_entry_bytes / 1e6:.0f} MB")
    return data


# ---------------------------------------------------------------- the cascade (actors)

_TYPES = {"str": "string", "bool | None": "bool", "float | None": "float64", "int | None": "int64", "Status": "string"}


def result_schema():
    """results.parquet's columns: the report's, the detections (COCO predictions, RLE masks, as JSON), and which
    worker made the row (its pid and RSS)."""
    import pyarrow as pa

    columns = [(f.name, _TYPES[str(f.type)]) for f in fields(ReportRow)]
    extra = [("key", "string"), ("detections", "string"), ("worker_pid", "int64"), ("worker_rss_mb", "float64")]
    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in [*extra, *columns]])


class CascadeActor:
    """The cascade in one actor process: the models loaded once, at start, with as many threads as CPUs given."""

    def __init__(self, settings: Settings, out_dir: str, threads: int) -> None:
        import torch

        os.environ["CAR_DAMAGE_THREADS"] = str(threads)  # OpenVINO's share of this actor's CPUs
        torch.set_num_threads(threads)
        from .analyze import load_models

        self.settings, self.sink = settings, DirSink(Path(out_dir))
        problems = [str(error) for error in load_models(settings).values() if error]
        if problems:
            raise RuntimeError(problems[0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from PIL import Image

        from .decode import Photo

        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        todo = [i for i, row in enumerate(rows) if not row["status"]]
        photos = [
            Photo(Image.fromarray(rows[i]["image"]), (int(rows[i]["width"]), int(rows[i]["height"]))) for i in todo
        ]
        outcomes = dict(zip(todo, analysed(photos, self.settings)))
        out = [self._result(row, outcomes.get(i)) for i, row in enumerate(rows)]
        return {name: [row[name] for row in out] for name in result_schema().names}

    def _result(self, row: dict[str, Any], outcome) -> dict[str, Any]:
        import psutil

        detections = []
        if outcome is None:
            report = ReportRow(row["name"], Status(row["status"]), row["message"])
        elif isinstance(outcome, str):
            report = ReportRow(row["name"], Status.ERROR, outcome)
        else:
            if row["annotated_file"]:
                from .draw import annotate

                self.sink.write(row["annotated_file"], encode(annotate(outcome), Path(row["annotated_file"]).suffix)[0])
            report = ReportRow.of(row["name"], row["annotated_file"], outcome)
            detections = [coco_prediction(d) for d in outcome.detections]
        rss = psutil.Process().memory_info().rss / 2**20
        extra = {
            "key": row["key"],
            "detections": json.dumps(detections),
            "worker_pid": os.getpid(),
            "worker_rss_mb": rss,
        }
        return extra | report.to_dict()


# ---------------------------------------------------------------- the run (driver)


def run_ray(inputs: list[str], out_dir: Path, settings: Settings, options: RayOptions, limits: ZipLimits = ZipLimits()):
    """List, skip what results.parquet already holds, run the rest through Ray Data, then write the reports."""
    from .batch import BatchResult

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    units, notes = list_units(inputs, limits, options.save_images)
    done = done_keys(out_dir / RESULTS)
    todo = [unit for unit in units if unit.key not in done and unit.key]
    if todo:
        _stream_results(todo, out_dir, settings, options, limits)
    rows, coco, photos = collect(units, out_dir / RESULTS)
    models = {role: ref.public_name for role, ref in settings.models.refs().items()}
    summary = summarize(rows, models, time.monotonic() - started, "", vehicle_rows(photos), notes)
    write_reports(DirSink(out_dir), rows, coco, summary)
    return BatchResult(None, rows, summary, coco.to_dict())


def done_keys(results: Path) -> set[str]:
    """The inputs a previous run into the same folder finished."""
    if not results.is_dir() or not any(results.glob("*.parquet")):
        return set()
    import pyarrow.dataset as pads

    return set(pads.dataset(str(results), format="parquet").to_table(columns=["key"]).column("key").to_pylist())


def _stream_results(todo: list[Unit], out_dir: Path, settings: Settings, options: RayOptions, limits: ZipLimits):
    """Ray Data does the work; each batch that comes back is written at once, as its own file (written under a
    temporary name, then renamed: a killed run leaves only whole files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    dataset = build_dataset(todo, out_dir, settings, options, limits)
    results, run = out_dir / RESULTS, uuid.uuid4().hex[:8]
    results.mkdir(exist_ok=True)
    with tqdm(total=len(todo), desc="photos", unit="photo") as bar:
        for seq, batch in enumerate(dataset.iter_batches(batch_size=None, batch_format="pyarrow")):
            table = pa.Table.from_pylist(batch.to_pylist(), schema=result_schema())
            partial = results / f".part-{run}-{seq:06d}.parquet"
            pq.write_table(table, partial)
            os.replace(partial, results / f"part-{run}-{seq:06d}.parquet")
            bar.update(table.num_rows)


def build_dataset(todo: list[Unit], out_dir: Path, settings: Settings, options: RayOptions, limits: ZipLimits):
    """units -> decode (tasks) -> the cascade (a pool of actors; Ray restarts a dead actor and retries its batch)."""
    import ray

    start_ray(options)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver's own bar counts photos
    cpus = float(ray.cluster_resources().get("CPU", 1))
    actor_cpus = max(0.5, int(10 * (cpus - 0.2) / options.actors) / 10)  # room for the decoding tasks
    dataset = ray.data.from_items(
        [asdict(unit) for unit in todo], override_num_blocks=max(1, len(todo) // options.batch_size)
    )
    dataset = dataset.map(decode_row, fn_kwargs={"settings": settings, "limits": limits}, num_cpus=0.1)
    return dataset.map_batches(
        CascadeActor,
        fn_constructor_kwargs={"settings": settings, "out_dir": str(out_dir), "threads": max(1, round(actor_cpus))},
        batch_size=options.batch_size,
        concurrency=options.actors,
        num_cpus=actor_cpus,
        num_gpus=options.gpus_per_actor or None,
    )


def start_ray(options: RayOptions) -> None:
    """The user's cluster (``--ray-address``), or a local runtime sized to this machine; this package and the
    offline / cache env vars go to the workers."""
    import ray

    if ray.is_initialized():
        return
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    runtime_env = {"py_modules": [str(Path(__file__).parent)], "env_vars": env}
    if options.address:
        ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)


def collect(units: list[Unit], results: Path) -> tuple[list[ReportRow], Coco, list[PhotoFacts]]:
    """One row per input, in the inputs' order (the last run's row for an input done twice), the COCO file, and
    what each vehicle's row is made of."""
    import pyarrow.dataset as pads

    table = pads.dataset(str(results), format="parquet").to_table() if done_keys(results) else None
    found = {row["key"]: row for row in (table.to_pylist() if table is not None else [])}
    rows, coco, photos = [], Coco(), []
    for unit in units:
        row = found.get(unit.key)
        if row is None:
            rows.append(ReportRow(unit.name, Status.NOT_PROCESSED, "not processed: the run ended before it"))
            photos.append(PhotoFacts.of(rows[-1], unit.vehicle))
            continue
        report = ReportRow(**{name: row[name] for name in REPORT_COLUMNS} | {"status": Status(row["status"])})
        rows.append(report)
        detections = json.loads(row["detections"]) if report.status == Status.OK else []
        photos.append(PhotoFacts.of(report, unit.vehicle, [PartDamage.of_coco(d) for d in detections]))
        if report.status == Status.OK:
            size = (report.width, report.height)
            coco.add(report.annotated_file or report.file, size, detections, unit.vehicle)
    return rows, coco, photos
