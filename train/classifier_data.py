"""What an image classifier trains on (``train.train_classifier``): image folders read as targets, the dataset of
multi-hot rows, and the augmentation (evaluation uses the model's own preprocessing, as the pipeline does).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from train.common import list_images, open_rgb

Target = tuple[int, ...]  # the label ids a photo may have: one id, or several when only the group is known


def folder_targets(folders: Sequence[str], labels: Sequence[str], folder_map: dict | None = None) -> dict[str, Target]:
    """Folder name -> target; folders mapped to null are left out; unknown folders are an error."""
    folder_map = folder_map or {}
    targets = {}
    for folder in folders:
        mapped = folder_map.get(folder, folder)
        if mapped is None:
            continue
        names = [mapped] if isinstance(mapped, str) else list(mapped)
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ValueError(f"folder {folder!r}: {unknown} are not among the labels {list(labels)}")
        targets[folder] = tuple(labels.index(n) for n in names)
    return targets


def folder_items(root: Path, labels: Sequence[str], folder_map: dict | None = None) -> list[tuple[Path, Target]]:
    """(image, target) for every image under ``root/<folder>/``."""
    folders = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    targets = folder_targets(folders, labels, folder_map)
    return [(p, targets[f]) for f in folders if f in targets for p in list_images(Path(root) / f)]


def multi_hot(target: Target, num_labels: int) -> torch.Tensor:
    row = torch.zeros(num_labels)
    row[list(target)] = 1.0
    return row


class ImageFolderDataset(Dataset):
    """Photos and their targets as multi-hot rows (one 1 for a known label, several for "one of these")."""

    def __init__(
        self,
        items: Sequence[tuple[Path, Target]],
        transform: Callable[[Image.Image], torch.Tensor],
        num_labels: int,
        min_side: int | None = 448,
    ) -> None:
        self.items, self.transform, self.min_side = list(items), transform, min_side
        self.num_labels = num_labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, target = self.items[index]
        return {
            "pixel_values": self.transform(open_rgb(path, self.min_side)),
            "labels": multi_hot(target, self.num_labels),
        }


def processor_geometry(processor: object) -> tuple[tuple[int, int], list[float], list[float]]:
    """(height, width), mean, std the model expects, from a transformers or timm-wrapper image processor."""
    config = getattr(processor, "data_config", None)
    if config:  # TimmWrapperImageProcessor
        _, height, width = config["input_size"]
        return (height, width), list(config["mean"]), list(config["std"])
    size = getattr(processor, "crop_size", None) or processor.size
    hw = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    return hw, list(processor.image_mean), list(processor.image_std)


class RandomLowResolution:
    """Downscale then upscale: resolution must not give away the source (some whole cars are 100 px crops)."""

    def __init__(self, smallest: int = 64, largest: int = 160) -> None:
        self.smallest, self.largest = smallest, largest

    def __call__(self, image: Image.Image) -> Image.Image:
        side = random.randint(self.smallest, self.largest)
        scale = side / max(image.size)
        if scale >= 1:
            return image
        small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
        return small.resize(image.size, Image.BICUBIC)


def train_transform(processor: object, augment: str, min_crop_scale: float = 0.25) -> Callable:
    """Augmentation for training; ``strong`` also varies colour, sharpness, resolution and JPEG quality."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    size, mean, std = processor_geometry(processor)
    if augment == "none":
        return eval_transform(processor)
    ops: list = [
        T.RandomResizedCrop(size, scale=(min_crop_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if augment == "strong":
        ops += [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.05)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomApply([RandomLowResolution()], p=0.25),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.2),
            T.RandomRotation(10),
        ]
    ops += [T.PILToTensor()]
    if augment == "strong":
        ops += [T.RandomApply([T.JPEG((30, 95))], p=0.3)]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(ops)


def eval_transform(processor: object) -> Callable[[Image.Image], torch.Tensor]:
    """Exactly the model's own preprocessing, as the pipeline applies it at inference."""

    def transform(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return transform
