"""Fast precisions judged by accuracy, not by agreement: the release's held-out photos (models/held_out.json, in
../shared) through the CLI at fp32 (eager PyTorch, the reference) and at each fast precision this CPU runs,
scored against the photos' labels by train.release_eval; the deltas are fast minus fp32.

A fast precision is within the limits when its mask mAP50 (nm/pd-style and lensor photos) is at most 0.01 below
fp32's and its verdict accuracy at most 0.5 points below (issue 25); docs/performance.md records the decision per
CPU make.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.accel.precision import cpu_supports, resolve_precision
from pipeline.settings import RELEASE_PROFILE

from .common import SHARED

HELD_OUT = RELEASE_PROFILE.parent / "held_out.json"
MAP50_KEYS = ("mask_map50_nmpd", "mask_map50_lensor")
LIMITS = {"map50": 0.01, "verdict_accuracy": 0.005}


def fast_precisions() -> list[str]:
    """The precisions to judge here: what 'auto' picks, int8, and bf16 where the CPU has bf16 arithmetic."""
    candidates = ["auto", "int8"] + (["bf16"] if cpu_supports("bf16") else [])
    return list(dict.fromkeys(candidates))


def accuracy_vs_fp32(profile: str | None, per_kind: int, precisions: list[str] | None = None) -> dict[str, object]:
    """Top-level keys for the benchmark (auto's deltas) and every precision's figures under ``accuracy``."""
    if not (SHARED / "data").is_dir() or not HELD_OUT.is_file():
        return {"accuracy": "skipped: ../shared or models/held_out.json absent"}
    if profile is not None and Path(profile).resolve() != RELEASE_PROFILE.resolve():
        return {"accuracy": "skipped: the held-out split is the release's (run without --models)"}
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        reference = _figures("fp32", per_kind, Path(tmp))
        sides = {p: _figures(p, per_kind, Path(tmp)) for p in precisions or fast_precisions()}
    judged = {p: _deltas(figures, reference) for p, figures in sides.items()}
    auto = judged["auto"] if "auto" in judged else next(iter(judged.values()))
    return {
        "map50_delta_vs_fp32": auto["map50_delta"],
        "verdict_accuracy_delta_vs_fp32": auto["verdict_accuracy_delta"],
        "accuracy": {
            "auto_resolves_to": {role: resolve_precision("auto", role) for role in ("classifier", "segmenter")},
            "photos_per_kind": per_kind,
            "fp32": _kept(reference),
            **{p: _kept(sides[p]) | judged[p] for p in sides},
        },
    }


def _figures(precision: str, per_kind: int, scratch: Path) -> dict:
    from train.release_eval import EvalArguments, evaluate_release

    args = EvalArguments(
        shared=str(SHARED), work=str(HELD_OUT), precision=precision, per_kind=per_kind,
        out=str(scratch / f"{precision}.json"), scratch=str(scratch / precision),
    )  # fmt: skip
    return evaluate_release(args)


def _deltas(fast: dict, reference: dict) -> dict[str, object]:
    """Fast minus fp32; the mAP50 delta is the worse of the two kinds of photo."""
    map50 = min(_delta(fast, reference, key) for key in MAP50_KEYS)
    verdicts = _delta(fast, reference, "verdict_accuracy")
    within = map50 >= -LIMITS["map50"] and verdicts >= -LIMITS["verdict_accuracy"]
    return {"map50_delta": round(map50, 4), "verdict_accuracy_delta": round(verdicts, 4), "within_limits": within}


def _delta(fast: dict, reference: dict, key: str) -> float:
    return float(fast.get(key) or 0.0) - float(reference.get(key) or 0.0)


def _kept(figures: dict) -> dict[str, object]:
    keys = (*MAP50_KEYS, "verdict_accuracy", "car_balanced_accuracy", "damaged_with_mask", "analysed")
    return {key: figures.get(key) for key in keys}
