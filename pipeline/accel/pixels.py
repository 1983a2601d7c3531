"""An image classifier's input pixels without transformers: resize, centre crop, rescale and normalise with PIL and
NumPy, from the model's own processor settings.

Why: importing transformers' image processors imports torchvision and ``torch._dynamo``, about 5 s of a cold start.
A spec is written beside a classifier's OpenVINO copy only when it gives the same pixels as the library's processor
on test images (``matches``); without one the library's processor is used.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPEC_FILE = "pixels.json"
_TIMM_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}
_METADATA = {
    "image_processor_type", "processor_class", "_processor_class", "do_convert_rgb", "input_data_format",
    "data_format", "return_tensors", "device", "disable_grouping", "default_to_square",
}  # fmt: skip


@dataclass(frozen=True)
class PixelSpec:
    resize: tuple[int, int] | None  # (height, width) for a fixed size
    shortest_edge: int | None  # else the shorter side to this, the aspect kept
    resample: int  # PIL resampling filter
    crop: tuple[int, int] | None  # centre crop (height, width)
    crop_round: bool  # the crop's offset rounded (torchvision, timm) rather than floored (transformers)
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, settings: dict) -> PixelSpec | None:
        """From an image processor's ``to_dict()``; None when it does something this spec cannot."""
        if "data_config" in settings:
            return _from_timm(settings["data_config"])
        # Any other setting that is on (do_pad, include_top, crop_pct, ...) is a step this spec does not take.
        unknown = {k for k, v in settings.items() if k not in _KNOWN and k not in _METADATA and v}
        if unknown or not settings.get("do_resize", True):
            return None
        size = settings.get("size") or {}
        crop = settings.get("crop_size") if settings.get("do_center_crop") else None
        fixed = (size["height"], size["width"]) if {"height", "width"} <= size.keys() else None
        if fixed is None and "shortest_edge" not in size:
            return None
        normalize = settings.get("do_normalize", True)
        return cls(
            resize=fixed,
            shortest_edge=None if fixed else int(size["shortest_edge"]),
            resample=int(settings.get("resample", 2)),
            crop=(crop["height"], crop["width"]) if crop else None,
            crop_round=False,
            scale=float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0,
            mean=tuple(settings.get("image_mean", (0.0,) * 3)) if normalize else (0.0,) * 3,
            std=tuple(settings.get("image_std", (1.0,) * 3)) if normalize else (1.0,) * 3,
        )

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 3, H, W) float32 network inputs; inside ``shared_pixels`` each photo's once per spec."""
        made = _SHARED.get()
        if made is None:
            return np.stack([self._one(image) for image in images])
        for image in images:  # the photos outlive the pass, so their ids stay theirs
            if (self, id(image)) not in made:
                made[self, id(image)] = self._one(image)
        return np.stack([made[self, id(image)] for image in images])

    def _one(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB") if image.mode != "RGB" else image
        width, height = image.size
        if self.resize is not None:
            target = (self.resize[1], self.resize[0])
        else:  # shorter side to shortest_edge, the longer one truncated as transformers and torchvision do
            short, long = sorted((width, height))
            other = int(self.shortest_edge * long / short)
            target = (self.shortest_edge, other) if width <= height else (other, self.shortest_edge)
        image = image.resize(target, resample=Image.Resampling(self.resample)) if target != image.size else image
        if self.crop is not None:
            image = _centre_crop(image, self.crop, self.crop_round)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.scale)
        pixels = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return pixels.transpose(2, 0, 1)

    def write(self, folder: Path) -> None:
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, folder: Path) -> PixelSpec | None:
        path = folder / SPEC_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**tuples)


_SHARED: ContextVar[dict[tuple[PixelSpec, int], np.ndarray] | None] = ContextVar("shared_pixels", default=None)


@contextlib.contextmanager
def shared_pixels() -> Iterator[None]:
    """Within, a photo's pixels are made once per spec: the car and damage checks of one pass over a batch take
    the same photos and, trained from one base model, often the same spec (about a millisecond a photo each).
    Scoped to one pass (and one thread), so a photo changed between two calls is never read stale."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


_KNOWN = {
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
    "do_normalize", "image_mean", "image_std",
}  # fmt: skip


def _from_timm(config: dict) -> PixelSpec | None:
    """timm's evaluation transform (centre mode): shorter side to size / crop_pct, centre crop, normalise."""
    if config.get("crop_mode", "center") != "center" or config.get("interpolation") not in _TIMM_RESAMPLE:
        return None
    _, height, width = config["input_size"]
    crop_pct = float(config.get("crop_pct") or 1.0)
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if scaled[0] != scaled[1]:
        return None
    return PixelSpec(
        resize=None,
        shortest_edge=scaled[0],
        resample=_TIMM_RESAMPLE[config["interpolation"]],
        crop=(height, width),
        crop_round=True,
        scale=1 / 255,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )


def _centre_crop(image: Image.Image, size: tuple[int, int], rounded: bool) -> Image.Image:
    height, width = size
    if rounded:
        top, left = round((image.height - height) / 2.0), round((image.width - width) / 2.0)
    else:
        top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))  # PIL pads with black past the edges, as both do


def matches(spec: PixelSpec, processor) -> bool:
    """Whether the spec gives the library processor's pixels on test images of awkward sizes: at most 2 grey levels
    apart anywhere and 0.05 on average (PIL's resampling rounds a few pixels a level apart between the two ways of
    calling it; the network cannot tell)."""
    rng = np.random.default_rng(0)
    level = spec.scale / min(spec.std)
    for height, width in ((301, 199), (427, 640), (97, 97)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = np.asarray(processor(images=[image], return_tensors="pt")["pixel_values"].numpy(), np.float32)
        got = spec([image])
        if expected.shape != got.shape:
            return False
        difference = np.abs(expected - got) / level
        if float(difference.max()) > 2.5 or float(difference.mean()) > 0.05:
            return False
    return True
