"""Issue 25: the int8 segmenter copies a release ships beside its weights (``train.release_int8``), which ``auto``
runs on a CPU with VNNI and no AMX: used there, and only there, and only when made from these very weights."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from pipeline import testing
from pipeline.accel import precision
from pipeline.settings import ModelRef

pytest.importorskip("nncf", reason="NNCF quantises the segmenter")
CPUS = {
    "vnni": {"amx_tile": False, "vnni": True, "bf16": True},  # AMD EPYC Zen 4, Ice Lake
    "amx": {"amx_tile": True, "vnni": True, "bf16": True},  # Sapphire Rapids
    "neither": {"amx_tile": False, "vnni": False, "bf16": False},  # Xeons before Cascade Lake
}


@pytest.fixture(scope="module")
def cache() -> Path:
    """The session's OpenVINO cache (conftest): the f32 export the int8 copy is made from, which serves the f32
    fallbacks too, is then the one other modules' tests made of the same tiny segmenter (~5 s less), or made here
    when this module runs first. The copies built here have keys of their own (calibration photos in tmp_path)."""
    import os

    return Path(os.environ["CAR_DAMAGE_CACHE"])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, seg_model, cache) -> Path:
    """A release-like folder: the tiny segmenter's weights and its int8 copy beside them (calibrated on 4 photos),
    made by the release's own tool."""
    from train import release_int8

    folder = tmp_path_factory.mktemp("release") / "damage-segmenter"
    folder.mkdir()
    weights = shutil.copyfile(seg_model, folder / seg_model.name)  # its name: the key of the session's f32 export
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAR_DAMAGE_CACHE", str(cache))
        exported = release_int8.f32_export(weights)
        photos = [testing.photo(200, 150, seed=70 + s) for s in range(4)]
        files = []
        for i, photo in enumerate(photos):
            files.append(folder.parent / f"{i}.jpg")
            photo.save(files[-1])
        quantized = release_int8.quantize(exported, release_int8.network_inputs(files, 320))
        release_int8.write_copy(quantized, exported, weights, {"calibration_photos": 4})
    return weights


def _segmenter(weights: Path, cpu: str, monkeypatch, cache: Path, precision_name: str = "auto", sha256=None):
    from pipeline.hub import clear_cache
    from pipeline.segment import Segmenter

    monkeypatch.setattr(precision, "cpu_supports", lambda name: CPUS[cpu][name])
    monkeypatch.setenv("CAR_DAMAGE_CACHE", str(cache))
    clear_cache()
    return Segmenter(ModelRef(str(weights), sha256=sha256), precision_name, image_size=320)


def _loaded_shipped(monkeypatch) -> list:
    """The copies ``shipped_int8`` handed out (a spy on the product's own lookup)."""
    from pipeline import segment

    handed, real = [], segment.shipped_int8
    monkeypatch.setattr(segment, "shipped_int8", lambda *args: handed.append(real(*args)) or handed[-1])
    return handed


def test_auto_on_a_vnni_cpu_without_amx_runs_the_shipped_int8_copy(shipped, monkeypatch, cache):
    handed = _loaded_shipped(monkeypatch)
    segmenter = _segmenter(shipped, "vnni", monkeypatch, cache)
    assert segmenter.variant == "openvino:int8"
    model = segmenter.model
    assert handed and handed[0] is model  # the shipped copy, not one built here
    assert "FakeQuantize" in next(shipped.parent.glob("*_int8_openvino_model/*.xml")).read_text()
    photo = testing.photo(160, 120, seed=3)
    from pipeline.decode import load_photo

    (found,) = segmenter.detect([load_photo(photo)], conf=0.05)
    assert found and all(d.mask.shape == (120, 160) and d.label in {"dent", "scratch"} for d in found)


@pytest.mark.parametrize("cpu", ["amx", "neither"])
def test_other_cpus_leave_the_int8_copy_alone(shipped, monkeypatch, cache, cpu):
    """With AMX bf16 runs faster within the accuracy rule; without VNNI int8 arithmetic saturates: f32 copies."""
    handed = _loaded_shipped(monkeypatch)
    segmenter = _segmenter(shipped, cpu, monkeypatch, cache)
    assert segmenter.variant == f"openvino:{'bf16' if cpu == 'amx' else 'fp32'}"
    assert segmenter.model is not None and not handed
    assert precision.resolve_precision("auto") == ("bf16" if cpu == "amx" else "fp32")  # classifiers


def test_a_reference_naming_the_weights_digest_takes_the_shipped_copy(shipped, monkeypatch, cache):
    """As the release's profile names its weights (sha256 checked at load, then not hashed again for the copy)."""
    from pipeline.hub import file_sha256

    handed = _loaded_shipped(monkeypatch)
    segmenter = _segmenter(shipped, "vnni", monkeypatch, cache, sha256=file_sha256(shipped))
    assert segmenter.model is handed[0] is not None


def test_classifiers_stay_f32_where_segmenters_run_int8(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports", lambda name: CPUS["vnni"][name])
    assert precision.resolve_precision("auto", "segmenter") == "int8"
    assert precision.resolve_precision("auto") == "fp32"  # their int8 copies ran no faster and fell outside


def test_a_copy_made_from_other_weights_is_not_used(shipped, monkeypatch, cache, tmp_path, caplog):
    """Weights replaced after the copy was made (a new release, a user's own model in the folder): f32 copy."""
    import json

    folder = tmp_path / "release" / "damage-segmenter"
    shutil.copytree(shipped.parent, folder)
    record = next(folder.glob("*_int8_openvino_model/int8.json"))
    record.write_text(json.dumps(json.loads(record.read_text()) | {"weights_sha256": "0" * 64}))
    handed = _loaded_shipped(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        segmenter = _segmenter(folder / shipped.name, "vnni", monkeypatch, cache)
        assert segmenter.model is not None
    assert handed == [None]
    assert any("made from other weights" in r.getMessage() for r in caplog.records)


def test_int8_asked_by_name_takes_the_shipped_copy_and_calibration_photos_take_precedence(
    shipped, monkeypatch, cache, tmp_path
):
    handed = _loaded_shipped(monkeypatch)
    segmenter = _segmenter(shipped, "amx", monkeypatch, cache, "int8")
    assert segmenter.model is handed[0] is not None
    from pipeline.segment import Segmenter

    calibrated = Segmenter(ModelRef(str(shipped)), "int8", calibration=tmp_path, image_size=320)
    assert calibrated.variant.endswith(f"{tmp_path}@320")  # the user's own calibration: a copy built for it


def test_the_model_card_names_every_set_the_int8_copy_saw_once(tmp_path):
    from train.release_int8 import CALIBRATION_MIX, CARD_HEADING, write_card_section
    from train.release_models import DATASETS

    card = tmp_path / "README.md"
    card.write_text("# Damage segmenter\n")
    record = {"kept_f32": "the stem", "calibration_photos": 62, "image_size": 576}
    for _ in range(2):  # a release rewrites it: one section, not two
        write_card_section(card, record | {"validation_mask_map50": {"photos": 159, "f32": 0.55, "int8": 0.54}})
    text = card.read_text()
    assert text.count(CARD_HEADING) == 1 and text.startswith("# Damage segmenter")
    assert all(f"| {DATASETS[key].name} | {DATASETS[key].licence} |" in text for key in CALIBRATION_MIX)
    assert "f32 0.55, int8 0.54" in text


@pytest.mark.shared
def test_the_releases_int8_path_scores_as_fp32_against_held_out_ground_truth(shared_dir, monkeypatch):
    """Issue 25's judgement on a trained model (the release) and real held-out photos of ../shared: the CLI at
    fp32 (eager PyTorch) and at int8 (the shipped int8 segmenter copies, int8 classifiers), each scored against
    the photos' labels (mask mAP50 on nm/pd-style and lensor photos, verdict accuracy). 12 photos a kind here, where
    one instance moves a kind's mAP50 by up to ~0.02 and one verdict the accuracy by ~0.01; the bench judges by the
    issue's limits (0.01 / 0.005) on 60 a kind (docs/performance.md). ~40 s."""
    from bench.accuracy import HELD_OUT, accuracy_vs_fp32

    if not HELD_OUT.is_file():
        pytest.skip("the release's held-out split (models/held_out.json) is absent")
    monkeypatch.delenv("MODELS_PROFILE")  # the CLI's default, the release (the suite's default is the Hub's)
    figures = accuracy_vs_fp32(None, 12, ["int8"])["accuracy"]
    reference, int8 = figures["fp32"], figures["int8"]
    assert reference["analysed"] == int8["analysed"] >= 90
    assert reference["mask_map50_nmpd"] > 0.1 and reference["verdict_accuracy"] > 0.85  # a trained model's answers
    assert int8["map50_delta"] >= -0.03, figures
    assert int8["verdict_accuracy_delta"] >= -0.02, figures
