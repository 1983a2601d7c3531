"""For tests and benchmarks: tiny offline models with real label names, synthetic photos, and how two runs'
answers are compared (instances matched one to one). No test framework is imported here."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .results import Detection

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


def timm_classifier(folder: Path, labels: list[str]) -> Path:
    """A timm-wrapper classifier like the shared EfficientNet (random weights, 32 px): its config keeps the labels
    as ``label_names``."""
    import json

    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    config = TimmWrapperConfig(
        architecture="test_efficientnet", num_labels=len(labels), id2label=dict(enumerate(labels))
    )
    TimmWrapperForImageClassification(config).save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["pretrained_cfg"] = {
        "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0, "crop_mode": "center",
        "interpolation": "bilinear", "classifier": "classifier",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(data))
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


def yolo_seg(
    folder: Path, names: list[str], scale: str = "n", first_class_bias: float = 6.0, varied: bool = False
) -> Path:
    """YOLOv8-seg (nano by default) with len(names) classes; the first class's logit bias makes it find
    that class with high confidence (a random-init model otherwise finds nothing).

    A random-init network's features fade to ~1e-7 with depth, so every anchor gets the same score (the bias's):
    instances tie, and which of them NMS keeps is an accident of its sort. ``varied`` fits the batch-norm
    statistics to a few photos first, so scores vary from anchor to anchor like a trained model's."""
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
    if varied:
        _fit_batch_norms(model.model)
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:  # class logits of each scale
            if varied:  # fitted features give logits of -20..20: a quarter keeps the scores off 0 and 1
                branch[-1].weight.mul_(0.25)
            branch[-1].bias.fill_(-8.0)
            branch[-1].bias[0] = first_class_bias
    weights = folder / f"random-yolov8{scale}-seg{'-varied' if varied else ''}.pt"
    model.save(str(weights))
    return weights


def _fit_batch_norms(network, photos: int = 4) -> None:
    """Batch-norm running statistics measured on a few synthetic photos (as training would), so that features keep
    their scale through the layers."""
    import torch

    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # a plain average over the photos
        norm.reset_running_stats()
    network.train()
    with torch.no_grad():
        for seed in range(photos):
            pixels = np.asarray(photo(320, 320, seed=100 + seed), dtype=np.float32) / 255
            network(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous())
    network.eval()


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


def png_bytes(image: Image.Image, compress_level: int = 1) -> bytes:
    """Level 1 by default: a big test photo takes seconds at zlib's level 6."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def match_instances(exact: Sequence[Detection], fast: Sequence[Detection], least_iou: float = 0.5) -> list[float]:
    """IoUs of one-to-one matched instance pairs (same label), greedily by IoU, at IoU >= ``least_iou`` (as mAP
    matches). Instances left without a partner are drift in *what* is found, kept apart from drift in *where*."""
    pairs = sorted(
        (
            (d.mask_crop.iou(o.mask_crop), i, j)
            for i, d in enumerate(exact)
            for j, o in enumerate(fast)
            if d.label == o.label
        ),
        reverse=True,
    )
    used_exact, used_fast, ious = set(), set(), []
    for iou, i, j in pairs:
        if iou >= least_iou and i not in used_exact and j not in used_fast:
            used_exact.add(i)
            used_fast.add(j)
            ious.append(iou)
    return ious


def instance_drift(exact: Sequence[Sequence[Detection]], fast: Sequence[Sequence[Detection]]) -> dict[str, object]:
    """Mask IoU of matched pairs over many photos, and the instances left unmatched on each side."""
    ious, only_exact, only_fast = [], 0, 0
    for a, b in zip(exact, fast):
        matched = match_instances(a, b)
        ious += matched
        only_exact += len(a) - len(matched)
        only_fast += len(b) - len(matched)
    return {
        "mask_iou_vs_fp32_min": round(min(ious), 3) if ious else None,
        "mask_iou_vs_fp32_mean": round(float(np.mean(ious)), 3) if ious else None,
        "matched_instances": len(ious),
        "instances_only_in_fp32": only_exact,
        "instances_only_in_fast": only_fast,
    }


# ---------------------------------------------------------------- uploads that test memory bounds


def memory_cases(folder: Path) -> list[tuple[str, Path]]:
    """Files of the shapes and modes the limits admit that used to take gigabytes: (name, path). Cheap to make
    (blank pixels compress to almost nothing), expensive to decode naively."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def save(name: str, image: Image.Image, **options) -> None:
        image.save(folder / name, **options)
        cases.append((name.rsplit(".", 1)[0], folder / name))

    save("strip_40000x1.png", Image.new("L", (40000, 1), 128))
    save("tall_20x400.png", Image.new("RGB", (20, 400), (90, 90, 90)))  # at the aspect limit: analysed
    photo(400, 375, seed=7).resize((8000, 7500), Image.BILINEAR).save(folder / "sixty_mp.jpg", quality=70)
    cases.append(("sixty_mp", folder / "sixty_mp.jpg"))
    # PNG level 1: a second faster to write than the default 6, and what a decoder holds is the same pixels.
    save("sixteen_bit_81mp.png", Image.fromarray(np.full((9000, 9000), 30000, dtype=np.uint16)), compress_level=1)
    save("rgba_88mp.png", Image.new("RGBA", (9400, 9400), (200, 30, 30, 128)), compress_level=1)
    save("float_tiff_60mp.tif", Image.new("F", (8000, 7500), 0.5), compression="tiff_deflate")
    cases.append(("big_pngs_zip", _repeated_zip(folder / "big_pngs.zip", Image.new("L", (8000, 8000)), 150)))
    cases.append(("webp_named_wide_zip", _webp_named_wide_zip(folder / "webp_named_wide.zip")))
    return cases


def _repeated_zip(path: Path, image: Image.Image, count: int) -> Path:
    """``count`` copies of one PNG (a few MB in all, however many pixels they declare)."""
    import zipfile

    data = png_bytes(image, compress_level=9)  # blank: a few KB each at level 9
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(f"blank_{i:03d}.png", data)
    return path


def _webp_named_wide_zip(path: Path) -> Path:
    """A good photo, and a 17000-pixel-wide PNG named .webp (wider than WebP can encode)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good.jpg", jpeg_bytes(photo(64, 48)))
        archive.writestr("wide.webp", png_bytes(photo(17000, 900, seed=3)))
    return path


def peak_rss_during(run, interval: float = 0.005) -> tuple[float, float, object]:
    """(RSS before, peak RSS while ``run()`` ran, in MB; its result or the exception it raised), sampled."""
    import gc
    import threading

    import psutil

    process, samples, done = psutil.Process(), [], threading.Event()
    gc.collect()
    before = process.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            samples.append(process.memory_info().rss)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        outcome = run()
    except Exception as exc:  # the outcome of a refused input is its exception
        outcome = exc
    finally:
        done.set()
        sampler.join()
    return before / 2**20, max([before, *samples]) / 2**20, outcome
