"""What changes an answer, in three parts:

- ``ModelSet``: which models run and how (precision, backend, sizes). Loaded once per process; hashable, so it
  is the key of the loaded stages.
- ``Thresholds``: how strict the verdicts are. Per request (the app's sliders, the CLI flags, the API
  parameters all come from the fields' metadata here).
- ``Limits``: what one photo may be (pixels, aspect ratio) and the working resolution it is analysed at.

``Settings`` bundles them with the batch options; ``Settings.from_env`` reads a TOML profile and env vars.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CAR_MODEL = "google/vit-base-patch16-224"
DEFAULT_DAMAGE_MODEL = "openai/clip-vit-base-patch32"
# Pinned by `python -m pipeline.hub pin` before publishing (needs the Hub): commit and sha256 of the file.
DEFAULT_SEG_MODEL = "abdullahg7/cardd-yolov8s:v2.0/best.pt"

# Env var of each model role: named in every load error so users know what to set.
ENV_VARS = {
    "car": "CAR_MODEL",
    "damage": "DAMAGE_MODEL",
    "severity": "SEVERITY_MODEL",
    "segmenter": "SEG_MODEL",
    "parts": "PART_MODEL",
}
PROFILE_ENV_VAR = "MODELS_PROFILE"
# The project's own trained models: the default wherever nothing else is named (offline, no ../shared needed).
RELEASE_PROFILE = Path(__file__).resolve().parents[1] / "models" / "profile.toml"
# The profile name of the public Hub models (the dataclass defaults below): `--models hub`, MODELS_PROFILE=hub.
HUB_PROFILE = "hub"
MODELS_FLAG_HELP = f"TOML model profile, or '{HUB_PROFILE}' (default: {PROFILE_ENV_VAR}, else the release in models/)"
CALIBRATION_ENV_VAR = "CALIBRATION_PHOTOS"
PRECISIONS = ("auto", "fp32", "bf16", "int8")
SEG_BACKENDS = ("auto", "torch", "openvino")
# How the damage verdict uses the segmenter's evidence (see README, "The cascade").
DAMAGE_RULES = ("classifier", "noisy_or", "max", "any_mask")


@dataclass(frozen=True)
class ModelRef:
    """A model: a Hub repo id (optional revision, optional file inside the repo) or a local path, and
    optionally the sha256 its weights file must have.

    Text form, as in env vars and profiles: ``owner/name[@revision][:file/in/repo][#sha256=HEX]`` or a path.
    """

    id: str
    revision: str | None = None
    filename: str | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, text: str, base_dir: Path | None = None) -> ModelRef:
        text, _, digest = text.strip().partition("#sha256=")
        if not text:
            raise ValueError("empty model reference")
        sha256 = digest.strip().lower() or None
        local = _as_local_path(text, base_dir)
        if local is not None:
            return cls(str(local), sha256=sha256)
        repo, _, filename = text.partition(":")
        repo, _, revision = repo.partition("@")
        return cls(repo, revision or None, filename or None, sha256)

    @property
    def is_local(self) -> bool:
        return Path(self.id).exists()

    @property
    def looks_local(self) -> bool:
        """A path, whether or not it exists (never shown to visitors: it is the server's layout)."""
        return self.is_local or self.id.startswith(("/", ".", "~"))

    @property
    def public_name(self) -> str:
        """The reference without the server's folders: a Hub id as it is, a local path by its last part."""
        return f"{Path(self.id).name} (local)" if self.looks_local else str(self)

    def __str__(self) -> str:
        text = self.id
        if self.revision:
            text += f"@{self.revision}"
        if self.filename:
            text += f":{self.filename}"
        if self.sha256:
            text += f"#sha256={self.sha256}"
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


def _ref(text: str) -> ModelRef:
    return ModelRef.parse(text)


@dataclass(frozen=True)
class ModelSet:
    """Which models run, and how. Loaded once per process: this is the key of the loaded stages."""

    car: ModelRef = field(default_factory=lambda: _ref(DEFAULT_CAR_MODEL))
    damage: ModelRef = field(default_factory=lambda: _ref(DEFAULT_DAMAGE_MODEL))
    segmenter: ModelRef = field(default_factory=lambda: _ref(DEFAULT_SEG_MODEL))
    severity: ModelRef | None = None  # a grade classifier; None: grades from the damage model, if it has them
    parts: ModelRef | None = None  # a car-part segmenter; None: no parts
    precision: str = "auto"  # auto (bf16 with AMX; VNNI: int8 segmenter copies; else f32 copies) | fp32 | bf16 | int8
    seg_backend: str = "auto"  # auto (OpenVINO when installed, unless precision="fp32") | torch | openvino
    # Photos like the uploads: with int8 and OpenVINO the segmenter runs a static int8 copy calibrated on them.
    calibration_photos: Path | None = None
    seg_image_size: int = 640
    part_image_size: int = 640
    # One damage instance where the segmenter's types (dent / scratch / ...) overlap, the best-scoring type kept:
    # class-aware NMS stacks a "dent" and a "scratch" mask on the same damage, counted twice.
    seg_agnostic_nms: bool = False
    # A part model of *damaged* parts (the release's, trained on damaged-part polygons) also names damaged parts by
    # itself: its instances at this confidence on a photo judged damaged, masks or none. None: a model of car parts
    # (every visible part), which only places the damage masks.
    damaged_part_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.seg_backend not in SEG_BACKENDS:
            raise ValueError(f"seg_backend must be one of {', '.join(SEG_BACKENDS)}, not {self.seg_backend!r}")

    def refs(self) -> dict[str, ModelRef]:
        """role -> reference, for the roles that have a model."""
        roles = {"car": self.car, "damage": self.damage, "severity": self.severity}
        roles |= {"segmenter": self.segmenter, "parts": self.parts}
        return {role: ref for role, ref in roles.items() if ref is not None}


def _threshold(label: str, help: str, flag: str) -> dict[str, str]:
    return {"label": label, "help": help, "flag": flag}


@dataclass(frozen=True)
class Thresholds:
    """How strict the verdicts are; changes per request. The metadata is what the CLI flags, the app's
    controls and the API docs say about each one."""

    car: float = field(
        default=0.02,
        metadata=_threshold("Car threshold", "minimum car probability to call the photo a car", "--car-threshold"),
    )
    damage: float = field(
        default=0.5,
        metadata=_threshold(
            "Damage threshold", "minimum damage probability to call a car damaged", "--damage-threshold"
        ),
    )
    mask: float = field(
        default=0.25,
        metadata=_threshold("Mask threshold", "minimum confidence of a damage instance (mask)", "--mask-threshold"),
    )
    always_segment: bool = field(
        default=False,
        metadata=_threshold("Always segment", "show masks on cars judged undamaged too", "--always-segment"),
    )
    iou: float = 0.5  # NMS overlap between damage instances (not a user control)
    # A grade less likely than this (among the three) is left out: "damaged, grade unsure" beats a coin toss.
    # The build sets it from its held-out coverage sweep (docs/training.md); not a user control.
    grade: float = 0.0
    # Rule any_mask: an instance at least this confident makes the car damaged by itself (0: any instance shown).
    # Apart from the mask threshold, since the release shows faint instances (0.05) that are no verdict; not a user
    # control, the profile's (docs/training.md).
    mask_evidence: float = 0.0

    def __post_init__(self) -> None:
        for name in ("car", "damage", "mask", "iou", "grade", "mask_evidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"the {name} threshold must be between 0 and 1, not {value}")

    @classmethod
    def controls(cls) -> list[tuple[str, Any, dict[str, str]]]:
        """(name, default, metadata) of the thresholds people set, in order."""
        return [(f.name, f.default, dict(f.metadata)) for f in fields(cls) if f.metadata]


@dataclass(frozen=True)
class Limits:
    """What one photo may be, and the size it is analysed at.

    ``working_size``: the longest side of the copy the models, masks and the overlay work on (see README,
    "Working resolution"); boxes, COCO masks and areas are reported in the original photo's pixels.
    """

    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb limit (~89 MP)
    max_aspect: float = 20.0  # longest side / shortest side; beyond it no photo of a car is left to see
    working_size: int = 1600  # chosen by measurement: docs/reliability.md


@dataclass(frozen=True)
class Settings:
    """Everything that changes an answer."""

    models: ModelSet = field(default_factory=ModelSet)
    thresholds: Thresholds = field(default_factory=Thresholds)
    limits: Limits = field(default_factory=Limits)
    damage_rule: str = "classifier"  # how the segmenter's evidence joins the damage verdict: DAMAGE_RULES
    cascade: bool = True  # False: run every stage on every photo (benchmarks, debugging)
    max_detections: int = 50
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.damage_rule not in DAMAGE_RULES:
            raise ValueError(f"damage_rule must be one of {', '.join(DAMAGE_RULES)}, not {self.damage_rule!r}")

    def with_thresholds(self, **changes: object) -> Settings:
        """A copy with the given thresholds changed; None values are ignored (unset flags and parameters)."""
        return replace(self, thresholds=_replaced(self.thresholds, changes))

    def with_models(self, **changes: object) -> Settings:
        return replace(self, models=_replaced(self.models, changes))

    def with_limits(self, **changes: object) -> Settings:
        return replace(self, limits=_replaced(self.limits, changes))

    @classmethod
    def from_env(cls, profile: str | Path | None = None) -> Settings:
        """A profile (the argument, else ``MODELS_PROFILE``, else the release in models/; ``hub``: the Hub
        models), then the model and calibration env vars."""
        profile = profile or _env(PROFILE_ENV_VAR) or default_profile()
        settings = cls() if profile is None or str(profile) == HUB_PROFILE else load_profile(profile)
        models = {role: ModelRef.parse(os.environ[var]) for role, var in ENV_VARS.items() if _env(var)}
        if _env(CALIBRATION_ENV_VAR):
            models["calibration_photos"] = Path(os.environ[CALIBRATION_ENV_VAR]).expanduser().resolve()
        return settings.with_models(**models)


def default_profile() -> Path | None:
    """The release's profile when the checkout has it (a pip-installed ``pipeline`` alone falls back to the Hub)."""
    return RELEASE_PROFILE if RELEASE_PROFILE.is_file() else None


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _replaced(obj: Any, changes: dict[str, object]) -> Any:
    return replace(obj, **{k: v for k, v in changes.items() if v is not None})


_MODEL_SECTIONS = ("car", "damage", "severity", "segmenter", "parts")
_THRESHOLD_KEYS = ("car", "damage", "mask", "iou", "grade", "mask_evidence")
_RUNTIME_MODEL_KEYS = {
    "precision": str, "seg_backend": str, "seg_image_size": int, "part_image_size": int,
    "damaged_part_confidence": float, "seg_agnostic_nms": bool,
}  # fmt: skip
_RUNTIME_KEYS = {"batch_size": int, "damage_rule": str}


def load_profile(path: str | Path) -> Settings:
    """Read a TOML profile: the models (paths relative to the file), thresholds and runtime options.

    ```toml
    [car]
    model = "../shared/models/imagenet-efficientnet-lite0"
    [damage]
    model = "damage-classifier"          # a folder beside this file
    [segmenter]
    model = "owner/repo"                 # or a local .pt / .onnx
    file = "weights/best.pt"
    revision = "0123abcd..."             # a commit, to pin it
    sha256 = "..."                       # checked before the weights are loaded
    [parts]                              # optional; also [severity]
    model = "parts/best.pt"
    [thresholds]
    car = 0.02
    damage = 0.5
    mask = 0.25
    always_segment = false
    mask_evidence = 0.5                  # optional: rule any_mask counts instances this confident (0: any shown)
    [runtime]                            # optional
    precision = "auto"                   # or "fp32", "bf16", "int8"
    seg_backend = "auto"                 # or "torch", "openvino"
    seg_image_size = 512
    seg_agnostic_nms = true              # one instance where two damage types overlap
    damage_rule = "noisy_or"             # classifier | noisy_or | max | any_mask
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
    base = path.parent.resolve()
    models: dict[str, object] = {s: _profile_ref(data[s], base) for s in _MODEL_SECTIONS if data.get(s)}
    runtime = data.get("runtime", {})
    served, options = runtime_options(runtime)
    models |= served
    if "calibration_photos" in runtime:
        models["calibration_photos"] = (base / str(runtime["calibration_photos"])).resolve()
    section = data.get("thresholds", {})
    thresholds: dict[str, object] = {key: float(section[key]) for key in _THRESHOLD_KEYS if key in section}
    if "always_segment" in section or "always_segment" in runtime:  # [runtime] in older profiles
        thresholds["always_segment"] = bool(section.get("always_segment", runtime.get("always_segment")))
    return replace(Settings(**options), models=ModelSet(**models), thresholds=Thresholds(**thresholds))


def runtime_options(runtime: dict) -> tuple[dict[str, object], dict[str, object]]:
    """A profile's ``[runtime]`` table, typed: (``ModelSet`` fields, ``Settings`` fields). ``calibration_photos``
    (a path beside the file) is the caller's."""
    served = {key: kind(runtime[key]) for key, kind in _RUNTIME_MODEL_KEYS.items() if key in runtime}
    return served, {key: kind(runtime[key]) for key, kind in _RUNTIME_KEYS.items() if key in runtime}


def _profile_ref(entry: str | dict, base: Path) -> ModelRef:
    """A model section: ``model`` (id or path), and optionally ``file``, ``revision`` and ``sha256``."""
    if isinstance(entry, str):
        entry = {"model": entry}
    ref = ModelRef.parse(str(entry["model"]), base_dir=base)
    sha256 = str(entry["sha256"]).lower() if entry.get("sha256") else ref.sha256
    if ref.is_local and entry.get("file"):  # a folder of weights plus the file in it
        return ModelRef(str(Path(ref.id) / entry["file"]), sha256=sha256)
    if ref.is_local:
        return replace(ref, sha256=sha256)
    return replace(
        ref,
        revision=entry.get("revision", ref.revision),
        filename=entry.get("file", ref.filename),
        sha256=sha256,
    )
