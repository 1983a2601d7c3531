"""What a build writes beside its models (``train.build_profile``): ``profile.toml`` (its own thresholds or the
resumed release's), the photos the int8 segmenter is calibrated on, and ``build_summary.json``'s timings, epochs
and machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

from train.common import list_images
from train.release_models import RELEASE

# --- profile -------------------------------------------------------------------------------------


def write_profile(
    out: Path, car_model: Path, models: dict[str, str], thresholds: dict[str, float], runtime: dict[str, object]
) -> Path:
    """profile.toml: ``models`` section -> path relative to the profile (car: relative to the shared folder)."""
    car = os.path.relpath(Path(car_model).resolve(), Path(out).resolve())
    lines = ["# Built by: python -m train.build_profile (see docs/training.md). Paths are relative to this file."]
    lines += ["[car]", f'model = "{car}"', ""]
    for section, model in models.items():
        lines += [f"[{section}]", f'model = "{model}"', ""]
    lines += ["[thresholds]", *(f"{k} = {v}" for k, v in thresholds.items()), ""]
    lines += ["[runtime]", *(f"{k} = {json.dumps(v)}" for k, v in runtime.items())]
    path = Path(out) / "profile.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def carried_thresholds(resume: str | None) -> dict:
    """A build without held-out photos (a compact copy) keeps the resumed release's thresholds and runtime; they
    are measured again where the photos are (a later build with every --skip_*, then train.release_eval)."""
    import tomllib

    profile = Path(resume or "") / "profile.toml"
    data = tomllib.loads(profile.read_text(encoding="utf-8")) if resume and profile.is_file() else {}
    return {"thresholds": data.get("thresholds", {}), "runtime": data.get("runtime", {}), "headline": {}}


def copy_calibration_photos(seg_data_yaml: Path, out: Path, count: int, seed: int = 0) -> Path:
    """A few of the segmenter's training photos beside the profile: the int8 segmenter is calibrated on them."""
    target = out / "calibration"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    photos = [p for p in list_images(seg_data_yaml.parent / "train" / "images") if "background" not in p.name]
    for path in random.Random(seed).sample(photos, min(count, len(photos))):
        shutil.copy2(path, target / path.name)
    return target


# --- summary -------------------------------------------------------------------------------------


class Laps:
    """Wall-clock seconds per step, printed as they end."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(now - self.last, 1)
        self.last = now
        print(f"[build] {name}: {self.timings[name]} s (total {now - self.started:.0f} s)", flush=True)

    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)


def epochs_trained(out: Path) -> dict[str, float]:
    """Release folder -> the epochs this run trained it (from each training's summary)."""
    epochs = {}
    for model in RELEASE:
        path = out / model.build_folder / "train_summary.json"
        if model.build_path and path.is_file():
            epochs[model.folder] = json.loads(path.read_text(encoding="utf-8")).get("epochs") or 0
    return epochs


def machine_name() -> str:
    """The CPU (or GPU) the run trained on, with the flags that change its speed."""
    import platform

    from pipeline.accel.precision import cpu_flags, cuda_available

    if cuda_available():
        import torch

        return torch.cuda.get_device_name(0)
    flags = sorted((cpu_flags() or frozenset()) & {"avx512_vnni", "avx512_bf16", "amx_tile"})
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return f"{name or platform.processor()}, {len(os.sched_getaffinity(0))} cores, {' '.join(flags) or 'no VNNI/BF16'}"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
