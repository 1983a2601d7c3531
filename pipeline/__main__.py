"""CLI: python -m pipeline INPUT... --out DIR  (photos, folders and zips).

Writes the annotated photos, report.html, report.csv, vehicles.csv (one row per vehicle: each top-level folder of
a folder or zip, or as the input's vehicles.csv says), predictions.json and summary.json into DIR.
Exit codes: 0 all inputs handled; 1 some input could not be analysed (one line each on stderr);
2 bad usage or a missing input. A vehicles.csv that is ignored gets a 'note:' line, and its reason in summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .batch import BatchResult, JobControl, process_inputs
from .errors import PipelineError
from .results import Status
from .settings import MODELS_FLAG_HELP, PRECISIONS, Settings, Thresholds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Find cars, damage and damage masks.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, folders, zips (ray: + lists of paths/URIs)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--models", metavar="PROFILE", help=MODELS_FLAG_HELP)
    for name, default, meta in Thresholds.controls():  # the same thresholds as the app's controls
        if isinstance(default, bool):
            parser.add_argument(meta["flag"], dest=name, action="store_true", default=None, help=meta["help"])
        else:
            parser.add_argument(meta["flag"], dest=name, type=float, metavar="P", help=f"{meta['help']} ({default})")
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this long; the rest is listed")
    ray = parser.add_argument_group("the Ray engine (pip install ray[data]): big collections, resumable")
    ray.add_argument("--engine", choices=["local", "ray"], default="local")
    ray.add_argument("--ray-address", metavar="ADDRESS", help="a Ray cluster (default: a local runtime)")
    actors = "model-holding actors (default: one per 2 CPUs, no more than the GPUs hold)"
    ray.add_argument("--actors", type=int, default=None, metavar="N", help=actors)
    ray.add_argument("--batch-size", type=int, default=8, metavar="B", help="photos per actor call (8)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G", help="on clusters with GPUs")
    ray.add_argument("--save-images", action="store_true", help="also write the annotated photos (ray engine)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _usage_problem(args.inputs, args.out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env(args.models)
        settings = settings.with_thresholds(**{name: getattr(args, name) for name, _, _ in Thresholds.controls()})
        settings = settings.with_models(precision=args.precision)
        result = _run(args, settings)
    except (PipelineError, ValueError, OSError) as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    if args.json:
        rows = [row.to_dict() for row in result.rows]
        print(json.dumps({"results": rows, "summary": result.summary.to_dict()}, indent=2, ensure_ascii=False))
    for note in result.summary.vehicle_notes:
        print(f"note: {terminal_safe(note)}", file=sys.stderr)
    failed = _failed(result, args.inputs)
    for row in failed:
        print(f"error: {terminal_safe(row.file)}: {terminal_safe(row.message)}", file=sys.stderr)
    return 1 if failed else 0


def _run(args: argparse.Namespace, settings: Settings) -> BatchResult:
    if args.engine == "ray":
        from .scale import RayOptions, run_ray  # the only import of ray: the library and the Space never need it

        options = RayOptions(args.ray_address, args.actors, args.batch_size, args.gpus_per_actor, args.save_images)
        return run_ray(args.inputs, args.out, settings, options)
    progress = None if args.json else _print_progress
    inputs = [Path(p) for p in args.inputs]
    return process_inputs(inputs, args.out, settings, progress, control=JobControl(seconds=args.time_budget))


def _usage_problem(given: list[str], out: Path) -> str:
    inputs = [Path(p) for p in given if "://" not in p]  # URIs are the Ray engine's to read
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        return f"no such file or folder: {', '.join(map(terminal_safe, missing))}"
    target = out.resolve()
    inside = [p for p in inputs if p.is_dir() and target.is_relative_to(p.resolve())]
    if inside or any(target == p.resolve() for p in inputs):
        return f"--out {terminal_safe(str(out))} is inside an input: results would be read back as inputs"
    return ""


def _failed(result: BatchResult, inputs: list[str]):
    """Rows that count as failures: errors and refusals; a file given on its own must also be a photo (inside
    folders and zips, files that are not photos are merely skipped)."""
    given = Path(inputs[0])
    one_photo = len(inputs) == 1 and given.is_file() and given.suffix.lower() != ".zip"
    bad = {Status.ERROR, Status.REFUSED, Status.NOT_PROCESSED}
    return [r for r in result.rows if r.status in bad or (one_photo and r.status != Status.OK)]


def terminal_safe(text: str) -> str:
    """Control characters (escape sequences, carriage returns) shown as \\xNN instead of acting on the terminal."""
    return "".join(c if c.isprintable() or c == " " else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _print_progress(done: int, total: int, name: str) -> None:
    print(f"[{done}/{total}] {terminal_safe(name)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
