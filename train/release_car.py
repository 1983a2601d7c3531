"""The release's car check: ImageNet's classes plus one, "damaged car" (``python -m train.release_car``).

ImageNet's car classes miss damaged close-ups and wrecks (it reads them as bathtubs, toasters, modems): those photos
were rejected as "not a car" and never reached the damage check (docs/training.md, run 8). The backbone and
ImageNet's head stay as they are; one more logit, linear in the pooled features, is fitted so that P(car) (the car
classes' and the new class's probability) is high on the build's training-split cars of every source and low on
the ImageNet-sample non-vehicle photos of the fitting half (``build_data.imagenet_fitting_half``: the release
evaluation draws from the other half). Its threshold is chosen on a third of those photos kept aside (by file
name), then the logit is fitted again on all of them. Writes ``BUILD/car-check`` and points the build's profile at
it, with that threshold.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

NEW_LABEL = "damaged car"  # pipeline.car.IMAGENET_CAR_CLASSES counts it as a car
FOLDER = "car-check"
CAR_SOURCES = {"lensor": 600, "nm": 100, "pd": 100, "vds": 500, "dsmlr": 200, "web": 300, "wce": 200}  # photos each
SETTINGS = ("thresholds", "runtime")  # the profile's sections that name no model
THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class CarClassArguments:
    build: str = field(metadata={"help": "a train.build_profile output folder (its work/ and profile.toml)"})
    shared: str = field(default="../shared")
    base: str = field(default="models/car-check", metadata={"help": "the ImageNet car check to extend"})
    weight_decay: float = field(default=1e-2, metadata={"help": "L2 on the new logit's weights"})
    negative_weight: float = field(default=5.0, metadata={"help": "non-car photos' weight over the cars' (balanced)"})
    steps: int = field(default=600)
    seed: int = field(default=1)


@dataclass(frozen=True)
class CarClassResult:
    threshold: float  # the car check's, in the build's profile
    aside_balanced_accuracy: float  # at that threshold, on the photos kept aside (the fit left them out)
    photos: dict[str, int]  # per source (and "not_car"): the photos the class was fitted on


def training_photos(shared: Path, work: Path, seed: int) -> dict[str, list[Path]]:
    """Cars of the build's training split per source, and the fitting half of ImageNet's non-vehicle photos."""
    from train.build_data import imagenet_classes, imagenet_fitting_half, is_vehicle_like
    from train.release_eval import NOT_CAR, split_from

    split = split_from(work, shared)
    imagenet = imagenet_classes(shared / "data" / "imagenet-sample")
    photos = {
        NOT_CAR: sorted(p for p, name in imagenet.items() if not is_vehicle_like(name) and imagenet_fitting_half(p))
    }
    rng = random.Random(seed)
    for source, count in CAR_SOURCES.items():
        pool = sorted(split.train.get(source, []))
        photos[source] = rng.sample(pool, min(count, len(pool)))
    return photos


def pooled_features(model, processor, paths: Sequence[Path]) -> np.ndarray:
    """The backbone's pooled features (the head's input) of photos decoded as the product decodes them."""
    import torch

    from pipeline.decode import load_photo

    timm_model, rows = model.timm_model, []
    with torch.inference_mode():
        for start in range(0, len(paths), 16):
            images = [load_photo(p).image for p in paths[start : start + 16]]
            pixels = processor(images, return_tensors="pt")["pixel_values"]
            rows.append(timm_model.forward_head(timm_model.forward_features(pixels), pre_logits=True).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, timm_model.num_features), dtype=np.float32)


def car_probability(features, logits, car_ids: list[int], weight, bias):
    """P(car) with the new logit appended to ImageNet's: the car classes' probabilities plus the new one's."""
    import torch

    full = torch.cat([logits, (features @ weight + bias)[:, None]], dim=1).softmax(dim=1)
    return full[:, car_ids].sum(dim=1) + full[:, -1]


def fit_logit(features, logits, is_car, car_ids: list[int], args: CarClassArguments):
    """The new logit's weights and bias: balanced log loss on P(car), non-cars weighted up (a wrong "car" lets any
    photo through the cascade), L2 on the weights."""
    import torch

    torch.manual_seed(args.seed)
    weight, bias = torch.zeros(features.shape[1], requires_grad=True), torch.tensor(-5.0, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.01)
    share = is_car.mean()
    scale = torch.where(is_car > 0, 0.5 / share, args.negative_weight * 0.5 / (1 - share))
    for _ in range(args.steps):
        p = car_probability(features, logits, car_ids, weight, bias).clamp(1e-6, 1 - 1e-6)
        loss = (
            -(scale * (is_car * p.log() + (1 - is_car) * (1 - p).log())).mean()
            + args.weight_decay * weight.square().sum()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach(), bias.detach()


def kept_aside(path: Path) -> bool:
    from train.common import name_bucket

    return name_bucket(path, 3) == 0


def best_threshold(p_car: np.ndarray, is_car: np.ndarray) -> tuple[float, float]:
    """The threshold of the best balanced accuracy on the photos kept aside: the geometric middle of the longest
    run of neighbouring thresholds that tie for it (every threshold in it was measured at that accuracy)."""
    if not (is_car == 1).any() or not (is_car == 0).any():
        raise ValueError("the photos kept aside need cars and non-cars to choose a threshold")
    scores = [((p_car[is_car == 1] >= t).mean() + (p_car[is_car == 0] < t).mean()) / 2 for t in THRESHOLDS]
    best, runs, run = max(scores), [], []
    for t, score in zip(THRESHOLDS, scores):
        run = [*run, t] if score >= best - 1e-9 else []
        runs.append(run)
    longest = max(runs, key=len)
    return float(np.sqrt(longest[0] * longest[-1])), float(best)


def base_classes(base: Path) -> int:
    """ImageNet's classes in the base: a release's car check already has the new one (last), fitted again here."""
    labels = json.loads((base / "config.json").read_text(encoding="utf-8"))["label_names"]
    return labels.index(NEW_LABEL) if NEW_LABEL in labels else len(labels)


def write_model(base: Path, out: Path, weight, bias) -> Path:
    """The base folder (less a new class it had) with one more row in its classifier and one more label."""
    import torch
    from safetensors.torch import load_file, save_file

    if Path(out).resolve() == Path(base).resolve():
        raise ValueError(f"{out}: the car check would be written over its own base (give another --out)")
    kept = base_classes(base)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("README.md", "train_summary.json"))
    tensors = load_file(base / "model.safetensors")
    for key in [k for k in tensors if k.endswith("classifier.weight") or k.endswith("classifier.bias")]:
        extra = weight.reshape(1, -1) if key.endswith("weight") else bias.reshape(1)
        tensors[key] = torch.cat([tensors[key][:kept], extra.to(tensors[key].dtype)]).contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    config["label_names"] = [*config["label_names"][:kept], NEW_LABEL]
    config["num_classes"] = len(config["label_names"])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def point_profile_at(build: Path, threshold: float) -> Path:
    """The build's profile names the new car check and its threshold; every other section as it was."""
    import tomllib

    from train.build_outputs import write_profile

    profile = tomllib.loads((build / "profile.toml").read_text(encoding="utf-8"))
    models = {section: keys["model"] for section, keys in profile.items() if section not in ("car", *SETTINGS)}
    thresholds = {**profile.get("thresholds", {}), "car": round(threshold, 6)}
    return write_profile(build, build / FOLDER, models, thresholds, profile.get("runtime", {}))


def build_car_check(args: CarClassArguments) -> CarClassResult:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from pipeline.car import car_label_ids
    from train.common import offline_env
    from train.release_eval import NOT_CAR

    offline_env()
    build, base = Path(args.build), Path(args.base)
    photos = training_photos(Path(args.shared).resolve(), build / "work", args.seed)
    model = AutoModelForImageClassification.from_pretrained(base, dtype=torch.float32).eval()
    processor = AutoImageProcessor.from_pretrained(base)
    paths = [p for kind in photos for p in photos[kind]]
    features = torch.from_numpy(pooled_features(model, processor, paths))
    is_car = torch.tensor([float(kind != NOT_CAR) for kind in photos for _ in photos[kind]])
    kept = base_classes(base)
    with torch.no_grad():
        logits = model.timm_model.get_classifier()(features)[:, :kept]
    car_ids = [i for i in car_label_ids(model.config.id2label) if i < kept]
    aside = torch.tensor([kept_aside(p) for p in paths])
    weight, bias = fit_logit(features[~aside], logits[~aside], is_car[~aside], car_ids, args)
    with torch.no_grad():
        p_aside = car_probability(features[aside], logits[aside], car_ids, weight, bias).numpy()
    threshold, aside_accuracy = best_threshold(p_aside, is_car[aside].numpy())
    weight, bias = fit_logit(features, logits, is_car, car_ids, args)
    write_model(base, build / FOLDER, weight, bias)
    point_profile_at(build, threshold)
    summary = CarClassResult(threshold, aside_accuracy, {kind: len(paths) for kind, paths in photos.items()})
    (build / FOLDER / "train_summary.json").write_text(json.dumps(asdict(summary), indent=1) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(CarClassArguments).parse_args_into_dataclasses(args=argv)
    print(json.dumps(asdict(build_car_check(args)), indent=1))


if __name__ == "__main__":
    main()
