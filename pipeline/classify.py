"""A transformers image classifier as a probability matrix: the shared engine of the car and damage checks.

We call the model and its image processor directly rather than through ``pipeline(...)``: the checks
need the full probability vector of whole batches, in bf16 where the CPU has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .models import for_inference


@dataclass(frozen=True, eq=False)
class ImageClassifier:
    model: torch.nn.Module
    processor: object
    id2label: dict[int, str]
    dtype: torch.dtype

    @classmethod
    def from_folder(cls, folder: Path, precision: str) -> ImageClassifier:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(folder)
        id2label = {int(i): str(label) for i, label in model.config.id2label.items()}
        model, dtype = for_inference(model, precision)
        processor = AutoImageProcessor.from_pretrained(folder)
        return cls(model, processor, id2label, dtype)

    @torch.inference_mode()
    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over the model's labels, one row per image, float32."""
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.dtype)
        logits = self.model(pixel_values=pixels).logits
        return logits.float().softmax(dim=-1).numpy()

    def top_labels(self, row: np.ndarray, k: int = 3) -> tuple[tuple[str, float], ...]:
        best = np.argsort(row)[::-1][:k]
        return tuple((self.id2label[int(i)], float(row[i])) for i in best)


def normalize_label(label: str) -> str:
    """'Not_Car' -> 'not car': compare labels without case or separators."""
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def label_ids(id2label: dict[int, str], predicate) -> list[int]:
    return [i for i, label in sorted(id2label.items()) if predicate(normalize_label(label))]
