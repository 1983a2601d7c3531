"""python -m bench.scale: the command line's local engine vs its Ray engine on the same photos, same run.

    python -m bench.scale [--photos 2500] [--models PROFILE | hub] [--actors N] [--batch-size 8] [--rounds 1]
                          [--json scale.json]

Photos: held-out-ish photos of ../shared/data, set after set until there are enough (vds-severity's val split,
web-whole-cars, lensor-damage-coco, dsmlr-carparts, yb-damaged-parts-yolo's valid split, whole-cars-extra,
imagenet-sample), picked evenly over the sets used, plus one broken file; generated photos without ../shared.
Models: the shipped release (models/profile.toml) by default, a trained profile, or ``hub``: the benchmark's
full-size Hub architectures (bench.models; random weights when the Hub's are not cached).
Each engine runs in a fresh Python process doing what ``python -m pipeline FOLDER --out DIR [--engine ray]``
does, timed from that process's start to its exit: imports, model loading and, for Ray, starting and stopping
the local Ray runtime are counted. With --rounds the engines alternate (a busy machine's noise shows as spread).
Reports each engine's wall time and photos/s, ``ray_vs_cli`` (the Ray engine's wall / the local engine's), peak
RSS, whether the rows agree (``same_rows_as_local``), and a projection for a million photos.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pipeline import Settings, testing
from pipeline.scale import RayOptions
from pipeline.settings import PROFILE_ENV_VAR

from .common import DEFAULT_MODEL_DIR, SHARED, machine

# Taken in this order, each set whole, until there are enough photos; then picked evenly over the sets taken.
PHOTO_SETS = (
    ("vds-severity val", "vds-severity/val/*/*.jpg"),
    ("web-whole-cars", "web-whole-cars/*.jpg"),
    ("lensor-damage-coco", "lensor-damage-coco/images/*.jpg"),
    ("dsmlr-carparts", "dsmlr-carparts/JPEGImages/*.jpg"),
    ("yb-damaged-parts-yolo valid", "yb-damaged-parts-yolo/valid/images/*.jpg"),
    ("whole-cars-extra", "whole-cars-extra/*.jpg"),
    ("imagenet-sample", "imagenet-sample/*.jpg"),
)
ROW_COLUMNS = ("status", "is_car", "is_damaged", "damage_count", "severity", "damaged_parts")


def photo_folder(count: int, folder: Path) -> dict[str, int]:
    """``count`` photos (fewer if ../shared holds fewer) and one broken file; how many came from each set."""
    folder.mkdir(parents=True)
    picks = _picks(count, SHARED / "data")
    for i, (_, source) in enumerate(picks):
        (folder / f"{i:04d}{source.suffix}").symlink_to(source)
    if not picks:
        for i in range(count):
            testing.photo(800, 600, seed=i).save(folder / f"{i:04d}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a whole photo")
    sets: dict[str, int] = {}
    for name, _ in picks:
        sets[name] = sets.get(name, 0) + 1
    return sets or {"generated 800x600": count}


def _picks(count: int, data: Path) -> list[tuple[str, Path]]:
    pool: list[tuple[str, Path]] = []
    for name, pattern in PHOTO_SETS:
        if len(pool) >= count:
            break
        pool += [(name, path) for path in sorted(data.glob(pattern))]
    return [pool[i * len(pool) // count] for i in range(count)] if len(pool) >= count else pool


def run_engine(engine: str, folder: Path, out: Path, settings: Settings, options: RayOptions) -> dict[str, object]:
    """One engine's run in a fresh Python process, timed from the process's start to its exit."""
    context = multiprocessing.get_context("spawn")  # a new interpreter, as the command line starts one
    began = time.perf_counter()
    child = context.Process(target=_engine_process, args=(engine, folder, out, settings, options))
    child.start()
    child.join()
    seconds = time.perf_counter() - began
    if child.exitcode != 0:
        raise RuntimeError(f"the {engine} engine's process failed (exit code {child.exitcode})")
    figures = json.loads((out / "bench-process.json").read_text())
    return {"seconds": round(seconds, 1), **figures}


def _engine_process(engine: str, folder: Path, out: Path, settings: Settings, options: RayOptions) -> None:
    """What ``python -m pipeline FOLDER --out OUT [--engine ray ...]`` runs (without its progress lines); then
    this process's peak RSS (the Ray driver's, for Ray) into OUT/bench-process.json. Ray's local runtime stops
    when this process exits (a spawned child exits through the interpreter, so Ray's exit hook runs)."""
    if engine == "local":
        from pipeline.batch import process_inputs

        process_inputs([folder], out, settings)
    else:
        from pipeline.scale import run_ray

        run_ray([str(folder)], out, settings, options)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    (out / "bench-process.json").write_text(json.dumps({"peak_rss_mb": round(peak)}))


def actor_rss(out: Path) -> list[int]:
    """The peak RSS of each Ray actor, from the rows it wrote."""
    import pyarrow.dataset as pads

    table = pads.dataset(str(out / "results.parquet"), format="parquet").to_table(
        columns=["worker_pid", "worker_rss_mb"]
    )
    per_actor: dict[int, float] = {}
    for pid, rss in zip(table.column("worker_pid").to_pylist(), table.column("worker_rss_mb").to_pylist()):
        per_actor[pid] = max(per_actor.get(pid, 0.0), rss or 0.0)
    return sorted(round(v) for v in per_actor.values())


def rows_of(out: Path) -> list[tuple[str, ...]]:
    """report.csv's answers (file name, status, verdicts, counts, grade, damaged parts), in order."""
    rows = csv.DictReader((out / "report.csv").open(encoding="utf-8"))
    return [(r["file"].split("/")[-1], *(r[column] for column in ROW_COLUMNS)) for r in rows]


def projection(photos_per_s: float, cores: int) -> dict[str, object]:
    """Cores for a million photos in 1 and 8 hours, at the measured rate per core (linear scaling assumed)."""
    per_core = photos_per_s / cores
    return {
        "photos_per_s_per_core": round(per_core, 2),
        "cores_for_1M_in_1h": round(1e6 / (3600 * per_core)),
        "cores_for_1M_in_8h": round(1e6 / (8 * 3600 * per_core)),
    }


def _settings(models: str | None, model_dir: Path) -> tuple[Settings, dict[str, str]]:
    """The release (no --models), a trained profile, or ``hub``: the full-size architectures. Random weights
    leave verdicts on their thresholds, where another thread count flips them: compare rows with trained models."""
    if models == "hub":
        from .models import bench_settings  # builds or finds the Hub models: imported only when asked for

        return bench_settings(model_dir)
    settings = Settings.from_env(models)  # as the CLI: --models, else MODELS_PROFILE, else the release
    profile = models or os.environ.get(PROFILE_ENV_VAR, "").strip() or "the release (models/profile.toml)"
    return settings, {"profile": profile}


def compare(rounds: int, folder: Path, work: Path, settings: Settings, options: RayOptions) -> dict[str, object]:
    """The engines alternately, ``rounds`` times: their runs, and whether every Ray run wrote the local rows."""
    runs: dict[str, list[dict[str, object]]] = {"local": [], "ray": []}
    same = True
    for round_ in range(rounds):
        for engine in ("local", "ray"):
            out = work / f"{engine}{round_}"
            runs[engine].append(run_engine(engine, folder, out, settings, options))
        runs["ray"][-1]["peak_rss_mb_per_actor"] = actor_rss(work / f"ray{round_}")
        same = same and rows_of(work / f"ray{round_}") == rows_of(work / f"local{round_}")
    return {"local": _summary(runs["local"]), "ray": _summary(runs["ray"]) | {"same_rows_as_local": same}}


def _summary(runs: list[dict[str, object]]) -> dict[str, object]:
    """One run as it is; several: the median wall time, each run's, and the largest peaks."""
    if len(runs) == 1:
        return dict(runs[0])
    summary = {"seconds": statistics.median(run["seconds"] for run in runs)}
    summary["seconds_each"] = [run["seconds"] for run in runs]
    summary["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    if "peak_rss_mb_per_actor" in runs[0]:
        summary["peak_rss_mb_per_actor"] = max((run["peak_rss_mb_per_actor"] for run in runs), key=max)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2500)
    parser.add_argument("--models", metavar="PROFILE", help="a trained profile, or 'hub' (default: the release)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="where --models hub builds")
    parser.add_argument("--actors", type=int, default=RayOptions.actors, help="Ray actors (the CLI's default)")
    parser.add_argument("--batch-size", type=int, default=RayOptions.batch_size, help="photos per actor call")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the engines this many times")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    settings, origin = _settings(args.models, args.model_dir)
    options = RayOptions(actors=args.actors, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        sets = photo_folder(args.photos, Path(tmp) / "photos")
        count = sum(sets.values())
        figures: dict[str, object] = {"machine": machine(), "models": origin}
        figures["photos"] = {"count": count, "plus_broken_files": 1, "sets": sets}
        figures["ray_options"] = {"actors": options.actors, "batch_size": options.batch_size}
        figures |= compare(args.rounds, Path(tmp) / "photos", Path(tmp), settings, options)
    for engine in ("local", "ray"):
        figures[engine]["photos_per_s"] = round(count / figures[engine]["seconds"], 2)
    figures["ray_vs_cli"] = round(figures["ray"]["seconds"] / figures["local"]["seconds"], 2)
    figures["projection"] = projection(figures["ray"]["photos_per_s"], os.cpu_count() or 1)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
