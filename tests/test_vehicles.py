"""Issue 23: one vehicle, many photos. The grouping (folders, top-level photos, vehicles.csv and its refusals), a
vehicle's answer from hand-built photo answers, and the plumbing: zip in (process_zip and the CLI), vehicles.csv,
summary.json, COCO and report.html out; ``analyze_vehicle``; 2,000 one-photo vehicles."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline import testing
from pipeline.__main__ import main as cli
from pipeline.results import GRADES, VEHICLE_COLUMNS, Analysis, Check, Detection, Grade, MaskCrop, ReportRow, Status
from pipeline.vehicles import (
    MAX_CSV_BYTES,
    PartDamage,
    PhotoFacts,
    folder_vehicle,
    grouping_of,
    vehicle_row,
    vehicle_rows,
    worst_grade,
)
from tests import zips

# ---------------------------------------------------------------- a vehicle's answer, from hand-built photos


def _photo(file, vehicle="AB", damaged=False, car=True, severity="", damages=(), score=0.0, status=Status.OK):
    return PhotoFacts(file, vehicle, status, car, damaged, score, severity, tuple(PartDamage(*d) for d in damages))


def test_worst_grade_orders_minor_moderate_severe():
    assert GRADES == ("minor", "moderate", "severe")
    assert worst_grade(["minor", "severe", "moderate"]) == "severe"
    assert worst_grade(["moderate", "", "minor"]) == "moderate"
    assert worst_grade(["", "bad"]) == ""


def test_a_damaged_photo_among_whole_ones():
    row = vehicle_row(
        "AB-123-CD",
        [
            _photo("AB/front.jpg"),
            _photo("AB/rear.jpg", damaged=True, severity="moderate", damages=[("rear_bumper", "", 0.8)], score=0.9),
            _photo("AB/left.jpg"),
        ],
    )
    assert (row.photos, row.photos_with_car, row.damaged, row.severity) == (3, 3, True, "moderate")
    assert row.damaged_parts == "rear bumper: moderate" and row.best_photo == "rear bumper: AB/rear.jpg"
    assert row.damage_count == 1 and row.photos_not_analysed == 0
    assert row.files == ("AB/front.jpg", "AB/rear.jpg", "AB/left.jpg")


def test_each_part_once_with_its_worst_grade_and_its_best_photo():
    """Two photos show the front bumper (one area each: it counts twice); a damage's own grade beats its photo's;
    the best photo is the one with the most confident damage on that part."""
    row = vehicle_row(
        "XY",
        [
            _photo("XY/front.jpg", damaged=True, severity="minor", damages=[("front_bumper", "", 0.6)], score=0.7),
            _photo("XY/left.jpg", damaged=True, severity="minor", damages=[("left_door", "", 0.9)], score=0.8),
            _photo(
                "XY/corner.jpg", damaged=True, severity="minor", score=0.95,
                damages=[("front_bumper", "severe", 0.8), ("hood", "", 0.5), ("", "moderate", 0.99)],
            ),
        ],
    )  # fmt: skip
    assert row.damaged_parts == "front bumper: severe; hood: minor; left door: minor"
    assert row.best_photo == "front bumper: XY/corner.jpg; hood: XY/corner.jpg; left door: XY/left.jpg"
    assert row.severity == "severe" and row.damage_count == 5  # one area seen in two photos counts twice
    first = row.parts[0]
    assert (first.part, first.severity, first.best_photo, first.score) == (
        "front_bumper",
        "severe",
        "XY/corner.jpg",
        0.8,
    )


def test_no_car_and_failed_photos():
    no_car = vehicle_row("N", [_photo("N/1.jpg", car=False), _photo("N/2.jpg", car=False)])
    assert (no_car.photos, no_car.photos_with_car, no_car.damaged, no_car.severity, no_car.parts) == (
        2,
        0,
        False,
        "",
        (),
    )
    assert no_car.damaged_parts == "" and no_car.best_photo == "" and no_car.damage_count == 0
    broken = vehicle_row("B", [_photo("B/1.jpg", status=Status.ERROR)])
    assert (broken.photos, broken.damaged, broken.photos_not_analysed) == (0, None, 1)
    assert broken.csv_row()["damaged"] is None


def test_without_part_names_the_best_photo_is_the_most_surely_damaged():
    row = vehicle_row(
        "V",
        [
            _photo("V/a.jpg", damaged=True, score=0.7, damages=[("", "", 0.9)]),
            _photo("V/b.jpg", damaged=True, score=0.9),
        ],
    )
    assert row.damaged_parts == "" and row.best_photo == "V/b.jpg" and row.damage_count == 1


def test_undamaged_photos_add_no_damage_to_the_vehicle():
    """Areas drawn on a photo judged undamaged (always-segment) are no damage of the vehicle."""
    row = vehicle_row("V", [_photo("V/a.jpg", damaged=False, damages=[("hood", "", 0.4)])])
    assert row.damaged is False and row.parts == () and row.damage_count == 0


def test_a_folder_without_photos_is_no_vehicle():
    photos = [
        _photo("notes/readme.txt", "notes", status=Status.SKIPPED),
        _photo("late/a.jpg", "late", status=Status.NOT_PROCESSED),
        _photo("late/b.txt", "late", status=Status.NOT_PROCESSED),
        _photo("../../evil.jpg", "..", status=Status.REFUSED),
        _photo("AB/a.jpg", "AB"),
        _photo("late/c.jpg", "late"),
    ]
    rows = vehicle_rows(photos)
    assert [(r.vehicle, r.photos, r.photos_not_analysed) for r in rows] == [("late", 1, 1), ("AB", 1, 0)]


def test_photo_facts_from_a_row_and_from_coco():
    row = ReportRow("a.jpg", Status.OK, is_car=True, is_damaged=True, damage_score=0.8, severity="minor")
    facts = PhotoFacts.of(
        row, "V", [PartDamage.of_coco({"score": 0.5, "attributes": {"part": "hood", "severity": ""}})]
    )
    assert (facts.is_car, facts.is_damaged, facts.damage_score, facts.severity) == (True, True, 0.8, "minor")
    assert facts.damages == (PartDamage("hood", "", 0.5),)


# ---------------------------------------------------------------- grouping


def _never(name: str) -> bytes:
    raise AssertionError(f"{name} should not be read")


def test_top_level_folders_are_vehicles_and_top_level_photos_are_their_own():
    grouping = grouping_of(["AB/front.jpg", "AB/sub/rear.jpg", "side.png", "CD\\x.jpg"], _never)
    assert [grouping.vehicle_of(n) for n in ["AB/front.jpg", "AB/sub/rear.jpg", "side.png", "CD\\x.jpg"]] == [
        "AB", "AB", "side.png", "CD",
    ]  # fmt: skip
    assert folder_vehicle("lot/AB/a.jpg", "lot/") == "lot/AB" and folder_vehicle("lot/a.jpg", "lot/") == "lot/a.jpg"


def _csv(text: str):
    return lambda name: text.encode()


def test_vehicles_csv_overrides_the_folders():
    names = ["export/1.jpg", "export/2.jpg", "export/3.jpg", "export/vehicles.csv"]
    grouping = grouping_of(names, _csv("file,vehicle\n1.jpg,AB-123\n2.jpg, AB-123 \n3.jpg,=CD\n"))
    assert [grouping.vehicle_of(n) for n in names[:3]] == ["AB-123", "AB-123", "=CD"]
    assert "used" in grouping.note
    top = grouping_of(["a/1.jpg", "b/2.jpg", "c.jpg", "Vehicles.CSV"], _csv("Vehicle,File\nV1,a/1.jpg\nV1,c.jpg\n"))
    assert [top.vehicle_of(n) for n in ["a/1.jpg", "b/2.jpg", "c.jpg"]] == ["V1", "b", "V1"]  # unlisted: folders
    prefixed = grouping_of(["lot/a.jpg", "lot/vehicles.csv"], _csv("file,vehicle\na.jpg,V\n"), root="lot/")
    assert prefixed.vehicle_of("lot/a.jpg") == "lot/V"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("file,vehicle\n1.jpg,AB\nmissing.jpg,AB\n", "names 1 file(s) not in the input: 'missing.jpg'"),
        ("\x89PNG\r\n\x1a\n\x00\x00binary", "not a CSV file"),
        ("name;plate\n1.jpg;AB\n", "header row naming the columns file and vehicle"),
        ("file,vehicle\n1.jpg,AB,extra\n", "line 2 has 3 fields"),
        ('file,vehicle\n"1.jpg,AB\n', "not a CSV file"),
        ("file,vehicle\n1.jpg,\n", "empty file or vehicle"),
        ("file,vehicle\n1.jpg,AB\n1.jpg,CD\n", "in a second vehicle"),
        ("file,vehicle\n1.jpg,\x1b[31mAB\n", "one line of at most 200 characters"),
        ("file,vehicle\n" + "1.jpg,AB\n" * (MAX_CSV_BYTES // 9 + 1), "larger than 1 MB"),
    ],
)
def test_a_bad_vehicles_csv_is_ignored_with_a_note(content, reason):
    names = ["AB/1.jpg", "CD/2.jpg", "vehicles.csv"]
    content = content.replace("1.jpg", "AB/1.jpg")
    grouping = grouping_of(names, lambda name: content.encode("latin-1")[: MAX_CSV_BYTES + 1])
    assert reason in grouping.note and "ignored" in grouping.note, grouping.note
    assert [grouping.vehicle_of(n) for n in names[:2]] == ["AB", "CD"]  # the folders decide


def test_a_vehicles_csv_that_cannot_be_read_is_ignored():
    def unreadable(name: str) -> bytes:
        raise pipeline.InputError("cannot read it (encrypted)")

    grouping = grouping_of(["a.jpg", "vehicles.csv"], unreadable)
    assert grouping.note == "vehicles.csv ignored (cannot read it (encrypted)): the folders decide"


def test_a_vehicles_csv_deeper_than_the_only_top_folder_is_not_looked_for():
    assert grouping_of(["a/b/vehicles.csv", "a/b/1.jpg"], _never).note == ""
    assert grouping_of(["a/vehicles.csv", "b/1.jpg"], _never).note == ""


# ---------------------------------------------------------------- the plumbing, with answers decided by colour

GRAY, GREEN, RED, BLUE = (130, 130, 130), (20, 200, 20), (200, 20, 20), (20, 20, 200)


def _by_colour(photos, settings) -> list[Analysis]:
    """A stand-in cascade whose answers are known: gray a whole car, green no car, red a severe dent on the front
    bumper, blue a minor scratch on the left door."""
    return [_answer(photo) for photo in photos]


def _answer(photo) -> Analysis:
    r, g, b = np.asarray(photo.image).reshape(-1, 3).mean(axis=0)
    car = Check(0.1 if g > r + 50 and g > b + 50 else 0.9, 0.5)
    damaged = r > g + 50 or b > g + 50
    damage = Check(0.9 if damaged else 0.1, 0.5) if car.positive else None
    if not damaged or not car.positive:
        return Analysis(photo.image, photo.size, car, damage, (), segmented=False)
    full = np.zeros((photo.image.height, photo.image.width), dtype=bool)
    full[2:10, 2:10] = True
    red = ("front_bumper", "dent", "severe", 0.9)
    part, label, grade, score = red if r > b else ("left_door", "scratch", "minor", 0.7)
    detection = Detection(label, 0, score, (2.0, 2.0, 10.0, 10.0), MaskCrop.from_full(full, photo.size), part)
    return Analysis(photo.image, photo.size, car, damage, (detection,), True, Grade(grade, 0.8))


def _jpeg(colour) -> bytes:
    from PIL import Image

    return testing.jpeg_bytes(Image.new("RGB", (48, 32), colour))


FLEET = [
    ("AB-123-CD/front.jpg", GRAY), ("AB-123-CD/rear.jpg", RED), ("AB-123-CD/left.jpg", GRAY),
    ("NO-CAR/1.jpg", GREEN), ("NO-CAR/2.jpg", GREEN),
    ("XY-987/front.jpg", RED), ("XY-987/left.jpg", BLUE),
]  # fmt: skip
EXPECTED = [
    {"vehicle": "AB-123-CD", "photos": "3", "photos_with_car": "3", "damaged": "True", "severity": "severe",
     "damaged_parts": "front bumper: severe", "damage_count": "1",
     "best_photo": "front bumper: {p}AB-123-CD/rear.jpg", "photos_not_analysed": "0"},
    {"vehicle": "NO-CAR", "photos": "2", "photos_with_car": "0", "damaged": "False", "severity": "",
     "damaged_parts": "", "damage_count": "0", "best_photo": "", "photos_not_analysed": "0"},
    {"vehicle": "XY-987", "photos": "2", "photos_with_car": "2", "damaged": "True", "severity": "severe",
     "damaged_parts": "front bumper: severe; left door: minor", "damage_count": "2",
     "best_photo": "front bumper: {p}XY-987/front.jpg; left door: {p}XY-987/left.jpg", "photos_not_analysed": "0"},
]  # fmt: skip


def _expected(prefix: str = "") -> list[dict[str, str]]:
    return [
        row | {"vehicle": prefix + row["vehicle"], "best_photo": row["best_photo"].format(p=prefix)} for row in EXPECTED
    ]


@pytest.fixture
def fleet_zip(tmp_path) -> Path:
    notes = [("notes/readme.txt", b"photos of three cars")]  # a folder without photos is no vehicle
    return zips.with_entries(tmp_path / "fleet.zip", [(name, _jpeg(colour)) for name, colour in FLEET] + notes)


@pytest.fixture
def by_colour(monkeypatch):
    monkeypatch.setattr("pipeline.batch.analyze_photos", _by_colour)


def _vehicles(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_three_vehicles_through_the_zip(by_colour, settings_factory, fleet_zip, tmp_path):
    result = pipeline.process_zip(fleet_zip, tmp_path / "out", settings_factory())
    with zipfile.ZipFile(result.archive) as archive:
        data = archive.read("vehicles.csv")
        summary = json.loads(archive.read("summary.json"))
        coco = json.loads(archive.read("predictions.json"))
        html = archive.read("report.html").decode()
    assert list(_vehicles(data)[0]) == list(VEHICLE_COLUMNS)
    assert _vehicles(data) == _expected()
    assert [v.vehicle for v in result.vehicles] == ["AB-123-CD", "NO-CAR", "XY-987"]
    assert summary["vehicles"][2]["files"] == ["XY-987/front.jpg", "XY-987/left.jpg"]
    assert summary["damaged_vehicles"] == 2 and summary["vehicle_notes"] == []
    assert summary["photos_analyzed"] == 7 and summary["files"] == 8  # the per-photo keys as before
    assert {image["file_name"]: image["vehicle"] for image in coco["images"]}["NO-CAR/2.jpg"] == "NO-CAR"
    sections = _sections(html)
    assert sections[:3] == ["vehicle"] * 3 and sections[3:] == ["photo"] * 7  # the vehicles first


def test_three_vehicles_through_the_cli(by_colour, profile, fleet_zip, tmp_path, capsys):
    folder = tmp_path / "lot"
    for name, colour in FLEET:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_jpeg(colour))
    out = tmp_path / "out"
    assert cli([str(fleet_zip), str(folder), "--out", str(out), "--models", str(profile)]) == 0
    assert _vehicles((out / "vehicles.csv").read_bytes()) == _expected("fleet/") + _expected("lot/")
    assert "note:" not in capsys.readouterr().err
    data = json.loads((out / "summary.json").read_text())
    assert [v["vehicle"] for v in data["vehicles"]][:2] == ["fleet/AB-123-CD", "fleet/NO-CAR"]


def test_a_vehicles_csv_in_the_zip_regroups_an_export(by_colour, settings_factory, tmp_path):
    listing = "file,vehicle\n1.jpg,AB-123-CD\n2.jpg,AB-123-CD\n3.jpg,=HYPERLINK()\n"
    entries = [("export/1.jpg", _jpeg(GRAY)), ("export/2.jpg", _jpeg(RED)), ("export/3.jpg", _jpeg(GREEN))]
    source = zips.with_entries(tmp_path / "export.zip", [*entries, ("export/vehicles.csv", listing.encode())])
    result = pipeline.process_zip(source, tmp_path / "out", settings_factory())
    with zipfile.ZipFile(result.archive) as archive:
        rows = _vehicles(archive.read("vehicles.csv"))
    assert [(r["vehicle"], r["photos"], r["damaged"]) for r in rows] == [
        ("AB-123-CD", "2", "True"),
        ("'=HYPERLINK()", "1", "False"),
    ]
    assert result.summary.vehicle_notes == ["export/vehicles.csv used: it names the vehicle of 3 file(s)"]
    assert next(r for r in result.rows if r.file == "export/vehicles.csv").status == Status.SKIPPED  # as before


def test_a_bad_vehicles_csv_is_reported_and_the_folders_decide(by_colour, profile, tmp_path, capsys):
    entries = [("AB/1.jpg", _jpeg(GRAY)), ("CD/2.jpg", _jpeg(RED)), ("vehicles.csv", b"file,vehicle\nEF/9.jpg,EF\n")]
    source = zips.with_entries(tmp_path / "claims.zip", entries)
    out = tmp_path / "out"
    assert cli([str(source), "--out", str(out), "--models", str(profile)]) == 0  # a note, not an error
    assert [r["vehicle"] for r in _vehicles((out / "vehicles.csv").read_bytes())] == ["claims/AB", "claims/CD"]
    (note,) = json.loads((out / "summary.json").read_text())["vehicle_notes"]
    assert note.startswith("claims.zip: vehicles.csv ignored (it names 1 file(s) not in the input: 'EF/9.jpg')")
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("note:")] == [f"note: {note}"]


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "section":
            self.kinds.append("vehicle" if ("class", "vehicle") in attrs else "photo")


def _sections(html: str) -> list[str]:
    parser = _Sections()
    parser.feed(html)
    return parser.kinds


def test_report_html_shows_vehicle_names_as_text(by_colour, settings_factory, tmp_path):
    entries = [("<script>/a.jpg", _jpeg(RED)), ('"><img src=x onerror=alert(2)>.jpg', _jpeg(GRAY))]
    result = pipeline.process_zip(zips.with_entries(tmp_path / "x.zip", entries), tmp_path / "out", settings_factory())
    html = zipfile.ZipFile(result.archive).read("report.html").decode()
    assert _sections(html) == ["vehicle", "vehicle", "photo", "photo"]
    assert "<script>" not in html and "onerror=alert(2)>" not in html
    assert "Vehicle &lt;script&gt;</h2>" in html
    assert "front bumper" in html and 'href="#photo-0"' in html and 'id="photo-0"' in html


# ---------------------------------------------------------------- tiny models: structure, counts, grouping


def test_tiny_models_zip_writes_a_row_per_vehicle(settings_factory, tmp_path):
    entries = [
        ("AB/front.jpg", zips.good_photo()), ("AB/rear.png", testing.png_bytes(testing.photo(40, 30, seed=2))),
        ("AB/broken.jpg", b"not a jpeg"), ("CD/side.jpg", zips.good_photo()), ("loose.jpg", zips.good_photo()),
        ("empty/notes.txt", b"nothing"), ("__MACOSX/AB/._front.jpg", b"\x00\x05"),
    ]  # fmt: skip
    result = pipeline.process_zip(zips.with_entries(tmp_path / "t.zip", entries), tmp_path / "out", settings_factory())
    with zipfile.ZipFile(result.archive) as archive:
        rows = _vehicles(archive.read("vehicles.csv"))
        coco = json.loads(archive.read("predictions.json"))
    assert [(r["vehicle"], r["photos"], r["photos_not_analysed"]) for r in rows] == [
        ("AB", "2", "1"), ("CD", "1", "0"), ("loose.jpg", "1", "0"),
    ]  # fmt: skip
    assert all(r["photos_with_car"] == r["photos"] and r["damaged"] == "True" for r in rows)  # tiny: all damaged
    counts = {r.file: r.damage_count for r in result.rows if r.status == Status.OK}
    assert int(rows[0]["damage_count"]) == counts["AB/front.jpg"] + counts["AB/rear.png"]
    assert {image["vehicle"] for image in coco["images"]} == {"AB", "CD", "loose.jpg"}


def test_analyze_vehicle(settings_factory, tmp_path):
    path = tmp_path / "front.jpg"
    path.write_bytes(zips.good_photo())
    result = pipeline.analyze_vehicle(
        [path, testing.png_bytes(testing.photo(40, 30)), testing.photo(64, 48), b"not a photo"],
        settings_factory(batch_size=2),
        vehicle="AB-123-CD",
    )
    assert [(p.file, p.status) for p in result.photos] == [
        ("front.jpg", Status.OK), ("photo 2", Status.OK), ("photo 3", Status.OK), ("photo 4", Status.ERROR),
    ]  # fmt: skip
    row = result.row
    assert (row.vehicle, row.photos, row.photos_with_car, row.damaged, row.photos_not_analysed) == (
        "AB-123-CD", 3, 3, True, 1,
    )  # fmt: skip  # every item given is meant as a photo of the vehicle
    assert row.damage_count == sum(len(p.analysis.detections) for p in result.photos if p.analysis)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["vehicle"]["vehicle"] == "AB-123-CD" and data["photos"][0]["is_car"] is True
    assert data["photos"][3] == {"file": "photo 4", "status": "error", "message": result.photos[3].message}


def test_analyze_vehicle_refuses_no_photo_or_too_many(settings_factory):
    with pytest.raises(pipeline.InputError, match="1 to 30 photos; 0 were given"):
        pipeline.analyze_vehicle([], settings_factory())
    with pytest.raises(pipeline.InputError, match="31 were given"):
        pipeline.analyze_vehicle([b""] * (pipeline.MAX_VEHICLE_PHOTOS + 1), settings_factory())


def test_two_thousand_one_photo_vehicles_stay_within_the_limits(settings_factory, car_imagenet_no, tmp_path):
    """The zip's entry limit holds them all; the per-vehicle records add a few MB, not a photo's worth each."""
    source = tmp_path / "many.zip"
    data = testing.jpeg_bytes(testing.photo(24, 16))
    with zipfile.ZipFile(source, "w") as archive:
        for i in range(2_000):
            archive.writestr(f"car_{i:04d}.jpg", data)
    settings = settings_factory(car=car_imagenet_no, batch_size=32)
    pipeline.process_zip(zips.photos_zip(tmp_path / "warm.zip", count=2), tmp_path / "warm", settings)
    before, peak, result = testing.peak_rss_during(lambda: pipeline.process_zip(source, tmp_path / "out", settings))
    assert len(result.vehicles) == 2_000 and result.vehicles[0].vehicle == "car_0000.jpg"
    assert all(v.photos == 1 and v.photos_with_car == 0 for v in result.vehicles)
    assert peak - before < 100, (before, peak)  # measured: 18 MB (6 MB before vehicles)
    with zipfile.ZipFile(result.archive) as archive:
        assert len(_vehicles(archive.read("vehicles.csv"))) == 2_000
        assert archive.getinfo("report.html").file_size < 10e6  # 4.3 MB


# ---------------------------------------------------------------- real photos


@pytest.mark.shared
def test_three_vehicles_of_real_photos(settings_factory, shared_dir, damage_yes, seg_model, tmp_path):
    """Real cars and real other things with the real ImageNet car model: the vehicle with no car says so."""
    model = shared_dir / "models" / "imagenet-efficientnet-lite0"
    if not (model / "config.json").is_file():
        pytest.skip(f"{model} not found")
    pytest.importorskip("timm", reason="the shared ImageNet model is a timm model")
    data = shared_dir / "data"
    cars = sorted((data / "dsmlr-carparts" / "JPEGImages").glob("*.jpg"))[:3]
    damaged = sorted((data / "nm-damage-via" / "train").glob("*.jpg"))[:2]
    others = [p for p in sorted((data / "imagenet-sample").glob("*.jpg")) if p.stem.lower().startswith(("n01", "n02"))]
    entries = [(f"AB-123-CD/{p.name}", p.read_bytes()) for p in cars + damaged[:1]]
    entries += [(f"NO-CAR/{p.name}", p.read_bytes()) for p in others[:2]]
    entries += [(f"XY-987/{p.name}", p.read_bytes()) for p in damaged]
    settings = settings_factory(car=model, car_threshold=0.1)
    result = pipeline.process_zip(zips.with_entries(tmp_path / "real.zip", entries), tmp_path / "out", settings)
    rows = {v.vehicle: v for v in result.vehicles}
    assert [(name, rows[name].photos) for name in rows] == [("AB-123-CD", 4), ("NO-CAR", 2), ("XY-987", 2)]
    assert rows["AB-123-CD"].photos_with_car == 4 and rows["XY-987"].photos_with_car == 2
    assert rows["NO-CAR"].photos_with_car == 0 and rows["NO-CAR"].damaged is False
    assert rows["AB-123-CD"].damaged and rows["XY-987"].damaged  # the tiny damage model says damaged to every car
