"""Damaged parts, end to end: each photo through ``pipeline.analyze_batch`` (car check, damage check, the damage
masks it shows, each placed on its part by ``pipeline.parts``), its ``Analysis.damaged_parts`` (what a report
shows) against the photo's labels. No rule of its own for which part a damage lies on: the figure is the product's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline import Settings, load_profile
from pipeline.parts import PART_CONFIDENCE
from train.common import offline_env
from train.evaluate.metrics import set_f1
from train.evaluate.product import analyses

# Part names (the part segmenter's, dsmlr's) and yb's damaged-part names -> the groups both can be compared in.
# Mirrors and wheels have no yb group: a damage on them is left out of the comparison.
PART_GROUPS = {
    "hood": "bonnet/hood", "bonnet": "bonnet/hood",
    "front_bumper": "bumper", "back_bumper": "bumper", "bumper": "bumper",
    "trunk": "dickey/trunk/tailgate", "tailgate": "dickey/trunk/tailgate", "dickey": "dickey/trunk/tailgate",
    "front_left_door": "door", "front_right_door": "door", "back_left_door": "door", "back_right_door": "door",
    "door": "door",
    "fender": "fender",
    "front_left_light": "light", "front_right_light": "light", "back_left_light": "light",
    "back_right_light": "light", "light": "light",
    "front_glass": "windshield/glass", "back_glass": "windshield/glass", "windshield": "windshield/glass",
}  # fmt: skip


def part_group(name: str) -> str | None:
    return PART_GROUPS.get(name.strip().lower())


def part_groups(names: Iterable[str]) -> set[str]:
    """The comparable groups of some part names (names with no group dropped)."""
    return {group for name in names if (group := part_group(name))}


def yolo_val_samples(data: str | Path) -> list:
    """The val split of a YOLO data yaml as samples (photo, [(class name, polygon)])."""
    import yaml

    from train.sources import read_yolo_seg

    config = yaml.safe_load(Path(data).read_text())
    names = config["names"]
    names = names if isinstance(names, list) else [names[i] for i in sorted(names)]
    return read_yolo_seg(Path(config["path"]) / config["val"], names)


def evaluate_damaged_parts(settings: Settings | str | Path, data: str | Path) -> dict:
    """Per photo, the damaged-part groups the product reports vs the photo's labels, both mapped by PART_GROUPS;
    micro F1 over (photo, group) pairs, and per group.

    ``settings``: the product's settings (or a profile .toml) with a part segmenter; the build passes the settings
    its profile will hold. ``data``: a YOLO data yaml whose val split holds yb-style photos and labels (yb class
    names). Photos the product refuses are left out (``refused``), as the CLI's report marks them failed.
    """
    offline_env()
    profile = None if isinstance(settings, Settings) else str(settings)
    settings = settings if isinstance(settings, Settings) else load_profile(settings)
    if settings.models.parts is None:
        raise ValueError("damaged parts need a part segmenter ([parts] in the profile)")
    samples, truth, predicted, damaged, with_mask = yolo_val_samples(data), [], [], 0, 0
    for i, analysis in analyses([sample.image for sample in samples], settings):
        truth.append(part_groups(name for name, _ in samples[i].polygons))
        predicted.append(part_groups(analysis.damaged_parts))
        damaged, with_mask = damaged + analysis.is_damaged, with_mask + bool(analysis.detections)
    scores, n = set_f1(truth, predicted), len(truth)
    metrics = {
        "task": "damaged_parts", "damage_model": str(settings.models.segmenter),
        "part_model": str(settings.models.parts), "data": str(data), "n": n, "refused": len(samples) - n,
        "damage_rule": settings.damage_rule, "photos_judged_damaged": damaged / max(n, 1),
        "photos_with_a_damage_mask": with_mask / max(n, 1),
        "f1": scores["all"]["f1"], "precision": scores["all"]["precision"], "recall": scores["all"]["recall"],
        "per_group": scores, "mask_threshold": settings.thresholds.mask, "part_threshold": PART_CONFIDENCE,
    }  # fmt: skip
    return metrics | ({"profile": profile} if profile else {})
