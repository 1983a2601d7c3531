"""Making the release and continuing its training, on tiny models and data (no ../shared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline
from pipeline import testing
from pipeline.settings import load_profile
from train.common import CAR_MODEL, SEG_BASE
from train.prepare import Sample, build_yolo_dataset
from train.release import ReleaseArguments, package, updated_state
from train.release_models import RELEASE

GRADED = ["whole", "minor", "moderate", "severe"]


def _tiny_build(root: Path) -> tuple[Path, Path]:
    """A shared folder (the ImageNet car model) and a build folder as train.build_profile leaves it."""
    shared, build = root / "shared", root / "build"
    testing.vit_classifier(shared / CAR_MODEL, testing.IMAGENET_STYLE_LABELS, favour="sports car")
    testing.vit_classifier(build / "damage-classifier", GRADED, favour="minor")
    for folder, names in (("segmenter", ["dent", "scratch", "broken", "damage"]), ("parts", ["door", "bumper"])):
        weights = testing.yolo_seg(build / f"{folder}-random", names)
        (build / folder).mkdir()
        shutil.copy(weights, build / folder / "best.pt")
        summary = {"epochs": 3}
        (build / folder / "train_summary.json").write_text(json.dumps(summary))
    (build / "profile.toml").write_text(
        f'[car]\nmodel = "{shared / CAR_MODEL}"\n\n'
        "[thresholds]\ncar = 0.01\ndamage = 0.5\nmask = 0.25\n\n[runtime]\nseg_image_size = 64\n"
        'part_image_size = 64\ndamage_rule = "noisy_or"\ncalibration_photos = "calibration"\n'
    )
    timings = {"train_damage_classifier": 3600.0, "train_segmenter": 7200.0, "train_parts": 1800.0}
    epochs = {"damage-classifier": 2.0, "damage-segmenter": 3, "part-segmenter": 3}
    (build / "build_summary.json").write_text(json.dumps({"timings_s": timings, "epochs": epochs, "args": {}}))
    return shared, build


def test_a_build_becomes_a_release_the_product_loads(tmp_path):
    _, build = _tiny_build(tmp_path)
    out = tmp_path / "models"
    curve = tmp_path / "training.md"
    curve.write_text("# Training\n")
    profile = package(ReleaseArguments(build=str(build), out=str(out), curve=str(curve)))
    package(ReleaseArguments(build=str(build), out=str(out), curve=str(curve)))  # a second run
    rows = [line for line in curve.read_text().splitlines() if "| damage-segmenter |" in line]
    assert [row.split(" | ")[4] for row in rows] == ["3.0 / 3.0", "3.0 / 6.0"]  # the curve grows run by run
    settings = load_profile(profile)
    assert {settings.models.car.sha256, settings.models.segmenter.sha256} != {None}
    assert settings.models.calibration_photos is None  # no photos in a release
    analysis = pipeline.analyze(testing.photo(96, 64), settings.with_models(precision="fp32", seg_backend="torch"))
    assert analysis.is_car
    for model in RELEASE:
        card = (out / model.folder / "README.md").read_text()
        assert card.startswith("---\nlicense: ") and model.base_model.split(" ")[0] in card
    state = json.loads((out / "training_state.json").read_text())
    assert state["models"]["damage-segmenter"] == {"epochs": 6, "train_hours": 4.0}
    from safetensors.torch import load_file

    shipped, built = (load_file(f / "damage-classifier" / "model.safetensors") for f in (out, build))
    assert shipped.keys() == built.keys()  # float32 as trained: in fp16 its held-out answers moved
    assert all(shipped[k].dtype == built[k].dtype and shipped[k].equal(built[k]) for k in built)
    car = load_file(out / "car-check" / "model.safetensors")
    assert {t.dtype for t in car.values() if t.is_floating_point()} == {torch.float16}  # same answers, half the bytes


def test_a_resumed_build_keeps_the_releases_car_check_and_writes_the_held_out_list(tmp_path):
    """A build resumed from the release names the release's own car-check folder: packaging must keep it (not
    clear it before copying it onto itself), and the build's held-out photos travel as names relative to ../shared."""
    shared, build = _tiny_build(tmp_path)
    out = tmp_path / "models"
    package(ReleaseArguments(build=str(build), out=str(out), curve=None, force=True))
    before = (out / "car-check" / "model.safetensors").read_bytes()
    profile = (build / "profile.toml").read_text().replace(str(shared / CAR_MODEL), str(out / "car-check"))
    (build / "profile.toml").write_text(profile)
    split = {"held_out": {"nm": [str(shared / "data" / "nm" / "1.jpg")]}, "train": {}}
    (build / "work").mkdir()
    (build / "work" / "held_out_split.json").write_text(json.dumps(split))
    summary = json.loads((build / "build_summary.json").read_text()) | {"args": {"shared": str(shared)}}
    (build / "build_summary.json").write_text(json.dumps(summary))
    package(ReleaseArguments(build=str(build), out=str(out), curve=None, force=True))
    assert (out / "car-check" / "model.safetensors").read_bytes() == before
    assert json.loads((out / "held_out.json").read_text()) == {"held_out": {"nm": ["data/nm/1.jpg"]}}


def test_training_state_adds_each_run():
    first = updated_state({}, {"timings_s": {"train_segmenter": 3600}, "epochs": {"damage-segmenter": 4}}, "d1")
    second = updated_state(first, {"timings_s": {"train_segmenter": 1800}, "epochs": {"damage-segmenter": 2}}, "d2")
    assert second["models"]["damage-segmenter"] == {"epochs": 6, "train_hours": 1.5}
    assert [run["date"] for run in second["runs"]] == ["d1", "d2"]
    # A run that did not replace the release is recorded, but the shipped models never saw its epochs.
    discarded = {"timings_s": {"train_segmenter": 900}, "epochs": {"damage-segmenter": 1}}
    third = updated_state(second, discarded, "d3", released=False)
    assert third["models"] == second["models"] and third["runs"][-1]["released"] is False


def _yolo_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        path = root / "photos" / f"p{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        polygon = np.array([[8, 8], [40, 10], [44, 40], [10, 36]], dtype=float) + i
        samples.append(Sample(path, [("dent", polygon)]))
    return build_yolo_dataset({"": samples}, root / "yolo", names=["dent", "scratch"], val_fraction=0.5)


def test_a_segmenter_trains_and_saves_where_polars_is_missing(tmp_path, monkeypatch):
    """A lent GPU machine has no polars and can fetch nothing (train.gpu_kit leaves its 55 MB of wheels out):
    Ultralytics imports it at each checkpoint's save, so without the guard the run fails there."""
    from train.train_segmenter import SegmenterArguments, train_segmenter

    monkeypatch.setitem(sys.modules, "polars", None)  # `import polars` raises ImportError
    base = testing.yolo_seg(tmp_path / "base", ["dent", "scratch"])
    extra = json.dumps({"batch": 2, "workers": 0, "cache": False, "val": False})
    args = SegmenterArguments(data=str(_yolo_data(tmp_path)), model=str(base), output_dir=str(tmp_path / "run"),
                              epochs=1, imgsz=64, extra=extra)  # fmt: skip
    best = train_segmenter(args)
    assert best.is_file() and json.loads((best.parent / "train_summary.json").read_text())["epochs"] == 1


def test_a_second_run_continues_from_the_release(tmp_path):
    """Run 1 trains from the shared base; its weights become the release; run 2 (--resume) starts from them, and
    the release's training state counts both runs' epochs."""
    from train.build_profile import BuildArguments, train_yolo

    data = _yolo_data(tmp_path)
    shared = tmp_path / "shared"
    base = testing.yolo_seg(tmp_path / "base", ["dent", "scratch"])
    (shared / SEG_BASE).parent.mkdir(parents=True)
    shutil.copy(base, shared / SEG_BASE)
    extra = json.dumps({"time": None, "epochs": 1, "batch": 2, "workers": 0, "cache": False, "val": False})
    first = train_yolo(BuildArguments(shared=str(shared)), data, tmp_path / "run1", 64, 1.0, extra, "damage-segmenter")
    release = tmp_path / "models" / "damage-segmenter"
    release.mkdir(parents=True)
    shutil.copy(first, release / "model.pt")
    args = BuildArguments(shared=str(shared), resume=str(tmp_path / "models"))
    second = train_yolo(args, data, tmp_path / "run2", 64, 1.0, extra, "damage-segmenter")
    summaries = [json.loads((p.parent / "train_summary.json").read_text()) for p in (first, second)]
    assert Path(summaries[0]["base"]) == (shared / SEG_BASE).resolve()
    assert Path(summaries[1]["base"]) == (release / "model.pt").resolve()  # continued, not restarted
    assert json.loads(summaries[1]["args"]["extra"])["warmup_epochs"] == 1
    state = {}
    for summary in summaries:
        state = updated_state(state, {"epochs": {"damage-segmenter": summary["epochs"]}}, "today")
    assert state["models"]["damage-segmenter"]["epochs"] == 2


def _coco_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def test_release_figures_score_the_clis_outputs(tmp_path):
    """report.csv rows and predictions.json against the labels: checks, grades, parts, masks and types."""
    from train.release_eval import Photo, check_figures, part_figures
    from train.release_masks import mask_figures

    square = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], dtype=float)
    staged = {
        "lensor/a.jpg": Photo("lensor", tmp_path / "a.jpg", "minor", Sample(tmp_path, [("minor-dent", square)])),
        "dsmlr/b.jpg": Photo("dsmlr", tmp_path / "b.jpg"),
        "not_car/c.jpg": Photo("not_car", tmp_path / "c.jpg"),
        "yb/d.jpg": Photo("yb", tmp_path / "d.jpg", None, Sample(tmp_path / "d.jpg", [("Door", square)])),
    }
    row = {"status": "ok", "is_car": "True", "is_damaged": "True", "damage_count": "1", "severity": "minor",
           "damaged_parts": ""}  # fmt: skip
    rows = {
        "lensor/a.jpg": row,
        "dsmlr/b.jpg": row | {"is_damaged": "False", "damage_count": "0", "severity": ""},
        "not_car/c.jpg": row | {"is_car": "False", "is_damaged": "", "damage_count": "", "severity": ""},
        "yb/d.jpg": row | {"damaged_parts": "door;bumper"},
    }
    figures = check_figures(rows, staged) | part_figures(rows, staged)
    assert figures["car_balanced_accuracy"] == 1.0 and figures["damage_balanced_accuracy_vs_dsmlr"] == 1.0
    assert (figures["severity_accuracy"], figures["severity_graded_share"], figures["damaged_with_mask"]) == (1, 1, 1)
    assert figures["damaged_part_f1"] == 2 * 0.5 * 1 / 1.5  # door right, bumper wrong
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:31, 10:31] = True
    coco = {
        "images": [{"id": 7, "file_name": "photos/lensor/a.jpg", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "segmentation": _coco_rle(mask), "score": 0.9}],
        "categories": [{"id": 2, "name": "dent"}],
    }
    masks = mask_figures(coco, staged)
    assert masks["mask_map50_lensor"] == pytest.approx(1.0) and masks["type_accuracy_lensor"] == 1.0
    assert masks["mask_map50_lensor_interval"] == pytest.approx([1.0, 1.0])  # one photo, found: no spread


def test_the_mask_figure_comes_with_its_interval_over_photos():
    """Half the photos' damages found, half missed: mAP50 0.5 on these photos, and a bootstrap interval that holds
    it and is wide (a figure on few photos cannot tell two runs apart); more photos, a narrower interval."""
    from train.release_masks import map50, map50_interval

    mask = np.zeros((40, 40), dtype=bool)
    mask[10:31, 10:31] = True
    rle = _coco_rle(mask)

    def photos(count: int) -> tuple[dict, list[dict]]:
        truth = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "damage"}]}
        found = []
        for i in range(1, count + 1):
            truth["images"].append({"id": i, "width": 40, "height": 40})
            box = {"area": float(mask.sum()), "bbox": [10, 10, 21, 21], "iscrowd": 0}
            truth["annotations"].append({"id": i, "image_id": i, "category_id": 1, "segmentation": rle, **box})
            if i % 2:
                found.append({"image_id": i, "category_id": 1, "segmentation": rle, "score": 0.9})
        return truth, found

    few, many = photos(10), photos(60)
    assert map50(*few) == pytest.approx(0.5, abs=0.02)
    low, high = map50_interval(*few, draws=100)
    assert low < 0.4 and high > 0.6
    low_many, high_many = map50_interval(*many, draws=100)
    assert low_many <= map50(*many) <= high_many and high_many - low_many < high - low


def _tiny_work(root: Path) -> Path:
    """A build's prepared folders in miniature: classifier folders and two YOLO-seg sets of random photos."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("dev", 1)):
        for label in ("whole", "minor", "moderate", "severe", "damaged"):
            for i in range(count):
                path = root / "classify" / split / label / f"{label}{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(path)
    seg = _yolo_data(root / "seg-src")
    shutil.copytree(seg.parent, root / "damage-seg")
    (root / "damage-seg" / "data.yaml").write_text(seg.read_text().replace(str(seg.parent), str(root / "damage-seg")))
    shutil.copytree(seg.parent, root / "parts")
    (root / "parts" / "data.yaml").write_text(seg.read_text().replace(str(seg.parent), str(root / "parts")))
    return root


def _tiny_release(root: Path) -> Path:
    testing.vit_classifier(root / "car-check", testing.IMAGENET_STYLE_LABELS, favour="sports car")
    testing.vit_classifier(root / "damage-classifier", GRADED, favour="minor")
    for folder in ("damage-segmenter", "part-segmenter"):
        (root / folder).mkdir()
        shutil.copy(testing.yolo_seg(root / f"{folder}-random", ["dent", "scratch"]), root / folder / "model.pt")
    sections = {"car": "car-check", "damage": "damage-classifier", "segmenter": "damage-segmenter/model.pt",
                "parts": "part-segmenter/model.pt"}  # fmt: skip
    named = "".join(f'[{role}]\nmodel = "{path}"\n\n' for role, path in sections.items())
    (root / "profile.toml").write_text(named + "[thresholds]\ncar = 0.01\n\n[runtime]\nseg_image_size = 96\n")
    return root


def test_the_gpu_command_runs_end_to_end_on_cpu_with_a_tiny_compact_copy(tmp_path):
    """prepare -> compact copy (relative links, travels as it is) -> the GPU command, here on CPU for one epoch
    -> a build that train.release packages and the product loads."""
    from train.compact import CompactArguments, make_compact

    manifest = make_compact(CompactArguments(work=str(_tiny_work(tmp_path / "work")), out=str(tmp_path / "c")))
    assert manifest["counts"] == {"classifier": 20, "segmenter": 2, "parts": 2}
    moved = tmp_path / "elsewhere" / "compact"
    shutil.copytree(tmp_path / "c", moved, symlinks=True)  # as the device call carries it
    shutil.rmtree(tmp_path / "c")
    release = _tiny_release(tmp_path / "models")
    one_epoch = json.dumps({"time": None, "epochs": 1, "val": False, "batch": 2, "workers": 0, "cache": False})
    # As the device runs it, a command of its own: training in a process where the release's OpenVINO models
    # already ran (other tests) can end in a segmentation fault inside the threading runtimes, not in our code.
    subprocess.run([
        sys.executable, "-m", "train.build_profile",
        "--compact", str(moved), "--resume", str(release), "--out", str(tmp_path / "build"), "--minutes", "1",
        "--seg_extra", one_epoch, "--part_extra", one_epoch, "--seg_imgsz", "64", "--part_imgsz", "64",
        "--clf_epochs", "1",
    ], check=True, cwd=Path(__file__).parents[1], timeout=900)  # fmt: skip
    build = tmp_path / "build"
    summary = json.loads((build / "build_summary.json").read_text())
    assert summary["epochs"]["damage-segmenter"] == 1 and summary["epochs"]["damage-classifier"] > 0
    profile = package(ReleaseArguments(build=str(build), out=str(tmp_path / "r"), curve=None))
    settings = load_profile(profile).with_models(precision="fp32", seg_backend="torch")
    assert (settings.models.seg_image_size, settings.models.part_image_size) == (64, 64)  # as trained, not resumed
    assert pipeline.analyze(testing.photo(96, 64), settings).is_car


def test_the_prepared_gpu_calls_files_become_a_build_beside_the_releases_other_models(tmp_path):
    """train/gpu_call.sh brings back the segmenter and the build's profile and summary; train.gpu_kit --returned
    makes them a build whose other models are the release's own (evaluated as they are, kept by train.release)."""
    from train.build_profile import main
    from train.compact import CompactArguments, make_compact
    from train.gpu_kit import assemble_build

    work = _tiny_work(tmp_path / "work")
    make_compact(CompactArguments(work=str(work), out=str(tmp_path / "c"), what="damage"))
    release = _tiny_release(tmp_path / "models")
    one_epoch = json.dumps({"time": None, "epochs": 1, "val": False, "batch": 2, "workers": 0, "cache": False})
    main([
        "--compact", str(tmp_path / "c"), "--resume", str(release), "--out", str(tmp_path / "there"),
        "--skip_classifier", "--skip_parts", "--seg_extra", one_epoch, "--seg_imgsz", "64",
    ])  # fmt: skip
    returned = tmp_path / "returned"  # what gpu_call.sh copies to $OUT
    returned.mkdir()
    shutil.copy(tmp_path / "there" / "segmenter" / "best.pt", returned / "segmenter.pt")
    for name in ("profile.toml", "build_summary.json"):
        shutil.copy(tmp_path / "there" / name, returned / name)
    shutil.rmtree(tmp_path / "there")  # the device machine's folders do not come back
    profile = assemble_build(returned, tmp_path / "build", release)
    settings = load_profile(profile).with_models(precision="fp32", seg_backend="torch")
    assert Path(settings.models.damage.id) == (release / "damage-classifier").resolve()
    assert Path(settings.models.parts.id) == (release / "part-segmenter" / "model.pt").resolve()
    assert settings.models.seg_image_size == 64 and pipeline.analyze(testing.photo(96, 64), settings).is_car
    classifier = (release / "damage-classifier" / "model.safetensors").read_bytes()
    segmenter = (release / "damage-segmenter" / "model.pt").read_bytes()
    package(ReleaseArguments(build=str(tmp_path / "build"), out=str(release), curve=None, force=True))
    assert (release / "damage-segmenter" / "model.pt").read_bytes() != segmenter  # the call's, released
    assert (release / "damage-classifier" / "model.safetensors").read_bytes() == classifier  # kept as it was


def test_a_build_replaces_the_release_only_when_its_figures_improve(tmp_path):
    _, build = _tiny_build(tmp_path)
    out, worse, better = tmp_path / "models", tmp_path / "worse.json", tmp_path / "better.json"
    worse.write_text(json.dumps({"mask_map50_nmpd": 0.2, "damaged_part_f1": 0.1}))
    better.write_text(json.dumps({"mask_map50_nmpd": 0.3, "damaged_part_f1": 0.2}))
    package(ReleaseArguments(build=str(build), out=str(out), evaluation=str(better), curve=None))
    shipped = (out / "damage-segmenter" / "model.pt").read_bytes()
    shutil.copy(testing.yolo_seg(tmp_path / "other", ["dent", "scratch"], first_class_bias=1.0),
                build / "segmenter" / "best.pt")  # fmt: skip
    package(ReleaseArguments(build=str(build), out=str(out), evaluation=str(worse), curve=None))
    assert (out / "damage-segmenter" / "model.pt").read_bytes() == shipped  # kept: the new one scored worse
    state = json.loads((out / "training_state.json").read_text())
    assert [run["released"] for run in state["runs"]] == [True, False]
    assert json.loads((out / "evaluation.json").read_text())["mask_map50_nmpd"] == 0.3


def test_a_damage_only_compact_copy_leaves_the_part_set_out(tmp_path):
    """--what damage: the damage segmenter's set alone (room for its photos at 640 px in one device call)."""
    from train.compact import CompactArguments, compact_data, make_compact

    work, out = _tiny_work(tmp_path / "work"), tmp_path / "c"
    manifest = make_compact(CompactArguments(work=str(work), out=str(out), what="damage", segmenter_side=640))
    assert manifest["counts"] == {"classifier": 0, "segmenter": 2, "parts": 0}
    data = compact_data(out)
    assert data["parts"] is None and data["seg"].data_yaml.is_file()
    from train.build_profile import main

    with pytest.raises(ValueError, match="--skip_parts"):  # refused before any training time is spent
        main(["--compact", str(out), "--out", str(tmp_path / "build"), "--skip_classifier", "--minutes", "1"])
