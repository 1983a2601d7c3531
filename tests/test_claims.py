"""Issue 15: how badly (a grade per photo, and per instance where the segmenter's classes carry one), which part,
and a report to file — through the library, report.csv, COCO, report.html, the API and the MCP tool list."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

import pipeline
from pipeline import ModelRef, analyze, process_zip, testing
from pipeline.results import GRADES
from tests import zips


@pytest.fixture(scope="module")
def graded_damage(model_dir: Path) -> Path:
    """One model for the damage check and the grade: whole / minor / moderate / severe."""
    return testing.vit_classifier(model_dir / "four-label", ["whole", "minor", "moderate", "severe"], favour="moderate")


@pytest.fixture(scope="module")
def severity_model(model_dir: Path) -> Path:
    return testing.vit_classifier(model_dir / "severity", ["minor", "moderate", "severe"], favour="severe")


@pytest.fixture(scope="module")
def part_model(model_dir: Path) -> Path:
    """A part segmenter: the tiny segmenter's weights with part names (its masks fall where the damages do)."""
    return testing.yolo_seg(model_dir / "parts", ["front_bumper", "hood"])


@pytest.fixture(scope="module")
def graded_segmenter(model_dir: Path) -> Path:
    return testing.yolo_seg(model_dir / "graded-seg", ["minor-dent", "severe-broken"])


def test_a_four_label_model_grades_in_the_same_pass(settings_factory, graded_damage):
    result = analyze(testing.photo(160, 96), settings_factory(damage=graded_damage))
    assert result.is_damaged and result.damage.score > 0.99  # P(damaged) = minor + moderate + severe
    assert result.severity.label == "moderate" and result.severity.score > 0.9
    data = result.to_dict()
    assert (data["severity"], data["severity_score"]) == ("moderate", round(result.severity.score, 4))
    assert "Severity: moderate" in result.summary


def test_a_separate_severity_model_grades_damaged_cars_only(settings_factory, severity_model, damage_no):
    settings = settings_factory(severity=ModelRef(str(severity_model)))
    assert analyze(testing.photo(160, 96), settings).severity.label == "severe"
    undamaged = analyze(testing.photo(160, 96), settings.with_models(damage=ModelRef(str(damage_no))))
    assert undamaged.severity is None and undamaged.to_dict()["severity"] == ""


def test_an_unsure_grade_is_left_out(settings_factory, graded_damage, tmp_path):
    """Below the profile's grade threshold the car is still damaged, with no grade (and no "Severity:" line)."""
    (tmp_path / "p.toml").write_text(f'[damage]\nmodel = "{graded_damage}"\n[thresholds]\ngrade = 1.0\n')
    settings = pipeline.Settings.from_env(tmp_path / "p.toml")
    assert settings.thresholds.grade == 1.0
    result = analyze(testing.photo(160, 96), settings_factory(damage=graded_damage).with_thresholds(grade=1.0))
    assert result.is_damaged and result.severity is None and "Severity" not in result.summary


def test_zero_shot_clip_grades_with_prompts(settings_factory, damage_clip):
    result = analyze(testing.photo(96, 64), settings_factory(damage=damage_clip, damage_threshold=0.0))
    assert result.is_damaged and result.severity.label in GRADES and 0 < result.severity.score <= 1


def test_instances_carry_the_grade_and_type_of_their_class(settings_factory, graded_segmenter):
    result = analyze(testing.photo(160, 96), settings_factory(seg=graded_segmenter))
    assert result.detections and {(d.damage_type, d.severity) for d in result.detections} == {("dent", "minor")}


def test_each_damage_lies_on_a_part(settings_factory, part_model):
    result = analyze(testing.photo(160, 96), settings_factory(parts=ModelRef(str(part_model))))
    assert result.detections and all(d.part == "front_bumper" for d in result.detections)
    assert result.damaged_parts == ["front_bumper"] and "Damaged parts: front bumper" in result.summary
    assert {d["part"] for d in result.to_dict()["damages"]} == {"front_bumper"}


def test_a_model_of_damaged_parts_names_them_without_a_mask(settings_factory, part_model):
    """The release's part model is trained on damaged-part polygons: on a photo judged damaged its own instances
    name the damaged parts, also where no damage mask clears the threshold; a model of car parts (no
    damaged_part_confidence) only places masks, so no mask means no part."""
    unmasked = {"parts": ModelRef(str(part_model)), "mask_threshold": 1.0}
    named = analyze(testing.photo(160, 96), settings_factory(**unmasked, damaged_part_confidence=0.0))
    assert named.is_damaged and not named.detections
    assert named.damaged_parts and set(named.damaged_parts) <= {"front_bumper", "hood"}
    assert f"Damaged parts: {named.damaged_parts[0].replace('_', ' ')}" in named.summary
    assert analyze(testing.photo(160, 96), settings_factory(**unmasked)).damaged_parts == []
    whole = analyze(
        testing.photo(160, 96), settings_factory(**unmasked, damaged_part_confidence=0.0, damage_threshold=1.0)
    )
    assert not whole.is_damaged and whole.damaged_parts == []


def test_without_a_part_model_parts_stay_empty(settings_factory):
    result = analyze(testing.photo(160, 96), settings_factory())
    assert result.damaged_parts == [] and all(d.part == "" for d in result.detections)


def test_part_model_from_env_and_profile(tmp_path, monkeypatch, part_model, severity_model):
    (tmp_path / "p.toml").write_text(f'[parts]\nmodel = "{part_model}"\n[severity]\nmodel = "{severity_model}"\n')
    models = pipeline.Settings.from_env(tmp_path / "p.toml").models
    assert (models.parts.id, models.severity.id) == (str(part_model), str(severity_model))
    monkeypatch.setenv("PART_MODEL", "owner/car-parts:best.pt")
    assert pipeline.Settings.from_env(tmp_path / "p.toml").models.parts == ModelRef("owner/car-parts", None, "best.pt")


def test_the_result_zip_holds_a_report_to_file(settings_factory, graded_damage, part_model, tmp_path):
    settings = settings_factory(damage=graded_damage, parts=ModelRef(str(part_model)))
    entries = [("front.jpg", zips.good_photo()), ("<b>odd</b>.png", testing.png_bytes(testing.photo(80, 60)))]
    source = zips.with_entries(tmp_path / "claim.zip", [*entries, ("notes.txt", b"claim 42")])
    result = process_zip(source, tmp_path / "out", settings)
    with zipfile.ZipFile(result.archive) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("report.csv").decode())))
        coco = json.loads(archive.read("predictions.json"))
        html = archive.read("report.html").decode()
    photo_row = next(r for r in rows if r["file"] == "front.jpg")
    assert (photo_row["severity"], photo_row["damaged_parts"]) == ("moderate", "front_bumper")
    assert 0.9 < float(photo_row["severity_score"]) <= 1
    assert all(a["attributes"]["part"] == "front_bumper" for a in coco["annotations"])
    summary = result.summary
    assert summary.worst_severity == "moderate" and summary.severities == {"moderate": 2}
    assert summary.damaged_parts["front_bumper"] >= 2
    assert html.count("<section>") == 2 and html.count('<section class="vehicle">') == 2  # a vehicle each
    assert html.count('src="data:image/jpeg;base64,') == 2 + 2  # self-contained: the photos and their thumbnails
    assert "&lt;b&gt;odd&lt;/b&gt;.png" in html and "<b>odd</b>" not in html  # names shown as text
    assert "Worst severity" in html and "front bumper (" in html and "notes.txt" in html


def test_the_api_shows_grade_and_parts(settings_factory, graded_damage, part_model, tmp_path):
    import urllib.request

    from gradio_client import Client, handle_file

    from tests.test_app import serve, write_photo

    settings = settings_factory(damage=graded_damage, parts=ModelRef(str(part_model)))
    with serve(settings, mcp_server=True) as (_, url, _):
        client = Client(url, download_files=str(tmp_path), verbose=False)
        summary, _, _, damages, result = client.predict(
            handle_file(write_photo(tmp_path / "car.jpg", 160, 96)), api_name="/analyze_image"
        )
        with urllib.request.urlopen(f"{url}gradio_api/mcp/schema", timeout=30) as response:
            tools = json.loads(response.read())
    assert result["severity"] == "moderate" and result["damaged_parts"] == ["front_bumper"]
    assert damages["headers"][:3] == ["part", "type", "severity"] and damages["data"][0][:3] == [
        "front_bumper",
        "dent",
        "",
    ]
    assert "Severity: moderate" in summary
    tool = next(t for t in tools if t["name"].endswith("analyze_image"))
    assert "minor / moderate / severe" in tool["description"] and "image" in json.dumps(tool)
