"""The Ray Data engine: the same analysis over a million photos, on a cluster, resumable.

    python -m pipeline INPUT... --out DIR --engine ray [--ray-address ADDRESS] [--actors N] [--batch-size B]

Inputs are listed on the driver (photos, folders, zips, and text / CSV / Parquet lists of paths or URIs that
pyarrow's file systems read: local, s3://, gs://, ...). Ray Data hands them in batches to a pool of actors that
read, decode (the local engine's limits and messages) and analyse them (models loaded once per actor, a batch
retried when its actor dies), so only the units and the result rows travel between processes, and streams the
rows back; the driver appends each batch to ``DIR/results.parquet/`` as its own file, so a killed run loses at
most the batches in flight and a rerun skips what is done. From the dataset it writes the local
engine's report.csv, vehicles.csv, predictions.json and summary.json: vehicles are grouped on the driver while
listing (as the local engine groups them) and their rows made from the results after the run, wherever each
photo was analysed. Only this module imports ray, and only when it runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import Decoded, analysed, decode_entry, is_zip, open_input
from .errors import UnsafeArchiveError
from .report import Coco, annotated_name, coco_prediction, encode, summarize, write_reports
from .results import REPORT_COLUMNS, ReportRow, Status
from .settings import Settings
from .sinks import DirSink, OutputNames
from .vehicles import PartDamage, PhotoFacts, vehicle_rows
from .zipsafe import Entry, ZipLimits, read_zip_entry

if TYPE_CHECKING:
    import pyarrow as pa

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


CPUS_PER_ACTOR = 2  # the default pool's share of the cluster's CPUs for each actor (actors_for)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray runtime sized to this machine
    actors: int | None = None  # None: one for every CPUS_PER_ACTOR CPUs of the cluster (actors_for)
    batch_size: int = 8
    gpus_per_actor: float = 0.0
    save_images: bool = False
    calls_per_actor: int = 2  # batches an actor holds at once: one in its models, the next one decoding


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
    """The cascade in one actor process: the models loaded once, at start, with as many threads as CPUs given.
    Each call reads and decodes its units here (the local engine's limits and messages): only the units and the
    result rows travel between processes, never decoded photos."""

    def __init__(self, settings: Settings, limits: ZipLimits, out_dir: str, threads: int) -> None:
        os.environ["CAR_DAMAGE_THREADS"] = str(threads)  # OpenVINO's share of this actor's CPUs
        os.environ["OMP_NUM_THREADS"] = str(threads)  # PyTorch's, should a model need it (imported only then)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        from .analyze import load_models

        self.settings, self.limits, self.sink = settings, limits, DirSink(Path(out_dir))
        # The models take one batch at a time, as in the local engine (one batch's working images in memory at
        # once; OpenVINO inferences are serialised process-wide too, classifiers.OPENVINO_CALLS, where the
        # deadlock of two threads in one compiled model is handled). Reading, decoding and making rows overlap the
        # other call's models.
        self.models_lock = threading.Lock()
        problems = [str(error) for error in load_models(settings).values() if error]
        if problems:
            raise RuntimeError(problems[0])

    def __call__(self, batch: pa.Table) -> pa.Table:
        """A table of units -> a table of their result rows (results.parquet's schema), in order."""
        import pyarrow as pa

        rows = batch.to_pylist()
        decoded = {i: self._decoded(row) for i, row in enumerate(rows) if not row["status"]}
        todo = [i for i, item in decoded.items() if item.photo is not None]
        with self.models_lock:
            outcomes = dict(zip(todo, analysed([decoded[i].photo for i in todo], self.settings))) if todo else {}
        out = [self._result(row, decoded.get(i), outcomes.get(i)) for i, row in enumerate(rows)]
        return pa.Table.from_pylist(out, schema=result_schema())

    def _decoded(self, row: dict[str, Any]) -> Decoded:
        return decode_entry(Entry(row["name"], read=lambda: _unit_bytes(row, self.limits)), self.settings)

    def _result(self, row: dict[str, Any], decoded: Decoded | None, outcome) -> dict[str, Any]:
        detections = []
        if outcome is None:  # decided while listing, or not decoded
            status, message = (decoded.status, decoded.message) if decoded else (Status(row["status"]), row["message"])
            report = ReportRow(row["name"], status, message)
        elif isinstance(outcome, str):
            report = ReportRow(row["name"], Status.ERROR, outcome)
        else:
            if row["annotated_file"]:
                from .draw import annotate

                self.sink.write(row["annotated_file"], encode(annotate(outcome), Path(row["annotated_file"]).suffix)[0])
            report = ReportRow.of(row["name"], row["annotated_file"], outcome)
            detections = [coco_prediction(d) for d in outcome.detections]
        extra = {"key": row["key"], "detections": json.dumps(detections), "worker_pid": os.getpid()}
        return extra | {"worker_rss_mb": _rss_mb()} | report.to_dict()


def _unit_bytes(row: dict[str, Any], limits: ZipLimits) -> bytes:
    if row["entry"]:
        return read_zip_entry(row["source"], int(row["entry"]), limits)
    data = _read_uri(row["source"], limits.max_entry_bytes)
    if len(data) > limits.max_entry_bytes:
        raise UnsafeArchiveError(f"larger than {limits.max_entry_bytes / 1e6:.0f} MB")
    return data


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


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
    import pyarrow.parquet as pq
    from tqdm import tqdm

    dataset = build_dataset(todo, out_dir, settings, options, limits)
    results, run = out_dir / RESULTS, uuid.uuid4().hex[:8]
    results.mkdir(exist_ok=True)
    with tqdm(total=len(todo), desc="photos", unit="photo") as bar:
        for seq, table in enumerate(dataset.iter_batches(batch_size=None, batch_format="pyarrow")):
            partial = results / f".part-{run}-{seq:06d}.parquet"
            pq.write_table(table, partial)
            os.replace(partial, results / f"part-{run}-{seq:06d}.parquet")
            bar.update(table.num_rows)


def build_dataset(todo: list[Unit], out_dir: Path, settings: Settings, options: RayOptions, limits: ZipLimits):
    """units -> the cascade in a pool of actors that read, decode and analyse them (Ray restarts a dead actor and
    retries its batches). A block per batch, so each actor call takes its units straight from the listing; each
    actor runs ``calls_per_actor`` calls at once, so one call's reading and decoding overlap another's models."""
    import ray

    start_ray(options)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver's own bar counts photos
    resources = ray.cluster_resources()  # a call to the cluster's control store: once
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    actors = options.actors or actors_for(cpus, gpus / options.gpus_per_actor if options.gpus_per_actor else None)
    actor_cpus = max(0.5, int(10 * cpus / actors) / 10)
    units = ray.data.from_items(
        [asdict(unit) for unit in todo], override_num_blocks=-(-len(todo) // options.batch_size)
    )
    constructor = {
        "settings": settings,
        "limits": limits,
        "out_dir": str(out_dir),
        "threads": max(1, round(actor_cpus)),
    }
    pool = ray.data.ActorPoolStrategy(
        size=actors,
        max_concurrent_calls_per_actor=options.calls_per_actor,
        enable_true_multi_threading=options.calls_per_actor > 1,
    )
    return units.map_batches(
        CascadeActor,
        batch_format="pyarrow",
        batch_size=options.batch_size,
        fn_constructor_kwargs=constructor,
        compute=pool,
        num_cpus=actor_cpus,
        num_gpus=options.gpus_per_actor or None,
    )


def actors_for(cpus: float, gpu_slots: float | None = None) -> int:
    """The default pool: an actor for every CPUS_PER_ACTOR CPUs, and no more than the GPUs can hold when each
    actor asks for some (``gpu_slots``: the cluster's GPUs / --gpus-per-actor; an actor that cannot get its GPU
    would wait forever). Why two CPUs: an actor of two threads runs the models as the local engine runs them on two
    cores (the segmenters' stream copies, the same kernels), so its rows are the local engine's to the digit;
    actors of one thread each wrote other instance counts or parts on 15 of 2,501 photos, near the thresholds
    (docs/scale.md), and were no faster."""
    actors = max(1, int(cpus // CPUS_PER_ACTOR))
    return actors if gpu_slots is None else max(1, min(actors, int(gpu_slots)))


def start_ray(options: RayOptions) -> None:
    """The user's cluster (``--ray-address``, else Ray's own RAY_ADDRESS: this package and the offline / cache env
    vars go to its workers as a runtime env), or a new local runtime sized to this machine. A local runtime's
    workers are started by it and inherit this process's environment, so they need no runtime env, only this
    package's folder on PYTHONPATH: a runtime env would make each worker wait for its package to be unpacked and
    keep the runtime from using the workers it starts ahead (seconds of a run's start)."""
    import ray

    if ray.is_initialized():
        return
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        runtime_env = {"py_modules": [str(Path(__file__).parent)], "env_vars": env}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return
    with _this_package_on_pythonpath():  # for the runtime's processes, started now
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)


@contextlib.contextmanager
def _this_package_on_pythonpath() -> Iterator[None]:
    """PYTHONPATH with the folder that holds this package first, for the processes started meanwhile; then as
    it was (this process's later children need not have it)."""
    saved = os.environ.get("PYTHONPATH")
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(path for path in (root, saved) if path)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


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
