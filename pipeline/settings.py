"""Settings: thresholds and model references, from code, env vars or a TOML profile."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_CAR_MODEL = "google/vit-base-patch16-224"
DEFAULT_DAMAGE_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_SEG_MODEL = "abdullahg7/cardd-yolov8s:v2.0/best.pt"

# Env var of each model role: named in every load error so users know what to set.
ENV_VARS = {"car": "CAR_MODEL", "damage": "DAMAGE_MODEL", "segmenter": "SEG_MODEL"}
PROFILE_ENV_VAR = "MODELS_PROFILE"
CALIBRATION_ENV_VAR = "CALIBRATION_PHOTOS"


@dataclass(frozen=True)
class ModelRef:
    """A model: a Hub repo id (optional revision, optional file inside the repo) or a local path.

    Text form, as in env vars and profiles: ``owner/name[@revision][:file/in/repo]`` or a path.
    """

    id: str
    revision: str | None = None
    filename: str | None = None

    @classmethod
    def parse(cls, text: str, base_dir: Path | None = None) -> ModelRef:
        text = text.strip()
        if not text:
            raise ValueError("empty model reference")
        local = _as_local_path(text, base_dir)
        if local is not None:
            return cls(str(local))
        repo, _, filename = text.partition(":")
        repo, _, revision = repo.partition("@")
        return cls(repo, revision or None, filename or None)

    @property
    def is_local(self) -> bool:
        return Path(self.id).exists()

    def __str__(self) -> str:
        text = self.id
        if self.revision:
            text += f"@{self.revision}"
        if self.filename:
            text += f":{self.filename}"
        return text


def _as_local_path(text: str, base_dir: Path | None) -> Path | None:
    """A reference that names an existing file or folder (or looks like a path) is local."""
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        candidate = base_dir / path
        if candidate.exists() or text.startswith((".", "/")):
            return candidate.resolve()
    weights_file = path.suffix in {".pt", ".onnx"} and ":" not in text  # 'owner/repo:best.pt' is a Hub file
    if path.exists() or text.startswith(("/", "./", "../", "~")) or weights_file:
        return path.resolve()
    return None


@dataclass(frozen=True)
class Settings:
    """Everything that changes an answer. Thresholds are probabilities in [0, 1]."""

    car_model: ModelRef = field(default_factory=lambda: ModelRef.parse(DEFAULT_CAR_MODEL))
    damage_model: ModelRef = field(default_factory=lambda: ModelRef.parse(DEFAULT_DAMAGE_MODEL))
    seg_model: ModelRef = field(default_factory=lambda: ModelRef.parse(DEFAULT_SEG_MODEL))
    car_threshold: float = 0.1  # P(car) sums many ImageNet classes: 0.1 keeps close-ups (see README)
    damage_threshold: float = 0.5
    mask_threshold: float = 0.25  # minimum confidence of a damage instance
    iou_threshold: float = 0.5  # NMS overlap between damage instances
    always_segment: bool = False  # run the segmenter on cars judged undamaged too
    cascade: bool = True  # False: run every stage on every photo (benchmarks, debugging)
    seg_image_size: int = 640
    max_detections: int = 50
    max_pixels: int = 89_478_485  # per photo: Pillow's own decompression-bomb limit (~89 MP)
    precision: str = "auto"  # "auto" (bf16 with AMX, int8 with VNNI, else fp32), "fp32", "bf16" or "int8"
    seg_backend: str = "auto"  # "auto" (OpenVINO when installed, unless precision="fp32"), "torch" or "openvino"
    # A folder of photos like the ones to analyse: with int8 precision and OpenVINO, the segmenter then runs a
    # static int8 copy calibrated on them (~3x faster; masks drift more than the classifiers, see README).
    calibration_photos: Path | None = None
    batch_size: int = 8

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields changed; None values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def model_refs(self) -> dict[str, ModelRef]:
        return {"car": self.car_model, "damage": self.damage_model, "segmenter": self.seg_model}

    @classmethod
    def from_env(cls, profile: str | Path | None = None) -> Settings:
        """Defaults, then a profile (argument or ``MODELS_PROFILE``), then the model and calibration env vars."""
        profile = profile or os.environ.get(PROFILE_ENV_VAR)
        settings = load_profile(profile) if profile else cls()
        overrides: dict[str, object] = {
            f"{'seg' if role == 'segmenter' else role}_model": ModelRef.parse(os.environ[var])
            for role, var in ENV_VARS.items()
            if os.environ.get(var, "").strip()
        }
        if os.environ.get(CALIBRATION_ENV_VAR, "").strip():
            overrides["calibration_photos"] = Path(os.environ[CALIBRATION_ENV_VAR]).expanduser().resolve()
        return replace(settings, **overrides)


_PROFILE_SECTIONS = {"car": "car_model", "damage": "damage_model", "segmenter": "seg_model"}
_THRESHOLD_KEYS = {
    "car": "car_threshold",
    "damage": "damage_threshold",
    "mask": "mask_threshold",
    "iou": "iou_threshold",
}
_RUNTIME_KEYS = {"precision": str, "seg_backend": str, "seg_image_size": int, "batch_size": int, "always_segment": bool}


def load_profile(path: str | Path) -> Settings:
    """Read a TOML profile naming the three models (paths relative to the file) and thresholds.

    ```toml
    [car]
    model = "../shared/models/imagenet-efficientnet-lite0"
    [damage]
    model = "damage-classifier"          # a folder beside this file
    [segmenter]
    model = "owner/repo"                 # or a local .pt / .onnx
    file = "weights/best.pt"
    revision = "main"
    [thresholds]
    car = 0.5
    damage = 0.5
    mask = 0.25
    [runtime]                            # optional
    precision = "auto"                   # or "fp32", "bf16", "int8"
    seg_backend = "auto"                 # or "torch", "openvino"
    calibration_photos = "photos"        # a folder beside this file: int8 segmenter calibrated on them
    ```
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"model profile not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"model profile {path} is not valid TOML: {exc}") from None
    changes: dict[str, object] = {}
    for section, field_name in _PROFILE_SECTIONS.items():
        entry = data.get(section)
        if not entry:
            continue
        if isinstance(entry, str):
            entry = {"model": entry}
        ref = ModelRef.parse(str(entry["model"]), base_dir=path.parent.resolve())
        if ref.is_local and entry.get("file"):  # a folder of weights plus the file in it
            ref = ModelRef(str(Path(ref.id) / entry["file"]))
        elif not ref.is_local and (entry.get("revision") or entry.get("file")):
            ref = replace(ref, revision=entry.get("revision", ref.revision), filename=entry.get("file", ref.filename))
        changes[field_name] = ref
    for key, field_name in _THRESHOLD_KEYS.items():
        if key in data.get("thresholds", {}):
            changes[field_name] = float(data["thresholds"][key])
    for key, kind in _RUNTIME_KEYS.items():
        if key in data.get("runtime", {}):
            changes[key] = kind(data["runtime"][key])
    if "calibration_photos" in data.get("runtime", {}):
        changes["calibration_photos"] = (path.parent / str(data["runtime"]["calibration_photos"])).resolve()
    return replace(Settings(), **changes)
