"""python -m bench: latency, zip throughput, memory and cold start, fast pipeline vs a naive baseline.

Both run in the same process, on the same photos, with the default architectures at full size.
Naive = fp32 everywhere, eager PyTorch, one photo at a time, no warm-up. Fast = the shipped defaults
(precision "auto": int8 OpenVINO classifiers on VNNI CPUs, bf16 with AMX; OpenVINO segmenter; batches;
warm-up). "Fast + int8 segmenter" adds calibration photos (other photos of the same set), which turns on the
static int8 segmenter. Every stage runs on every photo (cascade off), so the cascade's skipping flatters no side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil

from pipeline import Analysis, Settings, analyze, analyze_batch, load_models, process_zip
from pipeline.decode import load_photo
from pipeline.testing import instance_drift

from .common import DEFAULT_MODEL_DIR, ROOT, calibration_photos, machine, percentile, zip_of
from .common import photos as photos_of
from .models import SHARED_IMAGENET, bench_settings

DAMAGE_CLASSIFIER = ROOT / "models" / "offline" / "damage-classifier"
OFFLINE_SEGMENTER = ROOT / "models" / "offline" / "segmenter" / "best.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=30, help="photos for the latency figures")
    parser.add_argument("--zip-photos", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args(argv)

    base, origin = bench_settings(args.model_dir)
    naive = replace(base.with_models(precision="fp32", seg_backend="torch"), cascade=False, batch_size=1)
    fast = replace(base, cascade=False, batch_size=args.batch_size)
    photos, photo_source = photos_of(args.photos)
    print(f"models: {origin}\nphotos: {len(photos)} from {photo_source}", file=sys.stderr)

    figures: dict[str, object] = {"machine": machine(), "models": origin, "photos": photo_source}
    # The fast pipeline first, in a process holding only its own models (the zip's RSS is then its own).
    _load_and_warm(fast, photos[0])
    fast_single, fast_results = _single(fast, photos, warm_up=True)
    fast_batch = _batched(fast, photos)
    with tempfile.TemporaryDirectory() as tmp:
        source = zip_of(photos, args.zip_photos, Path(tmp) / "photos.zip")
        fast_zip = _zip_run(fast, source, Path(tmp) / "fast")
        calibrated = fast.with_models(calibration_photos=calibration_photos(photos, Path(tmp) / "calibration"))
        _load_and_warm(calibrated, photos[0])  # the int8 segmenter: calibrated once, cached
        calibrated_single, calibrated_results = _single(calibrated, photos, warm_up=False)
        calibrated_batch = _batched(calibrated, photos)
        calibrated_zip = _zip_run(calibrated, source, Path(tmp) / "calibrated")
        figures |= _trained_segmenter_drift(photos, calibrated.models.calibration_photos)
        naive_single, naive_results = _single(naive, photos, warm_up=False)
        naive_zip = _zip_run(naive, source, Path(tmp) / "naive")
    figures |= {
        "p50_ms_single": percentile(fast_single, 50),
        "p95_ms_single": percentile(fast_single, 95),
        "p50_ms_batch": percentile(fast_batch, 50),
        "p95_ms_batch": percentile(fast_batch, 95),
        "naive_p50_ms_single": percentile(naive_single, 50),
        "naive_p95_ms_single": percentile(naive_single, 95),
    }
    figures["speedup_vs_naive"] = round(figures["naive_p50_ms_single"] / figures["p50_ms_batch"], 2)
    figures["speedup_single_vs_naive"] = round(figures["naive_p50_ms_single"] / figures["p50_ms_single"], 2)
    figures |= _agreement(naive_results, fast_results)
    figures["int8_segmenter"] = {
        "p50_ms_single": percentile(calibrated_single, 50),
        "p50_ms_batch": percentile(calibrated_batch, 50),
        "p95_ms_batch": percentile(calibrated_batch, 95),
        "speedup_vs_naive": round(figures["naive_p50_ms_single"] / percentile(calibrated_batch, 50), 2),
        "zip_photos_per_s": calibrated_zip["photos_per_s"],
        "peak_rss_mb": calibrated_zip["peak_rss_mb"],
        **_agreement(naive_results, calibrated_results),
    }

    figures |= {
        "zip_photos": args.zip_photos,
        "zip_photos_per_s": fast_zip["photos_per_s"],
        "peak_rss_mb": fast_zip["peak_rss_mb"],
        "rss_mb_during_zip": fast_zip["rss_mb_at"],
        "naive_zip_photos_per_s": naive_zip["photos_per_s"],
        "zip_speedup_vs_naive": round(fast_zip["photos_per_s"] / naive_zip["photos_per_s"], 2),
    }
    figures |= _real_model_agreement(photos)
    figures["cold_start_s"] = _cold_start(fast, photos[0])
    figures["naive_cold_start_s"] = _cold_start(naive, photos[0])

    print(_table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


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
        "photos_per_s": round(result.summary["photos_analyzed"] / elapsed, 2),
        "peak_rss_mb": round(max(samples) / 2**20),
        "rss_mb_at": rss_at,
    }


def _cold_start(settings: Settings, photo_path) -> float:
    """A fresh interpreter: import, load the three models (cached weights), warm up, answer one photo."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from pipeline import Settings, load_models, analyze\n"
        "s = Settings.from_env().with_models(precision=sys.argv[1], seg_backend=sys.argv[2])\n"
        "assert not any(load_models(s).values())\n"
        "analyze(sys.argv[3], s)\n"
        "print(time.perf_counter() - t)\n"
    )
    env = os.environ | {
        "CAR_MODEL": settings.models.car.id,
        "DAMAGE_MODEL": settings.models.damage.id,
        "SEG_MODEL": settings.models.segmenter.id,
    }
    if not isinstance(photo_path, (str, Path)):
        return float("nan")
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, settings.models.precision, settings.models.seg_backend, str(photo_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    del out
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


def _trained_segmenter_drift(photos: list, calibration: Path) -> dict[str, object]:
    """The random segmenter's instances are noise near its threshold, so also compare the trained offline
    segmenter (``models/offline``, at the size it was trained at), PyTorch fp32 vs the shipped OpenVINO f32
    copy and vs the static int8 copy, on the same damaged cars."""
    if not OFFLINE_SEGMENTER.is_file():
        return {}
    from pipeline import ModelRef
    from pipeline.segment import Segmenter

    ref, size = ModelRef(str(OFFLINE_SEGMENTER)), 512
    images = [load_photo(p) for p in photos]
    exact = Segmenter(ref, "fp32", "torch", image_size=size).detect(images, 0.25, 0.5)
    figures = {}
    for name, segmenter in (
        ("fast", Segmenter(ref, "auto", "auto", image_size=size)),
        ("int8", Segmenter(ref, "int8", "openvino", calibration, size)),
    ):
        figures[f"real_segmenter_{name}"] = instance_drift(exact, segmenter.detect(images, 0.25, 0.5))
    return figures


def _real_model_agreement(photos: list) -> dict[str, object]:
    """Random weights sit near the thresholds, so also compare verdicts with *trained* models, fp32 vs the fast
    precision, on the damaged cars and ImageNet photos: the shared ImageNet classifier as car check, and the
    offline damage classifier (``models/offline``) when it has been trained."""
    if not SHARED_IMAGENET.is_dir():
        return {"real_car_verdicts_same_as_fp32": "skipped (../shared absent)"}
    from pipeline.car import CarCheck
    from pipeline.damage import DamageCheck

    others = sorted((ROOT.parent / "shared" / "data" / "imagenet-sample").glob("*.jpg"))[:: 700 // len(photos)]
    images = [load_photo(p).image for p in [*photos, *others]]
    figures = _trained_drift("car", CarCheck, SHARED_IMAGENET, images, Settings().thresholds.car)
    if DAMAGE_CLASSIFIER.is_dir():
        figures |= _trained_drift(
            "damage", DamageCheck, DAMAGE_CLASSIFIER, images[: len(photos)], Settings().thresholds.damage
        )
    return figures


def _trained_drift(role: str, check: type, folder: Path, images: list, threshold: float) -> dict[str, object]:
    from pipeline import ModelRef

    exact = check(ModelRef(str(folder)), "fp32").scores(images, threshold)
    fast = check(ModelRef(str(folder)), "auto").scores(images, threshold)
    same = sum(a.positive == b.positive for a, b in zip(exact, fast))
    drift = max(abs(a.score - b.score) for a, b in zip(exact, fast))
    return {
        f"real_{role}_verdicts_same_as_fp32": f"{same}/{len(images)}",
        f"real_{role}_max_score_change": round(drift, 4),
    }


def _table(figures: dict[str, object]) -> str:
    rows = [
        (
            "per photo, single (p50 / p95)",
            "p50_ms_single",
            "p95_ms_single",
            "naive_p50_ms_single",
            "naive_p95_ms_single",
        ),
        ("per photo, batch (p50 / p95)", "p50_ms_batch", "p95_ms_batch", "naive_p50_ms_single", "naive_p95_ms_single"),
    ]
    lines = ["| figure | fast | naive |", "|---|---|---|"]
    for label, p50, p95, n50, n95 in rows:
        lines.append(f"| {label} | {figures[p50]} / {figures[p95]} ms | {figures[n50]} / {figures[n95]} ms |")
    lines += [
        f"| zip of {figures['zip_photos']} photos | {figures['zip_photos_per_s']} photos/s | "
        f"{figures['naive_zip_photos_per_s']} photos/s |",
        f"| peak RSS during the zip | {figures['peak_rss_mb']} MB | |",
        f"| cold start to first answer | {figures['cold_start_s']} s | {figures['naive_cold_start_s']} s |",
        f"| speed-up vs naive (batch / single / zip) | {figures['speedup_vs_naive']}x / "
        f"{figures['speedup_single_vs_naive']}x / {figures['zip_speedup_vs_naive']}x | |",
        f"| verdicts same as fp32 (largest score change) | {figures['verdicts_same_as_fp32']} "
        f"({figures['max_score_change_vs_fp32']}) | |",
        f"| mask IoU vs fp32 of matched instances (min / mean, {figures['matched_instances']} pairs); "
        f"unmatched fp32 / fast | {figures['mask_iou_vs_fp32_min']} / {figures['mask_iou_vs_fp32_mean']}; "
        f"{figures['instances_only_in_fp32']} / {figures['instances_only_in_fast']} | |",
    ]
    lines.append(
        f"| car verdicts of a trained model same as fp32 (largest change) | "
        f"{figures['real_car_verdicts_same_as_fp32']} ({figures.get('real_car_max_score_change')}) | |"
    )
    if "real_damage_verdicts_same_as_fp32" in figures:
        lines.append(
            f"| damage verdicts of the trained offline classifier same as fp32 (largest change) | "
            f"{figures['real_damage_verdicts_same_as_fp32']} ({figures['real_damage_max_score_change']}) | |"
        )
    for name in ("fast", "int8"):
        real = figures.get(f"real_segmenter_{name}")
        if real:
            lines.append(
                f"| trained offline segmenter, {name} vs fp32: mask IoU of matched (min / mean, "
                f"{real['matched_instances']} pairs); unmatched fp32 / {name} | {real['mask_iou_vs_fp32_min']} / "
                f"{real['mask_iou_vs_fp32_mean']}; {real['instances_only_in_fp32']} / "
                f"{real['instances_only_in_fast']} | |"
            )
    cal = figures["int8_segmenter"]
    lines += [
        f"| + int8 segmenter: per photo, single p50 / batch p50 / p95 | {cal['p50_ms_single']} / "
        f"{cal['p50_ms_batch']} / {cal['p95_ms_batch']} ms | |",
        f"| + int8 segmenter: speed-up vs naive (batch); zip; peak RSS | {cal['speedup_vs_naive']}x; "
        f"{cal['zip_photos_per_s']} photos/s; {cal['peak_rss_mb']} MB | |",
        f"| + int8 segmenter: verdicts same as fp32; mask IoU (min / mean, {cal['matched_instances']} pairs); "
        f"unmatched fp32 / fast | {cal['verdicts_same_as_fp32']}; {cal['mask_iou_vs_fp32_min']} / "
        f"{cal['mask_iou_vs_fp32_mean']}; {cal['instances_only_in_fp32']} / {cal['instances_only_in_fast']} | |",
    ]
    return "\n".join(lines) + f"\n\nRSS (MB) after n photos of the zip: {figures['rss_mb_during_zip']}"


if __name__ == "__main__":
    sys.exit(main())
