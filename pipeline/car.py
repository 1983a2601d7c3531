"""Car check: P(car) from an image classifier (ImageNet-1k labels, or a binary car / not-car model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from .classify import ClassifierStage, ImageClassifier, label_ids, load_classifier
from .results import Check

# ImageNet-1k classes (first synonym of each label) whose probabilities add up to P(car).
# Whole cars: every passenger-car body style ImageNet has, plus vans, pickups and light utility
# vehicles that fleets and insurers handle like cars (police van, ambulance, tow truck, minibus).
# Car parts: close-ups of a dented door or a broken light are often labelled by the part in view
# (wheel, grille, mirror), so a close-up of damage still counts as a car.
# "damaged car" is not ImageNet's: the release's car check adds it (damaged close-ups ImageNet reads as
# bathtubs or toasters; train/release_car.py).
# Left out on purpose: buses, lorries, trains and trams ("passenger car" is a railway coach),
# bikes and "wreck" (a shipwreck in ImageNet).
IMAGENET_CAR_CLASSES = frozenset(
    {
        "sports car", "convertible", "cab", "minivan", "jeep", "limousine", "pickup", "racer",
        "beach wagon", "police van", "ambulance", "Model T", "tow truck", "moving van", "minibus",
        "car wheel", "grille", "car mirror", "damaged car",
    }
)  # fmt: skip

_POSITIVE_WORDS = {"car", "cars", "vehicle", "vehicles", "automobile", "auto"}
_NEGATIVE_WORDS = {"not", "no", "non", "without", "other", "background", "negative", "none"}


def car_label_ids(id2label: dict[int, str]) -> list[int]:
    """The label ids whose probabilities make up P(car), for ImageNet-style or binary labels."""
    if len(id2label) > 100:  # an ImageNet-style label set: the car classes by their first synonym
        return [i for i, label in sorted(id2label.items()) if label.split(",")[0].strip() in IMAGENET_CAR_CLASSES]
    return label_ids(id2label, _is_car_label)


def _is_car_label(label: str) -> bool:
    words = set(label.split())
    return bool(words & _POSITIVE_WORDS) and not words & _NEGATIVE_WORDS


@dataclass(frozen=True, eq=False)
class CarModel:
    """A loaded car classifier and the outputs that add up to P(car), worked out once at load (over ImageNet's
    thousand labels that took about a millisecond, a noticeable share of one photo's time when done per call)."""

    engine: ImageClassifier
    car_ids: list[int]


class CarCheck(ClassifierStage):
    """P(car) per photo; the model loads lazily, once."""

    role = "car"

    def _load(self) -> CarModel:
        classifier = load_classifier(
            self.role, self.ref, self.precision, car_label_ids, "none of its labels means 'car'"
        )
        return CarModel(classifier, car_label_ids(classifier.id2label))

    def scores(self, images: Sequence[Image.Image], threshold: float) -> list[Check]:
        model = self.model
        probabilities = model.engine.probabilities(images)
        return [
            Check(min(1.0, float(row[model.car_ids].sum())), threshold, model.engine.top_labels(row))
            for row in probabilities
        ]
