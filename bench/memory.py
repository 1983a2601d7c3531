"""python -m bench.memory: the peak RSS each hostile upload of pipeline.testing.memory_cases adds to a warm process.

    python -m bench.memory [--models PROFILE] [--json out.json]

Models: the release (default), a profile, or the Hub architectures (``--models hub``; bench.models). Every photo
runs with every threshold at 0 and "always segment" (the most masks the limits allow); zips run through process_zip
with the library's limits. For each case: RSS before (models loaded, warmed up), peak RSS while it ran (sampled
every 5 ms), and what came back. The target: no case more than ~1 GB above the warm idle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from pipeline import Settings, analyze, load_models, process_zip
from pipeline.testing import memory_cases, peak_rss_during, photo

from .common import DEFAULT_MODEL_DIR, machine
from .models import chosen_settings


def run_case(path: Path, settings: Settings, out: Path):
    if path.suffix == ".zip":
        result = process_zip(path, out, settings)
        return f"archive: {len(result.rows)} rows, {result.summary.photos_analyzed} analysed"
    analysis = analyze(path, settings)
    return f"result: {analysis.size[0]}x{analysis.size[1]}, {len(analysis.detections)} masks"


def measure(settings: Settings, folder: Path) -> list[dict[str, object]]:
    problems = {role: str(error) for role, error in load_models(settings).items() if error}
    if problems:
        raise SystemExit(f"cannot load models: {problems}")
    analyze(photo(640, 480), settings)  # warm up
    rows = []
    for name, path in memory_cases(folder / "cases"):
        before, peak, outcome = peak_rss_during(lambda p=path: run_case(p, settings, folder / "out" / p.stem))
        text = outcome if isinstance(outcome, str) else f"message: {type(outcome).__name__}: {outcome}"
        rows.append({"case": name, "idle_mb": round(before), "peak_mb": round(peak), "added_mb": round(peak - before),
                     "outcome": text[:160]})  # fmt: skip
        print(f"| {name} | {rows[-1]['idle_mb']} | {rows[-1]['peak_mb']} | {rows[-1]['added_mb']} | {text[:90]} |",
              flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--models", metavar="PROFILE", help="'hub', or a profile (default: the release)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    settings = chosen_settings(args.models, args.model_dir)[0]
    settings = settings.with_thresholds(car=0.0, damage=0.0, mask=0.0, always_segment=True)
    settings = replace(settings, max_detections=Settings().max_detections)  # the most masks the limits allow
    print("| case | RSS before (MB) | peak (MB) | added (MB) | outcome |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        rows = measure(settings, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "cases": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
