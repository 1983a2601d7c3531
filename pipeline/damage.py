"""Damage check and grade: P(damaged) and minor / moderate / severe, from a fine-tuned classifier, zero-shot from a
CLIP-style model, or (the grade) from a separate severity classifier."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .accel import Loaders, cached_arrays, image_forward
from .classify import ClassifierStage, ImageClassifier, label_ids, load_classifier, softmax, unsupported_labels
from .hub import load_error, resolve_folder
from .results import GRADES, Check, Grade

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
GRADE_PROMPTS = {
    "minor": (
        "a photo of a car with a small scratch",
        "a photo of a car with a minor dent",
        "a close-up photo of light scratches on car paint",
    ),
    "moderate": (
        "a photo of a car with a large dent",
        "a photo of a car with a dented and scratched panel",
        "a photo of a car with a cracked bumper",
    ),
    "severe": (
        "a photo of a badly wrecked car",
        "a photo of a car crushed in a crash",
        "a photo of a car with a smashed front end",
    ),
}
ZERO_SHOT_LABELS = ("whole", "damaged", *GRADES)
PROMPT_SETS = (WHOLE_PROMPTS, DAMAGED_PROMPTS, *(GRADE_PROMPTS[g] for g in GRADES))  # in ZERO_SHOT_LABELS' order

_DAMAGED_WORDS = {
    "damaged", "damage", "dent", "dented", "dents", "scratch", "scratched", "scratches", "crack", "cracked",
    "broken", "crash", "crashed", "wrecked", "shattered", "accident", *GRADES,
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


def grade_label_ids(id2label: dict[int, str]) -> dict[str, list[int]]:
    """grade -> label ids ('01-minor' is minor); empty when the labels carry no grades."""
    grades = {grade: label_ids(id2label, lambda lab, g=grade: g in _words(lab)) for grade in GRADES}
    return grades if all(grades.values()) else {}


def _words(label: str) -> set[str]:
    return set(label.split())


@dataclass(frozen=True, eq=False)
class ZeroShotClassifier:
    """CLIP-style model with the class text embeddings (ZERO_SHOT_LABELS) computed once, at load."""

    image_features: Callable[[Sequence[Image.Image]], np.ndarray]  # images -> projected embeddings
    class_embeddings: np.ndarray  # (5, D), L2-normalised, order of ZERO_SHOT_LABELS
    logit_scale: float

    @classmethod
    def from_folder(cls, folder: Path, precision: str) -> ZeroShotClassifier:
        """The class embeddings come from the on-disk cache when a start has computed them before; with the
        vision side's OpenVINO copy cached too, neither transformers nor the PyTorch weights are then loaded."""

        def model():
            from transformers import AutoModel

            return AutoModel.from_pretrained(folder).eval()

        def processor():
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(folder)

        loaders = Loaders(model, processor)
        classes = cached_arrays(folder, "clip-classes", PROMPT_SETS, lambda: _class_embeddings(loaders))
        features = image_forward(folder, _image_features, precision, loaders)
        return cls(features, classes["embeddings"].astype(np.float32), float(classes["scale"]))

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over ZERO_SHOT_LABELS; renormalised over any two of them it is their own 2-way softmax."""
        if not images:
            return np.zeros((0, len(ZERO_SHOT_LABELS)), dtype=np.float32)
        features = self.image_features(images).astype(np.float32)
        features /= np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
        return softmax(np.float32(self.logit_scale) * features @ self.class_embeddings.T)


def _class_embeddings(loaders: Loaders) -> dict[str, np.ndarray]:
    """The averaged, normalised text embedding of each prompt set, and CLIP's logit scale (fp32, once)."""
    import torch

    model, processor = loaders.model(), loaders.processor()
    with torch.inference_mode():
        embeddings = torch.stack([_text_class_embedding(model, processor, prompts) for prompts in PROMPT_SETS])
    scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
    return {"embeddings": embeddings.numpy(), "scale": np.array(scale, dtype=np.float32)}


def _image_features(model, pixels):
    return _as_tensor(model.get_image_features(pixel_values=pixels))


def _text_class_embedding(model, processor: object, prompts: Sequence[str]):
    import torch

    tokens = processor(text=list(prompts), return_tensors="pt", padding=True)
    features = _as_tensor(
        model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
    ).float()
    mean = torch.nn.functional.normalize(features, dim=-1).mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=0)


def _as_tensor(output: object):
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _is_zero_shot(folder: Path) -> bool:
    """A CLIP-style model (text and vision towers), from its config.json as saved by transformers."""
    config = json.loads((folder / "config.json").read_text())
    return "text_config" in config and "vision_config" in config


@dataclass(frozen=True, eq=False)
class ClassMap:
    """A loaded model and which of its outputs mean what."""

    engine: ImageClassifier | ZeroShotClassifier
    damaged: list[int]
    whole: list[int]
    grades: dict[str, list[int]]  # grade -> ids; empty when the model cannot grade


ZERO_SHOT_MAP = {"damaged": [1], "whole": [0], "grades": {g: [2 + i] for i, g in enumerate(GRADES)}}


class DamageCheck(ClassifierStage):
    """P(damaged) per photo, and the grade when the model's labels carry one (one pass)."""

    role = "damage"

    def _load(self) -> ClassMap:
        folder = resolve_folder(self.role, self.ref)
        try:
            if _is_zero_shot(folder):
                return ClassMap(ZeroShotClassifier.from_folder(folder, self.precision), **ZERO_SHOT_MAP)
            classifier = ImageClassifier.from_folder(folder, self.precision)
        except Exception as exc:
            raise load_error(self.role, self.ref, exc) from exc
        damaged, whole = damage_label_ids(classifier.id2label)
        if not damaged or not whole:
            raise unsupported_labels(self.role, self.ref, classifier.id2label, "cannot tell damaged from whole labels")
        return ClassMap(classifier, damaged, whole, grade_label_ids(classifier.id2label))

    def assess(self, images: Sequence[Image.Image], threshold: float) -> list[tuple[Check, Grade | None]]:
        """(the damage check, the grade if the model has grades) per image."""
        classes = self.model
        results = []
        for row in classes.engine.probabilities(images):
            p_damaged, p_whole = float(row[classes.damaged].sum()), float(row[classes.whole].sum())
            score = p_damaged / max(p_damaged + p_whole, 1e-12)  # renormalise over the car-state labels
            top = (("damaged", score), ("whole", 1.0 - score))
            check = Check(score, threshold, tuple(sorted(top, key=lambda t: -t[1])))
            results.append((check, _grade(row, classes.grades)))
        return results

    def scores(self, images: Sequence[Image.Image], threshold: float) -> list[Check]:
        return [check for check, _ in self.assess(images, threshold)]


class SeverityCheck(ClassifierStage):
    """minor / moderate / severe per photo from a classifier whose labels carry the grades."""

    role = "severity"

    def _load(self) -> ClassMap:
        classifier = load_classifier(self.role, self.ref, self.precision, grade_label_ids, "no minor/moderate/severe")
        return ClassMap(classifier, [], [], grade_label_ids(classifier.id2label))

    def grades(self, images: Sequence[Image.Image]) -> list[Grade | None]:
        classes = self.model
        return [_grade(row, classes.grades) for row in classes.engine.probabilities(images)]


def _grade(row: np.ndarray, grades: dict[str, list[int]]) -> Grade | None:
    """The most likely grade and its probability among the grades; None when the model has none."""
    if not grades:
        return None
    mass = {grade: float(row[ids].sum()) for grade, ids in grades.items()}
    total = max(sum(mass.values()), 1e-12)
    best = max(mass, key=mass.__getitem__)
    return Grade(best, mass[best] / total)
