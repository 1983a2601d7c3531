"""A transformers image classifier as a probability matrix: the shared engine of the car and damage checks.

We call the model and its image processor directly rather than through ``pipeline(...)``: the checks
need the full probability vector of whole batches, in bf16 where the CPU has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .accel import Loaders, cached_arrays, image_forward
from .errors import UnsupportedLabelsError
from .hub import Stage, load_error, resolve_folder
from .settings import ENV_VARS, ModelRef


@dataclass(frozen=True, eq=False)
class ImageClassifier:
    logits: Callable[[Sequence[Image.Image]], np.ndarray]  # images -> logits (PyTorch or OpenVINO)
    id2label: dict[int, str]

    @classmethod
    def from_folder(cls, folder: Path, precision: str) -> ImageClassifier:
        def model():
            import torch
            from transformers import AutoModelForImageClassification

            # float32 whatever the file stores: the release ships fp16 weights, which transformers would
            # otherwise keep in fp16 (slow on CPUs, and the precision choice is the runtime's, not the file's)
            return AutoModelForImageClassification.from_pretrained(folder, dtype=torch.float32)

        def processor():
            from transformers import AutoImageProcessor

            return AutoImageProcessor.from_pretrained(folder)

        return cls(image_forward(folder, _logits, precision, Loaders(model, processor)), config_labels(folder))

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over the model's labels, one row per image, float32."""
        if not images:
            return np.zeros((0, len(self.id2label)), dtype=np.float32)
        return softmax(self.logits(images))

    def top_labels(self, row: np.ndarray, k: int = 3) -> tuple[tuple[str, float], ...]:
        best = np.argsort(row)[::-1][:k]
        return tuple((self.id2label[int(i)], float(row[i])) for i in best)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float32) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _logits(model, pixels):
    return model(pixel_values=pixels).logits


def config_labels(folder: Path) -> dict[int, str]:
    """The model config's id2label, as transformers reads it (cached: reading it imports transformers)."""

    def read() -> dict[str, np.ndarray]:
        from transformers import AutoConfig

        labels = AutoConfig.from_pretrained(folder).id2label
        return {"ids": np.array([int(i) for i in labels], dtype=np.int64), "labels": np.array(list(labels.values()))}

    stored = cached_arrays(folder, "labels", "id2label", read)
    return {int(i): str(label) for i, label in zip(stored["ids"], stored["labels"])}


def normalize_label(label: str) -> str:
    """'Not_Car' -> 'not car': compare labels without case or separators."""
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def label_ids(id2label: dict[int, str], predicate) -> list[int]:
    return [i for i, label in sorted(id2label.items()) if predicate(normalize_label(label))]


def load_classifier(
    role: str, ref: ModelRef, precision: str, mapped: Callable[[dict[int, str]], object], refusal: str
) -> ImageClassifier:
    """A stage's classifier, refused (with its labels named) when ``mapped(id2label)`` finds nothing to use."""
    folder = resolve_folder(role, ref)
    try:
        classifier = ImageClassifier.from_folder(folder, precision)
    except Exception as exc:
        raise load_error(role, ref, exc) from exc
    if not mapped(classifier.id2label):
        raise unsupported_labels(role, ref, classifier.id2label, refusal)
    return classifier


def unsupported_labels(role: str, ref: ModelRef, id2label: dict[int, str], refusal: str) -> UnsupportedLabelsError:
    labels = ", ".join(list(id2label.values())[:6])
    return UnsupportedLabelsError(role, str(ref), ENV_VARS[role], f"{refusal} (labels: {labels})")


class ClassifierStage(Stage):
    """A stage whose model is an image classifier: loaded once per reference and precision."""

    def __init__(self, ref: ModelRef, precision: str = "auto") -> None:
        super().__init__(ref)
        self.precision = precision

    @property
    def variant(self) -> str:
        return self.precision
