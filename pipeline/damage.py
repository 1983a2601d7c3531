"""Damage check: P(damaged) from a fine-tuned classifier, or zero-shot from a CLIP-style model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .classify import ImageClassifier, example_pixels, label_ids
from .errors import UnsupportedLabelsError
from .models import inference_forward, load_error, load_once, resolve_folder
from .results import Check
from .settings import ModelRef

# Zero-shot prompts, averaged per class (prompt ensembling): several phrasings of each side make
# the answer less sensitive to the wording and cover close-ups as well as whole-car views.
DAMAGED_PROMPTS = (
    "a photo of a damaged car",
    "a photo of a car with a dent",
    "a photo of a car with scratched paint",
    "a photo of a car with a cracked bumper",
    "a photo of a car with a broken headlight",
    "a photo of a car with a shattered window",
    "a photo of a crashed car",
    "a close-up photo of a dent in a car",
)
WHOLE_PROMPTS = (
    "a photo of an undamaged car",
    "a photo of a car in perfect condition",
    "a photo of a clean, shiny car",
    "a photo of a new car",
    "a close-up photo of smooth, undamaged car paint",
    "a photo of a car parked on the street",
)
ZERO_SHOT_LABELS = ("whole", "damaged")

_DAMAGED_WORDS = {
    "damaged", "damage", "dent", "dented", "dents", "scratch", "scratched", "scratches", "crack", "cracked",
    "broken", "crash", "crashed", "wrecked", "shattered", "accident", "minor", "moderate", "severe",
}  # fmt: skip
_WHOLE_WORDS = {"whole", "undamaged", "intact", "clean", "good", "normal", "ok", "fine", "pristine"}
_NEGATION_WORDS = {"no", "not", "non", "without"}


def damage_label_ids(id2label: dict[int, str]) -> tuple[list[int], list[int]]:
    """(damaged ids, whole ids) for a fine-tuned classifier's labels; other labels are ignored."""
    damaged = label_ids(id2label, lambda lab: _words(lab) & _DAMAGED_WORDS and not _words(lab) & _NEGATION_WORDS)
    whole = label_ids(
        id2label,
        lambda lab: (
            bool(_words(lab) & _WHOLE_WORDS) or bool(_words(lab) & _NEGATION_WORDS and _words(lab) & _DAMAGED_WORDS)
        ),
    )
    return damaged, whole


def _words(label: str) -> set[str]:
    return set(label.split())


@dataclass(frozen=True, eq=False)
class ZeroShotClassifier:
    """CLIP-style model with the class text embeddings computed once, at load."""

    image_features: Callable[[torch.Tensor], torch.Tensor]  # pixels -> projected embeddings (PyTorch or OpenVINO)
    processor: object
    class_embeddings: torch.Tensor  # (2, D), L2-normalised, order of ZERO_SHOT_LABELS
    logit_scale: float
    dtype: torch.dtype

    @classmethod
    def from_folder(cls, folder: Path, precision: str) -> ZeroShotClassifier:
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        with torch.inference_mode():  # the text side runs once, in fp32, before the model is made fast
            embeddings = [_text_class_embedding(model, processor, p) for p in (WHOLE_PROMPTS, DAMAGED_PROMPTS)]
        scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
        forward, dtype = inference_forward(lambda: model, _image_features, precision, folder, example_pixels(processor))
        return cls(forward, processor, torch.stack(embeddings), scale, dtype)

    @torch.inference_mode()
    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.dtype)
        features = self.image_features(pixels).float()
        features = torch.nn.functional.normalize(features, dim=-1)
        logits = self.logit_scale * features @ self.class_embeddings.T
        return logits.softmax(dim=-1).numpy()


def _image_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return _as_tensor(model.get_image_features(pixel_values=pixels))


def _text_class_embedding(model: torch.nn.Module, processor: object, prompts: Sequence[str]) -> torch.Tensor:
    tokens = processor(text=list(prompts), return_tensors="pt", padding=True)
    features = _as_tensor(
        model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
    ).float()
    mean = torch.nn.functional.normalize(features, dim=-1).mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=0)


def _as_tensor(output: object) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _is_zero_shot(folder: Path) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    return hasattr(config, "text_config") and hasattr(config, "vision_config")


class DamageCheck:
    role = "damage"

    def __init__(self, ref: ModelRef, precision: str = "auto") -> None:
        self.ref, self.precision = ref, precision

    @property
    def engine(self) -> tuple[ImageClassifier | ZeroShotClassifier, list[int], list[int]]:
        return load_once(self.role, self.ref, self.precision, self._load)

    def _load(self) -> tuple[ImageClassifier | ZeroShotClassifier, list[int], list[int]]:
        folder = resolve_folder(self.role, self.ref)
        try:
            if _is_zero_shot(folder):
                return ZeroShotClassifier.from_folder(folder, self.precision), [1], [0]
            classifier = ImageClassifier.from_folder(folder, self.precision)
        except Exception as exc:
            raise load_error(self.role, self.ref, exc) from exc
        damaged, whole = damage_label_ids(classifier.id2label)
        if not damaged or not whole:
            labels = ", ".join(list(classifier.id2label.values())[:6])
            raise UnsupportedLabelsError(
                "damage", str(self.ref), "DAMAGE_MODEL", f"cannot tell damaged from whole labels (labels: {labels})"
            )
        return classifier, damaged, whole

    def scores(self, images: Sequence[Image.Image], threshold: float) -> list[Check]:
        engine, damaged, whole = self.engine
        probabilities = engine.probabilities(images)
        checks = []
        for row in probabilities:
            p_damaged, p_whole = float(row[damaged].sum()), float(row[whole].sum())
            score = p_damaged / max(p_damaged + p_whole, 1e-12)  # renormalise over the car-state labels
            top = (("damaged", score), ("whole", 1.0 - score))
            checks.append(Check(score, threshold, tuple(sorted(top, key=lambda t: -t[1]))))
        return checks
