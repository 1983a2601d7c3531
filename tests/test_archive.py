"""Zips: safe reading, one row per entry, the output archive's exact contents, hostile cases."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline import UnsafeArchiveError, ZipLimits, process_zip, testing
from pipeline.results import REPORT_COLUMNS
from tests import zips


def _archive(result) -> zipfile.ZipFile:
    return zipfile.ZipFile(result.archive)


def _report(result) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_archive(result).read("report.csv").decode())))


def _outside(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


def test_200_photos_with_5_bad_members(settings_factory, tmp_path):
    source = zips.photos_zip(tmp_path / "fleet.zip", count=200, broken=5)
    progress: list[tuple[int, int]] = []
    result = process_zip(
        source, tmp_path / "out", settings_factory(batch_size=16), progress=lambda d, t, n: progress.append((d, t))
    )
    rows = _report(result)
    assert len(rows) == 200
    assert [r["file"] for r in rows] == zipfile.ZipFile(source).namelist()  # the zip's order
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(rows) - len(bad) == 195, [(r["file"], r["status"], r["message"]) for r in rows if "bad_" in r["file"]]
    assert len(bad) == 5 and all(r["message"] for r in bad)
    assert {r["file"] for r in bad} == {n for n in zipfile.ZipFile(source).namelist() if n.startswith("bad_")}
    names = set(_archive(result).namelist())
    photos = names - {"report.csv", "vehicles.csv", "predictions.json", "summary.json", "report.html"}
    assert len(photos) == 195
    assert progress[-1] == (200, 200) and [d for d, _ in progress] == list(range(1, 201))
    assert result.summary.files == 200 and result.summary.photos_analyzed == 195
    assert result.summary.not_processed == 5


def test_archive_contents_and_report(settings_factory, tmp_path):
    source = zips.with_entries(
        tmp_path / "in.zip",
        [
            ("a.jpg", testing.jpeg_bytes(testing.photo(64, 48))),
            ("sub/b.png", testing.png_bytes(testing.photo(40, 30))),
            ("sub/c.gif", _gif()),
            ("readme.txt", b"hello"),
        ],
    )
    result = process_zip(source, tmp_path / "out", settings_factory())
    archive = _archive(result)
    reports = ["report.csv", "vehicles.csv", "predictions.json", "summary.json", "report.html"]
    assert sorted(archive.namelist()) == sorted(["a.jpg", "sub/b.png", "sub/c.gif.png", *reports])
    assert result.archive.name == "in-results.zip" and result.archive.parent == tmp_path / "out"
    assert list(_report(result)[0]) == list(REPORT_COLUMNS)
    rows = {r["file"]: r for r in _report(result)}
    assert rows["readme.txt"]["status"] == "skipped" and "not a photo" in rows["readme.txt"]["message"]
    ok = rows["sub/b.png"]
    assert ok["status"] == "ok" and ok["annotated_file"] == "sub/b.png"
    assert ok["is_car"] == "True" and ok["is_damaged"] == "True"
    assert float(ok["car_score"]) > 0.9 and int(ok["damage_count"]) >= 1 and ok["damage_classes"] == "dent"
    assert 0 < float(ok["damage_area_pct"]) <= 100 and (ok["width"], ok["height"]) == ("40", "30")
    with Image.open(io.BytesIO(archive.read("sub/b.png"))) as annotated:
        assert annotated.size == (40, 30)
    summary = json.loads(archive.read("summary.json"))
    assert summary["photos_analyzed"] == 3 and summary["damaged_cars"] == 3


def test_predictions_load_in_pycocotools(settings_factory, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    source = zips.photos_zip(tmp_path / "p.zip", count=3)
    result = process_zip(source, tmp_path / "out", settings_factory())
    path = tmp_path / "predictions.json"
    path.write_bytes(_archive(result).read("predictions.json"))
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["dent"]
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    image = coco.loadImgs(annotation["image_id"])[0]
    mask = coco.annToMask(annotation)
    assert mask.shape == (image["height"], image["width"]) and mask.sum() == annotation["area"]
    assert mask_utils.area(annotation["segmentation"]) == annotation["area"]


def test_duplicate_names_keep_both_photos(settings_factory, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns, but writes both
        source = zips.with_entries(tmp_path / "dup.zip", [("x.jpg", zips.good_photo()), ("x.jpg", zips.good_photo())])
    result = process_zip(source, tmp_path / "out", settings_factory())
    assert [r.annotated_file for r in result.rows] == ["x.jpg", "x (2).jpg"]
    assert {"x.jpg", "x (2).jpg"} <= set(_archive(result).namelist())


@pytest.mark.parametrize(
    ("builder", "entry", "reason"),
    [
        (zips.traversal_zip, "../../escaped.jpg", "outside the archive"),
        (zips.absolute_zip, "/tmp/absolute-escape.jpg", "absolute path"),
        (zips.symlink_zip, "link.jpg", "symbolic link"),
        (zips.nested_zip, "more.zip", "nested archive"),
        (zips.nested_zip, "disguised.jpg", "nested archive"),
        (zips.encrypted_zip, "secret.jpg", "encrypted"),
        (zips.ratio_bomb_zip, "bomb.jpg", "zip bomb"),
    ],
)
def test_hostile_entries_are_refused_and_the_rest_processed(settings_factory, tmp_path, builder, entry, reason):
    source = builder(tmp_path / "hostile.zip")
    before = _outside(tmp_path)
    result = process_zip(source, tmp_path / "out", settings_factory())
    rows = {r.file: r for r in result.rows}
    assert rows[entry].status == "refused" and reason in rows[entry].message
    assert rows["ok.jpg"].status == "ok"
    assert _outside(tmp_path) == before | {"out"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hostile-results.zip"]
    assert not Path("/tmp/absolute-escape.jpg").exists()
    names = _archive(result).namelist()
    assert all(not n.startswith(("/", "..")) and ".." not in n.split("/") for n in names)


def test_declared_size_bomb_refuses_the_whole_zip(settings_factory, tmp_path):
    source = zips.ratio_bomb_zip(tmp_path / "bomb.zip", megabytes=40)
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        process_zip(source, tmp_path / "out", settings_factory(), limits=ZipLimits(max_total_bytes=20 * 1024**2))
    assert not list((tmp_path / "out").iterdir())


def test_too_many_entries(settings_factory, tmp_path):
    source = zips.many_entries_zip(tmp_path / "many.zip", 50)
    with pytest.raises(UnsafeArchiveError, match="50 files; the limit is 10"):
        process_zip(source, tmp_path / "out", settings_factory(), limits=ZipLimits(max_entries=10))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a zip at all", "not a readable zip"), (None, "empty")],
)
def test_not_a_zip_and_empty_zip(settings_factory, tmp_path, content, message):
    source = tmp_path / "x.zip"
    if content is None:
        zipfile.ZipFile(source, "w").close()
    else:
        source.write_bytes(content)
    with pytest.raises(UnsafeArchiveError, match=message):
        process_zip(source, tmp_path / "out", settings_factory())


def test_a_photo_that_fails_mid_zip_costs_only_its_row(settings_factory, tmp_path, monkeypatch):
    from pipeline import batch

    real = batch.analyze_photos

    def flaky(photos, settings):
        if any(p.size == (33, 33) for p in photos):
            raise RuntimeError("boom")
        return real(photos, settings)

    monkeypatch.setattr(batch, "analyze_photos", flaky)
    source = zips.with_entries(
        tmp_path / "f.zip",
        [
            ("a.jpg", zips.good_photo()),
            ("odd.png", testing.png_bytes(testing.photo(33, 33))),
            ("b.jpg", zips.good_photo()),
        ],
    )
    result = process_zip(source, tmp_path / "out", settings_factory(batch_size=8))
    statuses = {r.file: r.status for r in result.rows}
    assert statuses == {"a.jpg": "ok", "odd.png": "error", "b.jpg": "ok"}


def test_cancelled_job_leaves_no_archive(settings_factory, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel(done: int, total: int, name: str) -> None:
        if done == 3:
            raise Cancelled

    source = zips.photos_zip(tmp_path / "c.zip", count=10)
    with pytest.raises(Cancelled):
        process_zip(source, tmp_path / "out", settings_factory(batch_size=2), progress=cancel)
    assert list((tmp_path / "out").iterdir()) == []


def _gif() -> bytes:
    buffer = io.BytesIO()
    frames = [testing.photo(30, 20, seed=s).convert("P") for s in range(3)]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()
