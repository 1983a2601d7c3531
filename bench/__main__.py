"""python -m bench: latency, zip throughput, memory, cold start and accuracy, fast pipeline vs a naive baseline.

    python -m bench [--json bench.json] [--models hub | PROFILE] [--accuracy-photos 60]

Both sides run in the same process, on the same photos, with the same models: by default the release in models/
(what ships), ``--models hub`` the Hub architectures at full size (random-initialised when their weights are not
cached: same graphs, same timings). Naive = fp32 everywhere, eager PyTorch, one photo at a time, the libraries' own
pre-processing, no warm-up. Fast = the shipped defaults (precision "auto": the OpenVINO copies at the precision this
CPU gets, docs/performance.md; batches; warm-up; the copies run without PyTorch). "precision int8" is the opt-in
side: int8 classifiers and the static int8 segmenter, calibrated on other photos of the same set. Every stage runs
on every photo (cascade off), so the cascade's skipping flatters no side. The sides are measured in turn
(``--rounds``, 3) and each speed-up is the median of its rounds' ratios: the host's speed drifts over minutes;
the single-photo one is measured interleaved (both sides warm, alternating photo by photo), as the issue defines it.
Accuracy: the fast precisions against fp32 on the release's held-out photos, scored against their labels
(bench.accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil

from pipeline import Analysis, Settings, analyze, analyze_batch, load_models, process_zip
from pipeline.settings import ENV_VARS, PROFILE_ENV_VAR
from pipeline.testing import instance_drift

from .accuracy import accuracy_vs_fp32
from .breakdown import stage_breakdown
from .common import DEFAULT_MODEL_DIR, ROOT, calibration_photos, machine, percentile, zip_of, zip_of_aspects
from .common import photos as photos_of
from .models import chosen_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, metavar="PROFILE", help="'hub', or a profile (default: the release)")
    parser.add_argument("--photos", type=int, default=30, help="photos for the latency figures")
    parser.add_argument("--zip-photos", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto", help="the fast side's precision (auto: what this CPU gets)")
    parser.add_argument("--accuracy-photos", type=int, default=60, help="held-out photos of each kind (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="fast and naive measured in turn; ratios: the median")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args(argv)

    base, origin, profile = chosen_settings(args.models, args.model_dir)
    photos, photo_source = photos_of(args.photos)
    print(f"models: {origin}\nphotos: {len(photos)} from {photo_source}", file=sys.stderr)
    figures: dict[str, object] = {"machine": machine(), "models": origin, "photos": photo_source}
    figures["zip_photos"] = args.zip_photos
    with tempfile.TemporaryDirectory() as tmp:
        calibration = calibration_photos(photos, Path(tmp) / "calibration")
        fast = replace(base, cascade=False, batch_size=args.batch_size).with_models(precision=args.precision)
        naive = replace(base.with_models(precision="fp32", seg_backend="torch"), cascade=False, batch_size=1)
        source = zip_of(photos, args.zip_photos, Path(tmp) / "photos.zip")
        # The fast pipeline first, in a process holding only its own models (the zip's RSS is then its own).
        figures["fast"], fast_results = _measure(fast, photos, source, Path(tmp) / "fast")
        aspects = zip_of_aspects(photos, args.zip_photos, Path(tmp) / "aspects.zip")
        figures["fast"]["mixed_aspects_zip"] = _zip_run(fast, aspects, Path(tmp) / "aspects")
        figures["stages_ms_a_photo"] = stage_breakdown(fast, photos)
        # opt-in int8: the release's own int8 segmenter copies; other models' segmenters calibrated on these photos
        int8 = fast.with_models(precision="int8", calibration_photos=calibration if args.models else None)
        figures["int8_opt_in"], _ = _measure(int8, photos, source, Path(tmp) / "int8")
        figures["naive"], naive_results = _measure(naive, photos, source, Path(tmp) / "naive", batched=False)
        rounds = [_round_ratios(figures["fast"], figures["naive"])]
        for i in range(1, args.rounds):  # again in turn: a drift of the host's speed weighs on both sides alike
            again = {side: _measure(s, photos, source, Path(tmp) / f"{side}{i}", batched=side == "fast")[0]
                     for side, s in (("fast", fast), ("naive", naive))}  # fmt: skip
            rounds.append(_round_ratios(again["fast"], again["naive"]))
        figures["interleaved"] = _interleaved(fast, naive, photos)
    figures["rounds"] = rounds
    figures |= _median_ratios(rounds) | _agreement(naive_results, fast_results)
    # The single-photo figure is the interleaved one (both sides warm, alternating photo by photo, so the
    # host's drift weighs on both alike); the median of the sequential rounds stays beside it.
    figures["speedup_single_vs_naive_sequential"] = figures["speedup_single_vs_naive"]
    figures["speedup_single_vs_naive"] = figures["interleaved"]["speedup_single_vs_naive"]
    figures["speedup_batch_int8_opt_in_vs_naive"] = round(
        figures["naive"]["p50_ms_single"] / figures["int8_opt_in"]["p50_ms_batch"], 2
    )
    # the higher of the two zips: the bench's photos repeat a few letterbox shapes, the mixed zip's nearly never
    figures["peak_rss_mb"] = max(figures["fast"]["peak_rss_mb"], figures["fast"]["mixed_aspects_zip"]["peak_rss_mb"])
    figures["cold_start_s"] = _cold_start(fast, profile, photos[0])
    figures["naive_cold_start_s"] = _cold_start(naive, profile, photos[0])
    if args.accuracy_photos:
        figures |= accuracy_vs_fp32(profile, args.accuracy_photos)
    print(_table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _measure(settings: Settings, photos: list, source: Path, out: Path, batched: bool = True):
    """Per-photo latency one at a time (and in batches), and a zip's throughput and memory, for one side."""
    if batched:
        _load_and_warm(settings, photos[0])
    single, results = _single(settings, photos, warm_up=batched)
    figures = {"p50_ms_single": percentile(single, 50), "p95_ms_single": percentile(single, 95)}
    if batched:
        batch = _batched(settings, photos)
        figures |= {"p50_ms_batch": percentile(batch, 50), "p95_ms_batch": percentile(batch, 95)}
    return figures | _zip_run(settings, source, out), results


def _interleaved(fast: Settings, naive: Settings, photos: list) -> dict[str, float]:
    """The latency ratios again with the sides alternating batch by batch (both loaded and warm), so that a change
    of the host's speed during the run weighs on both sides alike (on a shared 2-vCPU host it moved a side's p50 by
    1.7x between runs)."""
    fast_single, fast_batch, naive_single = [], [], []
    for start in range(0, len(photos), fast.batch_size):
        chunk = photos[start : start + fast.batch_size]
        for photo in chunk:
            fast_single.append(_timed(lambda p=photo: analyze(p, fast)))
            naive_single.append(_timed(lambda p=photo: analyze(p, naive)))
        fast_batch.append(_timed(lambda c=chunk: analyze_batch(c, fast)) / len(chunk))
    naive_p50 = percentile(naive_single, 50)
    return {
        "p50_ms_single_fast": percentile(fast_single, 50),
        "p50_ms_batch_fast": percentile(fast_batch, 50),
        "p50_ms_single_naive": naive_p50,
        "speedup_batch_vs_naive": round(naive_p50 / percentile(fast_batch, 50), 2),
        "speedup_single_vs_naive": round(naive_p50 / percentile(fast_single, 50), 2),
    }


def _timed(run) -> float:
    began = time.perf_counter()
    run()
    return (time.perf_counter() - began) * 1000


def _round_ratios(fast: dict, naive: dict) -> dict[str, float]:
    """Speed-ups over naive in one round: naive is one photo at a time, so its batch figure is its single one."""
    return {
        "speedup_batch_vs_naive": round(naive["p50_ms_single"] / fast["p50_ms_batch"], 2),
        "speedup_single_vs_naive": round(naive["p50_ms_single"] / fast["p50_ms_single"], 2),
        "speedup_zip_vs_naive": round(fast["photos_per_s"] / naive["photos_per_s"], 2),
    }


def _median_ratios(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}


# ---------------------------------------------------------------- measurements


def _single(settings: Settings, photos: list, warm_up: bool) -> tuple[list[float], list[Analysis]]:
    if warm_up:
        analyze(photos[0], settings)
    times, results = [], []
    for photo in photos:
        start = time.perf_counter()
        results.append(analyze(photo, settings))
        times.append((time.perf_counter() - start) * 1000)
    return times, results


def _batched(settings: Settings, photos: list) -> list[float]:
    """Per-photo latency of each batch (batch time / photos in it), as in a zip."""
    per_photo = []
    for start in range(0, len(photos), settings.batch_size):
        chunk = photos[start : start + settings.batch_size]
        began = time.perf_counter()
        analyze_batch(chunk, settings)
        per_photo += [(time.perf_counter() - began) * 1000 / len(chunk)] * len(chunk)
    return per_photo


def _load_and_warm(settings: Settings, photo) -> None:
    problems = {role: str(error) for role, error in load_models(settings).items() if error}
    if problems:
        raise SystemExit(f"cannot load models: {problems}")
    analyze(photo, settings)


def _zip_run(settings: Settings, source: Path, out: Path) -> dict[str, object]:
    process = psutil.Process()
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(0.05)

    rss_at: dict[int, float] = {}

    def progress(count: int, total: int, _name: str) -> None:
        if count % max(1, total // 4) == 0 or count == total:
            rss_at[count] = round(process.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    result = process_zip(source, out, settings, progress=progress)
    elapsed = time.perf_counter() - began
    done.set()
    sampler.join()
    return {
        "photos_per_s": round(result.summary.photos_analyzed / elapsed, 2),
        "peak_rss_mb": round(max(samples) / 2**20),
        "rss_mb_at": rss_at,
        "pytorch_in_process": "torch" in sys.modules,  # its ~650 MB are in the RSS when true
    }


def _cold_start(settings: Settings, profile: str, photo_path) -> float:
    """A fresh interpreter: import, load the models (cached weights and copies), warm up, answer one photo."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from pipeline import Settings, load_models, analyze\n"
        "s = Settings.from_env().with_models(precision=sys.argv[1], seg_backend=sys.argv[2])\n"
        "assert not any(load_models(s).values())\n"
        "analyze(sys.argv[3], s)\n"
        "print(time.perf_counter() - t)\n"
    )
    models = settings.models.refs()
    env = os.environ | {PROFILE_ENV_VAR: profile} | {ENV_VARS[role]: ref.id for role, ref in models.items()}
    if not isinstance(photo_path, (str, Path)):
        return float("nan")
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, settings.models.precision, settings.models.seg_backend, str(photo_path)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # progress bars: whatever the locale
        env=env,
        cwd=ROOT,
        check=True,
    )
    return round(time.perf_counter() - began, 2)


def _agreement(exact: list[Analysis], fast: list[Analysis]) -> dict[str, object]:
    """Same verdicts as fp32, and how the damage instances drifted (``_instance_drift``)."""
    same = [(a.is_car, a.is_damaged) == (b.is_car, b.is_damaged) for a, b in zip(exact, fast)]
    drift = [abs(a.car.score - b.car.score) for a, b in zip(exact, fast)] + [
        abs(a.damage.score - b.damage.score) for a, b in zip(exact, fast) if a.damage and b.damage
    ]
    return {
        "verdicts_same_as_fp32": f"{sum(same)}/{len(same)}",
        "max_score_change_vs_fp32": round(max(drift), 4),
        **instance_drift([a.detections for a in exact], [b.detections for b in fast]),
    }


def _table(figures: dict[str, object]) -> str:
    fast, f32, naive, inter = figures["fast"], figures["int8_opt_in"], figures["naive"], figures["interleaved"]
    mixed = fast["mixed_aspects_zip"]
    lines = [
        "| figure | fast (shipped: precision auto) | precision int8 (opt-in) | naive |",
        "|---|---|---|---|",
        f"| per photo, single (p50 / p95) | {fast['p50_ms_single']} / {fast['p95_ms_single']} ms | "
        f"{f32['p50_ms_single']} / {f32['p95_ms_single']} ms | "
        f"{naive['p50_ms_single']} / {naive['p95_ms_single']} ms |",
        f"| per photo, batch (p50 / p95) | {fast['p50_ms_batch']} / {fast['p95_ms_batch']} ms | "
        f"{f32['p50_ms_batch']} / {f32['p95_ms_batch']} ms | (single) |",
        f"| zip of {figures.get('zip_photos', 100)} photos | {fast['photos_per_s']} photos/s | {f32['photos_per_s']} "
        f"photos/s | {naive['photos_per_s']} photos/s |",
        f"| peak RSS during the zip | {fast['peak_rss_mb']} MB | {f32['peak_rss_mb']} MB | {naive['peak_rss_mb']} MB |",
        f"| zip of the photos re-cut from 1:4 to 4:1: photos/s, peak RSS (after n photos) | {mixed['photos_per_s']}, "
        f"{mixed['peak_rss_mb']} MB ({mixed['rss_mb_at']}) | | |",
        "| speed-up vs naive (batch / single, interleaved / zip; single in rounds) | "
        f"{figures['speedup_batch_vs_naive']}x / {figures['speedup_single_vs_naive']}x / "
        f"{figures['speedup_zip_vs_naive']}x; "
        f"{figures['speedup_single_vs_naive_sequential']}x | "
        f"{figures['speedup_batch_int8_opt_in_vs_naive']}x (batch) | |",
        "| each round (batch / single / zip) | "
        + "; ".join(" / ".join(f"{v}x" for v in r.values()) for r in figures["rounds"])
        + " | | |",
        f"| interleaved (sides alternating batch by batch): p50 single / batch; vs naive | "
        f"{inter['p50_ms_single_fast']} / {inter['p50_ms_batch_fast']} ms; {inter['speedup_single_vs_naive']}x / "
        f"{inter['speedup_batch_vs_naive']}x | | {inter['p50_ms_single_naive']} ms |",
        f"| cold start to the first answer (warm cache) | {figures['cold_start_s']} s | | "
        f"{figures['naive_cold_start_s']} s |",
        f"| verdicts same as fp32 on these photos (largest score change) | {figures['verdicts_same_as_fp32']} "
        f"({figures['max_score_change_vs_fp32']}) | | |",
        f"| held-out accuracy, fast minus fp32: mask mAP50 (worse kind) / verdict accuracy | "
        f"{figures.get('map50_delta_vs_fp32', '-')} / {figures.get('verdict_accuracy_delta_vs_fp32', '-')} | | |",
    ]
    stages = figures.get("stages_ms_a_photo", {})
    lines += ["", "| fast side, stage alone | ms a photo |", "|---|---|"]
    lines += [f"| {name} | {ms} |" for name, ms in stages.items()]
    return "\n".join(lines) + f"\n\nRSS (MB) after n photos of the fast zip: {fast['rss_mb_at']}"


if __name__ == "__main__":
    sys.exit(main())
