"""The release's int8 segmenter copies, which ``auto`` runs on a CPU with VNNI and no AMX (docs/performance.md):

    python -m train.release_int8 --shared ../shared --models models

Each segmenter's f32 OpenVINO export (the product's own, ``pipeline.accel.yolo``) is quantized by NNCF, calibrated
on training photos of the kinds users upload (never a held-out one), with the head's decoding and class scores
(as in the product's calibrated copies) and the two stem convolutions left in f32: on the damage segmenter, NNCF's
accuracy control put the stem back first, and with it int8's masks agreed best with f32's (docs/performance.md).
The damage segmenter's mask mAP50 on labelled validation photos (held-out lensor photos outside the benchmark's
sample, nm / pd training photos), f32 and int8, through the product's OpenVINO runner at the serving size, goes
into the copy's record. Each copy goes beside its weights (``<stem>_int8_openvino_model/``, with ``int8.json``: the
weights' sha256, the recipe, the figures); the product ignores a copy made from other weights. The benchmark then
judges the copies end to end against fp32 (``python -m bench``).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.accel.yolo import SHIPPED_INT8_RECORD, SHIPPED_INT8_SUFFIX, shipped_int8_folder
from train.common import offline_env
from train.release_eval import held_out_photos, split_from
from train.release_masks import map50, polygon_coco
from train.sources import read_damage_polygons

# Calibration photos: share of each source (training photos only), like the uploads the Space sees.
CALIBRATION_MIX = {"lensor": 0.35, "nm": 0.1, "pd": 0.1, "vds": 0.25, "yb": 0.1, "dsmlr": 0.1}
CONF, IOU, MAX_DET = 0.05, 0.5, 50  # the release's mask threshold; NMS as served (class-agnostic)
BENCH_SAMPLE = 60  # held-out photos per kind the benchmark judges with: never used to tune


@dataclass
class Int8Arguments:
    shared: str = field(default="../shared", metadata={"help": "the shared data folder (photos and labels)"})
    models: str = field(default="models", metadata={"help": "the release folder (profile.toml, held_out.json)"})
    calibration: int = field(default=64, metadata={"help": "calibration photos"})
    seed: int = field(default=0)


def training_photos(shared: Path, held_out: set[Path], count: int, seed: int) -> list[Path]:
    """``count`` training photos in the CALIBRATION_MIX shares, drawn at random, none held out."""
    from pipeline.formats import list_photos
    from train.sources import SETS

    rng, picks = random.Random(seed), []
    for source, share in CALIBRATION_MIX.items():
        files = [f for f in list_photos(shared / "data" / SETS[source]) if f not in held_out]
        picks += rng.sample(files, min(len(files), max(1, round(count * share))))
    return picks[:count]


def network_inputs(files: Sequence[Path], image_size: int) -> list[np.ndarray]:
    from pipeline.accel.yolo_runtime import letterboxed
    from pipeline.decode import load_photo

    return [letterboxed(load_photo(f).image, image_size)[1] for f in files]


def validation_samples(shared: Path, models: Path, held_out: set[Path]) -> list:
    """Labelled photos to judge the damage segmenter by: lensor held-out photos outside the benchmark's sample,
    and nm / pd training photos (nm / pd have 30 held-out photos, all in the benchmark's sample)."""
    split = split_from(models / "held_out.json", shared)
    benched = {photo.path for photo in held_out_photos(shared, split, BENCH_SAMPLE)["lensor"]}
    lensor = [p.sample for p in held_out_photos(shared, split, 10**6)["lensor"] if p.path not in benched]
    nmpd = [s for source in ("nm", "pd") for s in read_damage_polygons(shared, source) if Path(s.image) not in held_out]
    return lensor + nmpd


def _found(runner, photo, image_id: int, image_size: int) -> list[dict]:
    from pycocotools import mask as mask_utils

    (instances,) = runner.predict_many([photo.image], CONF, IOU, image_size, MAX_DET, True)
    found = []
    for mask, score in zip(instances.masks, instances.scores):
        rle = mask_utils.encode(np.asfortranarray(instances.to_image(mask).astype(np.uint8)))
        found.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)})
    return found


def quantize(exported: Path, calibration: list[np.ndarray]):
    """NNCF int8 of an f32 export: the product's settings (``pipeline.accel.yolo._quantize``) but the default
    activation ranges (its min/max ranges cost mAP50 here) and the stem kept f32 (``stem_scope``)."""
    import nncf
    import openvino as ov

    from pipeline.accel.classifiers import quiet_nncf
    from pipeline.accel.yolo import _head_scope

    model = ov.Core().read_model(str(next(exported.glob("*.xml"))))
    head = _head_scope(model)
    ignored = nncf.IgnoredScope(names=sorted({*(head.names if head else ()), *stem_scope(model)}), validate=False)
    with quiet_nncf():
        return nncf.quantize(
            model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED, subset_size=len(calibration),
            fast_bias_correction=False, ignored_scope=ignored,
        )  # fmt: skip


def stem_scope(model) -> list[str]:
    """The operations of the network's first two modules (Ultralytics' YOLO: two strided convolutions at the
    highest resolutions, where int8 changed the masks most and costs least to avoid)."""
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    convolutions = [name for name in names if name.endswith("/Convolution")]
    if not convolutions:
        return []
    root = convolutions[0].split("/", 1)[0].rsplit(".", 2)[0]  # __module.model(.0.conv)
    return [name for name in names if name.startswith((f"{root}.0.", f"{root}.1."))]


def validation_figures(samples: list, image_size: int, copies: dict[str, Path]) -> dict:
    """Class-agnostic mask mAP50 of each copy on the validation photos, each run by the product's OpenVINO runner
    (``OpenVINOSegmenter.load``) at the serving size; the photos decoded once for all copies."""
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.decode import load_photo

    photos = [load_photo(sample.image) for sample in samples]
    truth = polygon_coco([  # the polygons at each working copy's size
        (i + 1, sample.polygons, photo.image.height, photo.image.width, photo.scale)
        for i, (sample, photo) in enumerate(zip(samples, photos))
    ])  # fmt: skip
    figures = {}
    for name, folder in copies.items():
        runner = OpenVINOSegmenter.load(folder, "f32")
        found = [f for i, photo in enumerate(photos) for f in _found(runner, photo, i + 1, image_size)]
        figures[name] = round(map50(truth, found) or 0.0, 4)
    return figures


def write_copy(quantized, exported: Path, weights: Path, record: dict) -> Path:
    """``<stem>_int8_openvino_model/`` beside the weights: the IR, Ultralytics' metadata, int8.json."""
    import openvino as ov

    folder = shipped_int8_folder(weights)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    ov.save_model(quantized, folder / "model.xml", compress_to_fp16=False)
    shutil.copyfile(exported / "metadata.yaml", folder / "metadata.yaml")
    write_record(folder, weights, record)
    return folder


def write_record(folder: Path, weights: Path, record: dict) -> None:
    """int8.json: the sha256 of the weights the copy was made from (what the product checks), and the record."""
    from pipeline.hub import file_sha256

    document = {"weights_sha256": file_sha256(weights)} | record
    (folder / SHIPPED_INT8_RECORD).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def f32_export(weights: Path) -> Path:
    """The product's own f32 OpenVINO export of the weights (built into the cache when absent)."""
    from pipeline.accel.yolo import _openvino_copy, import_yolo

    return _openvino_copy(import_yolo()(str(weights), task="segment"), weights)


def build_int8(args: Int8Arguments) -> dict:
    import tomllib

    offline_env()
    shared, models = Path(args.shared).resolve(), Path(args.models).resolve()
    profile = tomllib.loads((models / "profile.toml").read_text(encoding="utf-8"))
    held_out = {shared / p for paths in json.loads((models / "held_out.json").read_text())["held_out"].values()
                for p in paths}  # fmt: skip
    photos = training_photos(shared, held_out, args.calibration, args.seed)
    record = {"calibration_photos": len(photos), "calibration_mix": CALIBRATION_MIX, "nncf_preset": "mixed",
              "kept_f32": "the head's decoding and class scores, the stem (two convolutions)"}  # fmt: skip
    figures = {}
    for role, size_key in (("segmenter", "seg_image_size"), ("parts", "part_image_size")):
        weights, size = models / profile[role]["model"], int(profile["runtime"][size_key])
        exported, started = f32_export(weights), time.time()
        quantized = quantize(exported, network_inputs(photos, size))
        judged = {"image_size": size, "minutes": round((time.time() - started) / 60, 1)}
        folder = write_copy(quantized, exported, weights, record | judged)
        if role == "segmenter":
            judged["validation_mask_map50"] = _validated(shared, models, held_out, exported, folder, size)
            write_record(folder, weights, record | judged)
        figures[role] = {"copy": str(folder), **judged}
        write_card_section(weights.parent / "README.md", record | judged)
    return figures


def _validated(shared: Path, models: Path, held_out: set[Path], exported: Path, copy: Path, size: int) -> dict:
    samples = validation_samples(shared, models, held_out)
    return validation_figures(samples, size, {"f32": exported, "int8": copy}) | {"photos": len(samples)}


def refresh_int8_copies(models: Path, shared: str | None) -> None:
    """After ``train.release``: new int8 copies when ``shared`` is given (a replaced segmenter's copy went with its
    folder), and each card's int8 section again from the copy it has (the cards were rewritten)."""
    if shared is not None:
        build_int8(Int8Arguments(shared=shared, models=str(models)))
        return
    for record in models.glob(f"*/*{SHIPPED_INT8_SUFFIX}/{SHIPPED_INT8_RECORD}"):
        write_card_section(record.parent.parent / "README.md", json.loads(record.read_text(encoding="utf-8")))


CARD_HEADING = "## int8 copy (CPUs with VNNI and no AMX)"


def write_card_section(card: Path, record: dict) -> None:
    """The model card's section on the int8 copy (replaced when the copy is made again): what stays f32, the
    calibration photos' sets with their licences, the validation figures."""
    from train.release_models import DATASETS

    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8").split(CARD_HEADING)[0].rstrip() + "\n\n"
    intro = (
        f"`model{SHIPPED_INT8_SUFFIX}/`: what `auto` runs on a CPU with VNNI and no AMX (AMD EPYC Zen 4, Ice Lake); "
        "made by `python -m train.release_int8`. NNCF static int8 (preset mixed), kept in f32: "
        f"{record['kept_f32']}. Calibrated on {record['calibration_photos']} training photos, none held out:"
    )
    lines = [CARD_HEADING, "", intro, "", "| set | licence as the source states it | share of the calibration photos |"]
    lines.append("|---|---|---|")
    lines += [f"| {DATASETS[k].name} | {DATASETS[k].licence} | {share:.0%} |" for k, share in CALIBRATION_MIX.items()]
    validation = record.get("validation_mask_map50")
    if validation:
        lines += ["", f"Mask mAP50 on {validation['photos']} labelled validation photos (held-out lensor photos "
                  f"outside the benchmark's sample, nm / pd training photos) at {record['image_size']} px: f32 "
                  f"{validation['f32']}, int8 {validation['int8']}. Judged end to end against fp32 by `python -m "
                  "bench` (docs/performance.md)."]  # fmt: skip
    card.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(Int8Arguments).parse_args_into_dataclasses(args=argv)
    print(json.dumps(build_int8(args), indent=1))


if __name__ == "__main__":
    main()
