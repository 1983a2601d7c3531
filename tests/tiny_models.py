"""Builders for tiny offline models with real label names, and synthetic photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# A few real ImageNet label strings (car classes and others) padded to an ImageNet-sized label set.
IMAGENET_STYLE_LABELS = [
    "tench, Tinca tinca",
    "sports car, sport car",
    "minivan",
    "car wheel",
    "grille, radiator grille",
    "passenger car, coach, carriage",
    "streetcar, tram, tramcar, trolley, trolley car",
    "goldfish, Carassius auratus",
] + [f"class {i}" for i in range(8, 120)]


def vit_classifier(folder: Path, labels: list[str], favour: str | None, seed: int = 0) -> Path:
    """A 1-layer ViT at 32 px; ``favour`` makes it answer that label for every photo."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = ViTForImageClassification(config).eval()
    if favour is not None:
        index = next(i for i, label in enumerate(labels) if label.split(",")[0] == favour)
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.fill_(-5.0)
            model.classifier.bias[index] = 10.0
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def clip_model(folder: Path, full_size: bool = False) -> Path:
    """A CLIP with a byte-level tokenizer (the real BPE vocabulary is not available offline): tiny for the
    zero-shot tests, or ``full_size`` (ViT-B/32 shapes) for timing in the benchmark."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512, 513
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    if full_size:
        config, image_processor = CLIPConfig(), CLIPImageProcessor()
    else:
        image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        config = CLIPConfig(
            text_config=dict(
                tiny, vocab_size=514, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513
            ),
            vision_config=dict(tiny, image_size=32, patch_size=8),
            projection_dim=16,
        )
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _byte_alphabet() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def yolo_seg(folder: Path, names: list[str], scale: str = "n", first_class_bias: float = 6.0) -> Path:
    """YOLOv8-seg (nano by default) with len(names) classes; the first class's logit bias makes it find
    that class with high confidence (a random-init model otherwise finds nothing)."""
    import torch
    import ultralytics
    import yaml
    from ultralytics import YOLO

    folder.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8-seg.yaml").read_text())
    cfg["nc"] = len(names)
    config_path = folder / f"yolov8{scale}-seg.yaml"  # the letter in the name picks the scale
    config_path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    model = YOLO(str(config_path), task="segment")
    model.model.names = dict(enumerate(names))
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:  # class logits of each scale
            branch[-1].bias.fill_(-8.0)
            branch[-1].bias[0] = first_class_bias
    weights = folder / f"random-yolov8{scale}-seg.pt"
    model.save(str(weights))
    return weights


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB photo (compresses like a real one)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def jpeg_bytes(image: Image.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=85, exif=exif.tobytes())
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
