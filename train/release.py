"""The release in ``models/``: every model the pipeline needs, each laid out as a Hugging Face model repo (weights,
config, model card), ``profile.toml`` naming them with their sha256, and ``training_state.json``, what the next
training run continues from (``python -m train.build_profile --resume``).

    python -m train.release --build BUILD_DIR --out models [--evaluation release_eval.json]

packages a build of ``train.build_profile`` (its ``profile.toml``, model folders and ``build_summary.json``).
Photos never go into the release: the int8 segmenter calibrates on ``examples/`` when the profile names none.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from train.release_cards import write_cards
from train.release_int8 import refresh_int8_copies
from train.release_models import (
    EVALUATION_FILE,
    HELD_OUT_FILE,
    PROFILE_FILE,
    RELEASE,
    STATE_FILE,
    TARGETS,
    TRANSFORMERS_FILES,
    YOLO_WEIGHTS,
    ReleaseModel,
)


def copy_transformers_folder(src: Path, dst: Path, half: bool) -> Path:
    """config, preprocessing and the weights (in fp16 when ``half``: the product loads them as float32)."""
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in TRANSFORMERS_FILES[:-1]:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    tensors = load_file(src / "model.safetensors")
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors", metadata={"format": "pt"})
    return dst / "model.safetensors"


def copy_yolo_weights(src: Path, dst: Path) -> Path:
    """Ultralytics' final weights are already fp16 and stripped of the optimizer."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copy2(src, dst / YOLO_WEIGHTS)
    return dst / YOLO_WEIGHTS


def weights_of(model: ReleaseModel, out: Path) -> Path:
    folder = out / model.folder
    return folder / (YOLO_WEIGHTS if model.pipeline_tag == "image-segmentation" else "model.safetensors")


def copy_model(model: ReleaseModel, build: Path, build_profile: dict, out: Path) -> Path:
    if not model.build_path:  # the car model the build's profile names (its car-check, or a release's copy)
        src = (build / build_profile["car"]["model"]).resolve()
        if src == (out / model.folder).resolve():  # a resumed build names the release's own copy: keep it
            return weights_of(model, out)
        return copy_transformers_folder(src, out / model.folder, model.half_weights)
    src = build / model.build_path
    if not src.exists() and weights_of(model, out).is_file():  # not trained in this build (--skip_*): kept
        return weights_of(model, out)
    if model.pipeline_tag == "image-segmentation":
        return copy_yolo_weights(src, out / model.folder)
    return copy_transformers_folder(src, out / model.folder, model.half_weights)


def read_build_profile(build: Path) -> dict:
    import tomllib

    return tomllib.loads((build / PROFILE_FILE).read_text(encoding="utf-8"))


def write_release_profile(out: Path, build_profile: dict, digests: dict[str, str]) -> Path:
    """profile.toml: each role's folder (or weights file) beside it with its sha256; the build's thresholds and
    runtime options, less the calibration photos (they stay out of the release)."""
    lines = [
        "# The release: the default models of `python app.py`, `python -m pipeline` and pipeline.analyze().",
        "# Written by `python -m train.release` (docs/training.md). Paths are relative to this file.",
    ]
    for model in RELEASE:
        path = model.folder + (f"/{YOLO_WEIGHTS}" if model.pipeline_tag == "image-segmentation" else "")
        lines += ["", f"[{model.role}]", f'model = "{path}"', f'sha256 = "{digests[model.folder]}"']
    thresholds = build_profile.get("thresholds", {})
    runtime = {k: v for k, v in build_profile.get("runtime", {}).items() if k != "calibration_photos"}
    lines += ["", "[thresholds]", *(f"{k} = {json.dumps(v)}" for k, v in thresholds.items())]
    lines += ["", "[runtime]", *(f"{k} = {json.dumps(v)}" for k, v in runtime.items())]
    path = out / PROFILE_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def updated_state(previous: dict, build_summary: dict, when: str, released: bool = True) -> dict:
    """The cumulative training of each shipped model: the build's run appended to the runs before it, its epochs
    and hours added to the models' only when it replaced the release (else they describe models never shipped)."""
    state = {"models": dict(previous.get("models", {})), "runs": list(previous.get("runs", []))}
    run = {
        "date": when,
        "wall_time_s": build_summary.get("wall_time_s"),
        "timings_s": build_summary.get("timings_s", {}),
        "args": build_summary.get("args", {}),
        "epochs": build_summary.get("epochs", {}),
        "machine": build_summary.get("machine", ""),
    }
    state["runs"].append(run | {"released": released})
    for model in RELEASE:
        if not model.build_path or not released:
            continue
        entry = dict(state["models"].get(model.folder, {"epochs": 0, "train_hours": 0.0}))
        entry["epochs"] = round(entry.get("epochs", 0) + float(run["epochs"].get(model.folder, 0)), 2)
        seconds = float(run["timings_s"].get(model.lap, 0.0))
        entry["train_hours"] = round(entry.get("train_hours", 0.0) + seconds / 3600, 3)
        state["models"][model.folder] = entry
    return state


CURVE_HEADER = (
    "| run | date | machine | model | epochs (run / total) | training hours (total) | held-out figures |\n"
    "|---|---|---|---|---|---|---|\n"
)
CURVE_TITLE = "## Learning curve of the release (one row per model per run; `python -m train.release` appends)"


def curve_rows(state: dict, evaluation: dict) -> list[str]:
    """This run's row per trained model: its epochs, the cumulative training, the held-out figures measured on
    what the run made (through the product: train.release_eval)."""
    run, number = state["runs"][-1], len(state["runs"])
    rows = []
    for model in RELEASE:
        if model.folder not in state["models"]:
            continue
        entry = state["models"][model.folder]
        figures = ", ".join(f"{k} {evaluation[k]:.3f}" for k in model.figures if evaluation.get(k) is not None)
        epochs = run.get("epochs", {}).get(model.folder, 0)
        name = model.folder if run.get("released", True) else f"{model.folder} (not released)"
        rows.append(
            f"| {number} | {run['date']} | {run.get('machine', '')} | {name} | {float(epochs):.1f} / "
            f"{float(entry['epochs']):.1f} | {entry['train_hours']:.2f} | {figures or 'not measured'} |"
        )
    return rows


def append_learning_curve(doc: Path, state: dict, evaluation: dict) -> None:
    """Append this run's rows to the learning-curve table, the last section of docs/training.md (made on the
    first run)."""
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if CURVE_TITLE not in text:
        text = text.rstrip("\n") + f"\n\n{CURVE_TITLE}\n\n{CURVE_HEADER}"
    doc.write_text(text.rstrip("\n") + "\n" + "\n".join(curve_rows(state, evaluation)) + "\n", encoding="utf-8")


@dataclass
class ReleaseArguments:
    build: str = field(metadata={"help": "a train.build_profile output folder"})
    out: str = field(default="models")
    evaluation: str | None = field(default=None, metadata={"help": "train.release_eval's JSON, for the cards"})
    curve: str | None = field(default="docs/training.md", metadata={"help": "the learning curve to append to"})
    force: bool = field(default=False, metadata={"help": "replace the release even if the figures are not better"})
    int8_shared: str | None = field(
        default=None, metadata={"help": "../shared: after a refresh, make the segmenters' int8 copies (release_int8)"}
    )


def release_score(evaluation: dict) -> float | None:
    """One number to compare two releases by: the mean of each target figure over its target."""
    ratios = [evaluation[k] / target for k, target in TARGETS.items() if evaluation.get(k) is not None]
    return sum(ratios) / len(ratios) if ratios else None


def improves(new: dict, old: dict) -> bool:
    """A build replaces the release when its held-out figures are better on the whole (or none were measured)."""
    new_score, old_score = release_score(new), release_score(old)
    return old_score is None or (new_score is not None and new_score > old_score)


def package(args: ReleaseArguments) -> Path:
    """Record the run (training state, learning curve); when its figures improve on the release's, copy the build's
    models into the release with their profile, evaluation and cards."""
    build, out = Path(args.build), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = json.loads(Path(args.evaluation).read_text(encoding="utf-8")) if args.evaluation else {}
    shipped = out / EVALUATION_FILE
    previous = json.loads(shipped.read_text(encoding="utf-8")) if shipped.is_file() else {}
    refresh = args.force or improves(evaluation, previous)
    state = record_run(out, json.loads((build / "build_summary.json").read_text(encoding="utf-8")), refresh)
    if args.curve:
        append_learning_curve(Path(args.curve), state, evaluation)
    if refresh:
        copy_release(build, out)
        shipped.write_text(json.dumps(evaluation, indent=1, default=float) + "\n", encoding="utf-8")
    write_cards(out, state, evaluation if refresh else previous)
    refresh_int8_copies(out, args.int8_shared if refresh else None)
    return out / PROFILE_FILE


def record_run(out: Path, summary: dict, refreshed: bool) -> dict:
    state_path = out / STATE_FILE
    previous = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    state = updated_state(previous, summary, time.strftime("%Y-%m-%d"), refreshed)
    state_path.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    return state


def copy_release(build: Path, out: Path) -> Path:
    from pipeline.hub import file_sha256

    build_profile = read_build_profile(build)
    digests = {m.folder: file_sha256(copy_model(m, build, build_profile, out)) for m in RELEASE}
    write_held_out(build, out)
    return write_release_profile(out, build_profile, digests)


def write_held_out(build: Path, out: Path) -> Path | None:
    """The build's held-out photos as paths relative to its shared folder (names only: no photo leaves
    ../shared), so that the release's figures can be measured again on another machine."""
    split = build / "work" / "held_out_split.json"
    summary = build / "build_summary.json"
    if not split.is_file() or not summary.is_file():
        return None
    shared = Path(json.loads(summary.read_text(encoding="utf-8"))["args"]["shared"]).resolve()
    held_out = json.loads(split.read_text(encoding="utf-8"))["held_out"]
    relative = {s: sorted(Path(p).resolve().relative_to(shared).as_posix() for p in ps) for s, ps in held_out.items()}
    target = out / HELD_OUT_FILE
    target.write_text(json.dumps({"held_out": relative}, indent=0) + "\n", encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(ReleaseArguments).parse_args_into_dataclasses(args=argv)
    print(package(args))


if __name__ == "__main__":
    main()
