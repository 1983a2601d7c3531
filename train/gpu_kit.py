"""What a lent GPU machine needs to train the release's damage segmenter, made here in one folder (``.gpu/``,
ignored by git, carried by the device call), then ``bash train/gpu_call.sh`` there (docs/training.md, "On a GPU").

    python -m train.gpu_kit --shared ../shared            # ~1 minute: prepared folders, compact photos, wheels
    python -m train.gpu_kit --returned FILES --build DIR   # afterwards: the call's files as a build to evaluate

That machine has PyTorch, transformers, OpenCV, NumPy and SciPy but can fetch nothing: the kit holds the compact
copy of the damage segmenter's training photos (no held-out photo) and, as wheels, the packages the build imports
that it lacks, at the versions this checkout pins. A call carries at most 64 MiB with the checkout itself, so the
kit says how much of that it takes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from train.compact import CompactArguments, make_compact, stored_bytes

# Imported by the build (pipeline draws with supervision) and missing from the GPU machines' image. Not polars
# (55 MB of wheels; train_segmenter does without it) nor pi-heif (pipeline.decode does without it).
GPU_WHEELS = (
    "ultralytics-opencv-headless", "ultralytics-thop", "ultralytics-platform", "supervision", "pydeprecate",
    "defusedxml",
)  # fmt: skip
# One device call's limit (the device README): the checkout's tracked files and the kit together.
CALL_LIMIT_BYTES = 64 * 2**20


@dataclass
class GpuKitArguments:
    shared: str = field(default="../shared")
    out: str = field(default=".gpu")
    segmenter_side: int = field(default=640, metadata={"help": "the compact photos' longest side (training size)"})
    python_version: str = field(default="3.12", metadata={"help": "the GPU machine's Python, for the wheels"})
    returned: str | None = field(default=None, metadata={"help": "the files a gpu_call.sh run brought back"})
    build: str = field(default="/tmp/gpu-build", metadata={"help": "with --returned: the build folder to write"})
    release: str = field(default="models", metadata={"help": "with --returned: the release it continued"})


def pinned(names: Sequence[str] = GPU_WHEELS) -> list[str]:
    """``name==version`` as installed here (requirements.txt's pins and what they resolved to)."""
    return [f"{name}=={metadata.version(name)}" for name in names]


def download_wheels(folder: Path, python_version: str) -> list[Path]:
    """Only this checkout's versions: two versions of one package would stop the install there."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    platforms = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
               "cp", "--python-version", python_version, "-d", str(folder)]  # fmt: skip
    command += [arg for platform in platforms for arg in ("--platform", platform)] + pinned()
    subprocess.run(command, check=True)
    return sorted(folder.glob("*.whl"))


def compact_photos(shared: Path, out: Path, side: int) -> dict:
    """The build's prepared folders (in a temporary folder), then their damage set's compact copy."""
    from train.build_profile import BuildArguments, build

    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as build_dir:
        work = build(BuildArguments(shared=str(shared), out=build_dir, prepare_only=True))
        return make_compact(CompactArguments(work=str(work), out=str(out), what="damage", segmenter_side=side))


def tracked_bytes(root: Path) -> int:
    """What the checkout's tracked files weigh: they travel with every call."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def make_kit(args: GpuKitArguments) -> dict:
    out = Path(args.out)
    manifest = compact_photos(Path(args.shared).resolve(), out / "compact", args.segmenter_side)
    wheels = download_wheels(out / "whl", args.python_version)
    kit = stored_bytes(out)
    checkout = tracked_bytes(Path(__file__).resolve().parents[1])
    summary = {
        "photos": manifest["photos"], "wheels": [w.name for w in wheels], "kit_mb": round(kit / 2**20, 1),
        "checkout_mb": round(checkout / 2**20, 1), "fits_one_call": kit + checkout < CALL_LIMIT_BYTES,
    }  # fmt: skip
    (out / "kit.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def assemble_build(returned: Path, build: Path, release: Path) -> Path:
    """The call's segmenter as a build beside the release's other models (named where they are, so that
    train.release keeps them), with the call's thresholds and runtime: train.release_eval, then train.release."""
    import tomllib

    from train.build_outputs import write_profile

    (build / "segmenter").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(returned / "segmenter.pt", build / "segmenter" / "best.pt")
    shutil.copyfile(returned / "build_summary.json", build / "build_summary.json")
    profile = tomllib.loads((returned / "profile.toml").read_text(encoding="utf-8"))
    shipped = tomllib.loads((release / "profile.toml").read_text(encoding="utf-8"))
    located = {role: release.resolve() / shipped[role]["model"] for role in ("car", "damage", "severity", "parts")
               if role in shipped}  # fmt: skip
    models = {role: os.path.relpath(path, build.resolve()) for role, path in located.items() if role != "car"}
    models["segmenter"] = "segmenter/best.pt"
    return write_profile(build, located["car"], models, profile.get("thresholds", {}), profile.get("runtime", {}))


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(GpuKitArguments).parse_args_into_dataclasses(args=argv)
    if args.returned:
        print(assemble_build(Path(args.returned), Path(args.build), Path(args.release)))
        return
    summary = make_kit(args)
    print(json.dumps(summary, indent=1))
    if not summary["fits_one_call"]:
        sys.exit("the kit and the checkout exceed one device call's 64 MiB: --segmenter_side 512 makes it smaller")


if __name__ == "__main__":
    main()
