"""The benchmarks' models: the release in models/ (what ships, the default), a profile, or the Hub architectures.

Hub: ViT-B/16 with the 1000 ImageNet labels, CLIP ViT-B/32, YOLOv8s-seg with the 6 CarDD classes at 640, the real
ones when cached, else random-init. Random weights time exactly like trained ones (same graphs, same shapes); only
the answers are meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import (
    ModelRef,
    ModelSet,
    Settings,
    testing,  # the same random-model builders as the tests, at full size
)
from pipeline.settings import DEFAULT_CAR_MODEL, DEFAULT_DAMAGE_MODEL, DEFAULT_SEG_MODEL, HUB_PROFILE, RELEASE_PROFILE

CARDD_CLASSES = ["dent", "scratch", "crack", "glass shatter", "lamp broken", "tire flat"]
SHARED_IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "models" / "imagenet-efficientnet-lite0"


def chosen_settings(models: str | None, model_dir: Path) -> tuple[Settings, dict[str, str], str]:
    """``--models``: None = the release, 'hub' = the Hub architectures, else a profile's path; returns the settings,
    where each model came from, and the profile a fresh process names to get them."""
    if models == HUB_PROFILE:
        settings, origin = bench_settings(model_dir)
        return settings, origin, HUB_PROFILE
    profile = Path(models) if models else RELEASE_PROFILE
    settings = Settings.from_env(profile)
    origin = {role: ref.public_name for role, ref in settings.models.refs().items()}
    return settings, {"profile": str(profile), **origin}, str(profile)


def bench_settings(model_dir: Path) -> tuple[Settings, dict[str, str]]:
    """Settings with the three full-size models, and where each came from ('hub cache' or 'random init')."""
    model_dir.mkdir(parents=True, exist_ok=True)
    refs, origin = {}, {}
    for role, default, build in (
        ("car", DEFAULT_CAR_MODEL, _vit_b16),
        ("damage", DEFAULT_DAMAGE_MODEL, _clip_b32),
        ("segmenter", DEFAULT_SEG_MODEL, _yolov8s_seg),
    ):
        cached = _cached(ModelRef.parse(default))
        if cached is not None:
            refs[role], origin[role] = ModelRef(str(cached)), f"{default} (Hub cache)"
        else:
            refs[role], origin[role] = ModelRef(str(build(model_dir))), "random init (same architecture)"
    # Up to 6 instances a photo, as the real CarDD model finds on a damaged car; the random-init
    # segmenter would otherwise return either none or max_det (50) near-identical candidates.
    models = ModelSet(car=refs["car"], damage=refs["damage"], segmenter=refs["segmenter"])
    settings = Settings(models=models, max_detections=6)
    return settings, origin


def _cached(ref: ModelRef) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if ref.filename:
            return Path(hf_hub_download(ref.id, ref.filename, local_files_only=True))
        return Path(snapshot_download(ref.id, local_files_only=True))
    except Exception:
        return None


def _imagenet_labels() -> list[str]:
    config = SHARED_IMAGENET / "config.json"
    if config.is_file():
        return list(json.loads(config.read_text())["label_names"])
    from pipeline.car import IMAGENET_CAR_CLASSES

    return sorted(IMAGENET_CAR_CLASSES) + [f"class {i}" for i in range(1000 - len(IMAGENET_CAR_CLASSES))]


def _vit_b16(model_dir: Path) -> Path:
    folder = model_dir / "vit-b16-imagenet"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    labels = _imagenet_labels()
    config = ViTConfig(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder


def _clip_b32(model_dir: Path) -> Path:
    folder = model_dir / "clip-vit-b32"
    if not (folder / "config.json").is_file():
        testing.clip_model(folder, full_size=True)  # text runs once at load: its vocabulary doesn't matter
    return folder


def _yolov8s_seg(model_dir: Path) -> Path:
    weights = model_dir / "yolov8s-seg" / "random-yolov8s-seg.pt"
    if weights.is_file():
        return weights
    # bias 1.0: plenty of confident 'dent' candidates, so the mask stage does real work (max_detections caps them)
    return testing.yolo_seg(weights.parent, CARDD_CLASSES, scale="s", first_class_bias=1.0)
