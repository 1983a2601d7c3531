"""python -m bench.scale: the local engine vs the Ray engine (1 and 2 actors) on the same photos, same run.

    python -m bench.scale [--photos 200] [--json scale.json] [--models models/offline/profile.toml]

Photos: from ../shared (damaged cars of vds-severity's val split and whole cars of web-whole-cars), or generated,
plus one broken file. Models: the benchmark's full-size architectures (bench.models) with the shipped defaults.
Reports wall time, photos/s, the Ray engine's overhead over the local one, peak RSS of the local process and of
each Ray actor, whether the rows agree, and a projection for a million photos from the measured rate per core.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline import Settings, testing
from pipeline.batch import process_inputs
from pipeline.testing import peak_rss_during

from .common import DEFAULT_MODEL_DIR, SHARED, machine
from .models import bench_settings


def photo_folder(count: int, folder: Path) -> Path:
    """``count`` photos (half damaged, half whole cars when ../shared is there) and one broken file."""
    data = SHARED / "data"
    pool = sorted((data / "vds-severity" / "val").glob("*/*.jpg"))[::3] + sorted(
        (data / "web-whole-cars").glob("*.jpg")
    )
    folder.mkdir(parents=True)
    if pool:
        picks = pool[:: max(1, len(pool) // count)][:count]
        for i, source in enumerate(picks):
            (folder / f"{i:04d}{source.suffix}").symlink_to(source)
    else:
        for i in range(count):
            testing.photo(800, 600, seed=i).save(folder / f"{i:04d}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a whole photo")
    return folder


def run_local(folder: Path, out: Path, settings) -> dict[str, object]:
    began = time.perf_counter()
    _, peak, _ = peak_rss_during(lambda: process_inputs([folder], out, settings))
    return {"seconds": round(time.perf_counter() - began, 1), "peak_rss_mb": round(peak)}


def run_ray_engine(folder: Path, out: Path, settings, actors: int) -> dict[str, object]:
    import pyarrow.dataset as pads

    from pipeline.scale import RayOptions, run_ray

    began = time.perf_counter()
    run_ray([str(folder)], out, settings, RayOptions(actors=actors, batch_size=8))
    seconds = time.perf_counter() - began
    table = pads.dataset(str(out / "results.parquet"), format="parquet").to_table(
        columns=["worker_pid", "worker_rss_mb"]
    )
    per_actor: dict[int, float] = {}
    for pid, rss in zip(table.column("worker_pid").to_pylist(), table.column("worker_rss_mb").to_pylist()):
        per_actor[pid] = max(per_actor.get(pid, 0.0), rss or 0.0)
    return {"seconds": round(seconds, 1), "peak_rss_mb_per_actor": sorted(round(v) for v in per_actor.values())}


def rows_of(out: Path) -> list[tuple[str, ...]]:
    rows = csv.DictReader((out / "report.csv").open(encoding="utf-8"))
    return [(r["file"].split("/")[-1], r["status"], r["is_car"], r["is_damaged"], r["damage_count"]) for r in rows]


def projection(photos_per_s: float, cores: int) -> dict[str, object]:
    """Cores for a million photos in 1 and 8 hours, at the measured rate per core (linear scaling assumed)."""
    per_core = photos_per_s / cores
    return {
        "photos_per_s_per_core": round(per_core, 2),
        "cores_for_1M_in_1h": round(1e6 / (3600 * per_core)),
        "cores_for_1M_in_8h": round(1e6 / (8 * 3600 * per_core)),
    }


def _settings(args: argparse.Namespace):
    """The full-size architectures (random weights when the Hub's are not cached), or a trained profile: random
    weights leave verdicts on their thresholds, where another thread count flips them, so rows are compared with
    trained models."""
    if args.models is None:
        return bench_settings(args.model_dir)
    return Settings.from_env(args.models), {"profile": str(args.models)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--models", type=Path, metavar="PROFILE", help="a trained profile instead (rows comparable)")
    args = parser.parse_args(argv)
    settings, origin = _settings(args)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = photo_folder(args.photos, Path(tmp) / "photos")
        figures: dict[str, object] = {"machine": machine(), "models": origin, "photos": args.photos}
        figures["local"] = run_local(folder, Path(tmp) / "local", settings)
        for actors in (1, 2):
            figures[f"ray_{actors}"] = run_ray_engine(folder, Path(tmp) / f"ray{actors}", settings, actors)
            figures[f"ray_{actors}"]["same_rows_as_local"] = rows_of(Path(tmp) / f"ray{actors}") == rows_of(
                Path(tmp) / "local"
            )
    for name in ("local", "ray_1", "ray_2"):
        figures[name]["photos_per_s"] = round(args.photos / figures[name]["seconds"], 2)
    for name in ("ray_1", "ray_2"):
        figures[name]["wall_vs_local"] = round(figures[name]["seconds"] / figures["local"]["seconds"], 2)
    best = max(figures["ray_1"]["photos_per_s"], figures["ray_2"]["photos_per_s"])
    figures["projection"] = projection(best, os.cpu_count() or 1)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
