"""Issue 12: bounded memory per request, budgets per zip, faults that stay per entry, safe names, inputs the Space
means to accept. Each class of hostile input gets a row or a one-line message; the memory cases are measured in
a subprocess (peak RSS against the warm idle).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import unicodedata
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import pipeline
from pipeline import testing
from pipeline.__main__ import main as cli
from tests import zips

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024  # MB


# ---------------------------------------------------------------- memory


def test_no_upload_takes_the_process_a_gigabyte_above_idle(profile, tmp_path):
    """Every memory case (extreme aspect, 60-89 MP in 8/16-bit, float and RGBA, a zip declaring 9.6 GP, a
    17000-px WebP), thresholds at 0 with always-segment, in a fresh process with the models loaded and warm."""
    out = tmp_path / "memory.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--models", str(profile), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    cases = {case["case"]: case for case in json.loads(out.read_text())["cases"]}
    for name, case in cases.items():
        assert case["added_mb"] < GIB, (name, case)
    assert cases["strip_40000x1"]["outcome"].startswith("message: ImageShapeError: photo too wide")
    assert cases["tall_20x400"]["outcome"].startswith("result: 20x400")
    assert cases["sixty_mp"]["outcome"].startswith("result: 8000x7500")
    assert cases["sixteen_bit_81mp"]["outcome"].startswith("result: 9000x9000")
    assert cases["rgba_88mp"]["outcome"].startswith("result: 9400x9400")
    assert cases["float_tiff_60mp"]["outcome"].startswith("result: 8000x7500")
    assert "UnsafeArchiveError" in cases["big_pngs_zip"]["outcome"] and "9,600 MP" in cases["big_pngs_zip"]["outcome"]
    assert cases["webp_named_wide_zip"]["outcome"] == "archive: 2 rows, 2 analysed"


def test_big_photo_is_analysed_at_the_working_size_and_reported_in_its_own_pixels(settings_factory, tmp_path):
    path = tmp_path / "big.jpg"
    testing.photo(300, 200).resize((6000, 4000)).save(path, quality=80)
    settings = settings_factory(always_segment=True)
    result = pipeline.analyze(path, settings)
    assert result.size == (6000, 4000) and result.image.size == (1600, 1067)
    assert result.detections and pipeline.annotate(result).size == (1600, 1067)
    seen = pipeline.analyze(result.image, settings)  # what the models saw: the working copy itself
    scale = (6000 / 1600, 4000 / 1067)
    for big, small in zip(result.detections, seen.detections, strict=True):
        expected = [v * scale[i % 2] for i, v in enumerate(small.box)]
        assert big.box == pytest.approx(expected, rel=1e-4)  # boxes in the original's pixels
        assert big.area_pct == pytest.approx(small.area_pct)
    full = result.detections[0].mask  # expanded on demand, at the original size
    x1, y1, x2, y2 = result.detections[0].box
    ys, xs = full.nonzero()
    assert full.shape == (4000, 6000) and xs.min() >= x1 - 8 and xs.max() <= x2 + 8
    assert ys.min() >= y1 - 8 and ys.max() <= y2 + 8
    assert result.detections[0].area_pct == pytest.approx(100 * full.mean(), rel=0.05)


# ---------------------------------------------------------------- budgets per zip


def test_zip_over_the_pixel_budget_is_refused_before_any_work(settings_factory, tmp_path):
    """150 blank 64 MP PNGs: a few MB, 9.6 GP declared; refused with the number, in seconds."""
    source = testing._repeated_zip(tmp_path / "blank.zip", Image.new("L", (8000, 8000)), 150)
    assert source.stat().st_size < 20e6
    began = time.monotonic()
    with pytest.raises(pipeline.UnsafeArchiveError, match="9,600 MP in all; the limit is 4,000 MP"):
        pipeline.process_zip(source, tmp_path / "out", settings_factory())
    assert time.monotonic() - began < 60
    assert not list((tmp_path / "out").iterdir())


def test_time_budget_returns_the_archive_of_what_was_done(settings_factory, tmp_path):
    source = zips.photos_zip(tmp_path / "fleet.zip", count=12)
    control = pipeline.JobControl(seconds=0.0)
    result = pipeline.process_zip(source, tmp_path / "out", settings_factory(batch_size=4), control=control)
    assert [r.status for r in result.rows] == ["not_processed"] * 12
    assert all("time budget" in r.message for r in result.rows) and "time budget" in result.summary.stopped
    with zipfile.ZipFile(result.archive) as archive:
        rows = list(csv.DictReader(archive.read("report.csv").decode().splitlines()))
    assert [r["file"] for r in rows] == zipfile.ZipFile(source).namelist()


def test_a_client_that_goes_away_stops_the_job_at_the_next_batch(settings_factory, tmp_path):
    source = zips.photos_zip(tmp_path / "fleet.zip", count=20)
    asked = []

    def gone() -> bool:
        asked.append(1)
        return len(asked) > 6  # gone after the first few photos

    control = pipeline.JobControl(client_gone=gone)
    result = pipeline.process_zip(source, tmp_path / "out", settings_factory(batch_size=2), control=control)
    statuses = [r.status for r in result.rows]
    assert 0 < statuses.count("ok") < 8 and statuses.count("not_processed") >= 12
    assert statuses == sorted(statuses, key=lambda s: s != "ok")  # done ones first, then the rest, in order
    assert "cancelled" in result.summary.stopped


# ---------------------------------------------------------------- faults stay per entry


def test_an_encoder_that_cannot_write_a_size_falls_back_to_png():
    from pipeline.report import encode

    data, fmt = encode(Image.new("RGB", (17000, 20)), ".webp")
    assert fmt == "PNG" and data.startswith(b"\x89PNG")
    assert encode(Image.new("RGB", (20, 20)), ".webp")[1] == "WEBP"


def test_wide_photo_named_webp_keeps_the_zip(settings_factory, tmp_path):
    """At a working size wider than WebP allows, the annotated copy is written as PNG; the zip completes."""
    source = testing._webp_named_wide_zip(tmp_path / "in.zip")
    result = pipeline.process_zip(source, tmp_path / "out", settings_factory(working_size=20000))
    rows = {r.file: r for r in result.rows}
    assert rows["good.jpg"].status == "ok" and rows["wide.webp"].status == "ok"
    assert rows["wide.webp"].annotated_file == "wide.webp.png"
    assert {"good.jpg", "wide.webp.png", "report.csv"} <= set(zipfile.ZipFile(result.archive).namelist())


@pytest.mark.parametrize("stage", ["decode", "draw", "write"])
def test_a_fault_in_any_stage_costs_only_that_entrys_row(settings_factory, tmp_path, monkeypatch, stage):
    from pipeline import batch, report, sinks

    real_decode, real_draw, real_write = batch.load_photo, report.annotate, sinks.ZipSink.write

    def decode(data, limits):
        photo = real_decode(data, limits)
        if photo.size == (33, 33):
            raise RuntimeError("a decoder bug")
        return photo

    def draw(analysis):
        if analysis.size == (33, 33):
            raise RuntimeError("a drawing bug")
        return real_draw(analysis)

    def write(self, name, data):
        if name.startswith("odd"):
            raise OSError("disk full")
        return real_write(self, name, data)

    target, name, fake = {"decode": (batch, "load_photo", decode), "draw": (report, "annotate", draw),
                          "write": (sinks.ZipSink, "write", write)}[stage]  # fmt: skip
    monkeypatch.setattr(target, name, fake)
    photos = [("a.jpg", zips.good_photo()), ("odd.png", testing.png_bytes(testing.photo(33, 33)))]
    source = zips.with_entries(tmp_path / "f.zip", [*photos, ("b.jpg", zips.good_photo())])
    result = pipeline.process_zip(source, tmp_path / "out", settings_factory())
    statuses = {r.file: r.status for r in result.rows}
    assert statuses == {"a.jpg": "ok", "odd.png": "error", "b.jpg": "ok"}
    assert {"a.jpg", "b.jpg", "report.csv"} <= set(zipfile.ZipFile(result.archive).namelist())


# ---------------------------------------------------------------- names


def _colliding_zip(path: Path) -> Path:
    photo = zips.good_photo()
    names = [
        "a.jpg", "A.jpg", "a.jpg/b.jpg", unicodedata.normalize("NFC", "é.jpg"), unicodedata.normalize("NFD", "é.jpg"),
        "x" * 300 + ".jpg", "CON.jpg", "nul.png", "sub/Photo.JPG", "SUB/photo.jpg",
    ]  # fmt: skip
    return zips.with_entries(path, [(name, photo) for name in names])


def test_cli_writes_a_row_and_a_file_for_every_colliding_name(profile, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        source = _colliding_zip(tmp_path / "names.zip")
    out = tmp_path / "out"
    assert cli([str(source), "--out", str(out), "--models", str(profile)]) == 0
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    written = [r["annotated_file"] for r in rows]
    keys = {unicodedata.normalize("NFC", name).casefold() for name in written}
    assert len(keys) == 10  # unique after NFC + casefold
    for name in written:
        assert (out / name).is_file() and all(len(part.encode()) <= 255 for part in Path(name).parts)
        assert not Path(name).stem.upper().startswith(("CON", "NUL")) or Path(name).name.startswith("_")


def test_cli_refuses_an_output_folder_inside_an_input(profile, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    testing.photo(40, 30).save(photos / "a.jpg")
    assert cli([str(photos), "--out", str(photos / "results"), "--models", str(profile)]) == 2
    assert "inside an input" in capsys.readouterr().err


def test_cli_shows_control_characters_escaped(profile, tmp_path, capsys):
    source = zips.with_entries(tmp_path / "e.zip", [("ok.jpg", zips.good_photo()), ("bad\x1b[2J\r.jpg", b"junk")])
    assert cli([str(source), "--out", str(tmp_path / "out"), "--models", str(profile)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "bad\\x1b[2J\\x0d.jpg" in err


def test_ui_summary_shows_hostile_names_as_text():
    from space.text import summary_markdown

    summary = pipeline.Summary(
        files=1, photos_analyzed=0, cars=0, damaged_cars=0, damage_instances=0, damage_classes={}, not_processed=1,
        failures=[{"file": "[x](javascript:alert(1))<img src=x onerror=alert(1)>_*.txt", "status": "skipped",
                   "message": "not a photo (.txt file)"}],
        seconds=0.1, models={},
    )  # fmt: skip
    text = summary_markdown(summary)
    assert "\\[x\\](javascript:alert(1))\\<img src=x onerror=alert(1)\\>\\_\\*.txt" in text
