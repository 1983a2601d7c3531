"""CLI: python -m pipeline INPUT... --out DIR  (photos, folders and zips).

Writes the annotated photos, report.csv, predictions.json and summary.json into DIR.
Exit codes: 0 all inputs handled; 1 some input could not be analysed (one line each on stderr);
2 bad usage or a missing input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from .archive import DirSink, Entry, ResultWriter, iter_path_entries, iter_zip_entries, process_entries
from .errors import PipelineError
from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Find cars, damage and damage masks.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="photos, folders or zips")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--models", metavar="PROFILE", help="TOML model profile (see README)")
    parser.add_argument("--car-threshold", type=float)
    parser.add_argument("--damage-threshold", type=float)
    parser.add_argument("--mask-threshold", type=float)
    parser.add_argument("--always-segment", action="store_true", default=None, help="masks for undamaged cars too")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env(args.models).with_overrides(
            car_threshold=args.car_threshold,
            damage_threshold=args.damage_threshold,
            mask_threshold=args.mask_threshold,
            always_segment=args.always_segment,
            precision=args.precision,
        )
        writer = ResultWriter(DirSink(args.out), settings)
        total, entries = _collect(args.inputs)
        process_entries(entries, total, writer, settings, progress=None if args.json else _print_progress)
        writer.finish()
    except (PipelineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"results": writer.rows, "summary": writer.summary()}, indent=2, ensure_ascii=False))
    given = args.inputs[0]
    one_photo = len(args.inputs) == 1 and given.is_file() and given.suffix.lower() != ".zip"
    # A file given on its own must be a photo; inside folders and zips, non-photos are merely skipped.
    failed = [r for r in writer.rows if r["status"] in {"error", "refused"} or (one_photo and r["status"] != "ok")]
    for row in failed:
        print(f"error: {row['file']}: {row['message']}", file=sys.stderr)
    return 1 if failed else 0


def _collect(inputs: list[Path]) -> tuple[int, Iterator[Entry]]:
    """All entries of all inputs, lazily; zip entries are named '<zip stem>/<entry>'."""
    counted = []
    for path in inputs:
        if path.is_file() and path.suffix.lower() == ".zip":
            count, entries = iter_zip_entries(path)  # raises for a refused zip
            counted.append((count, _prefixed(path.stem, entries)))
        else:
            counted.append(iter_path_entries([path]))
    return sum(c for c, _ in counted), (entry for _, entries in counted for entry in entries)


def _prefixed(prefix: str, entries: Iterator[Entry]) -> Iterator[Entry]:
    for entry in entries:
        yield Entry(f"{prefix}/{entry.name}", entry.data, entry.status, entry.message)


def _print_progress(done: int, total: int, name: str) -> None:
    print(f"[{done}/{total}] {name}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
