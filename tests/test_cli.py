"""python -m pipeline: outputs, --json, --models, exit codes and one-line messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline import testing
from pipeline.__main__ import main
from tests import zips
from tests.run import cli_json

ROOT = Path(__file__).resolve().parents[1]


def _photo(path: Path, size=(96, 64)) -> Path:
    testing.photo(*size).save(path)
    return path


def test_photos_and_folders(profile, tmp_path, capsys):
    folder = tmp_path / "lot"
    (folder / "row1").mkdir(parents=True)
    _photo(folder / "row1" / "a.jpg")
    _photo(folder / "b.png", (50, 70))
    single = _photo(tmp_path / "single.jpg")
    out = tmp_path / "out"
    assert main([str(single), str(folder), "--out", str(out), "--models", str(profile)]) == 0
    assert (out / "single.jpg").is_file() and (out / "lot/row1/a.jpg").is_file() and (out / "lot/b.png").is_file()
    assert Image.open(out / "lot/b.png").size == (50, 70)
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["file"] for r in rows] == ["single.jpg", "lot/b.png", "lot/row1/a.jpg"]
    assert all(r["status"] == "ok" and r["is_car"] == "True" for r in rows)
    assert json.loads((out / "predictions.json").read_text())["images"]


def test_json_output(profile, tmp_path, capsys):
    photo = _photo(tmp_path / "car.jpg")
    assert main([str(photo), "--out", str(tmp_path / "o"), "--models", str(profile), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (result,) = data["results"]
    assert result["file"] == "car.jpg" and result["is_car"] is True and result["is_damaged"] is True
    assert data["summary"]["photos_analyzed"] == 1


def test_zip_input(profile, tmp_path):
    source = zips.photos_zip(tmp_path / "claims.zip", count=4, broken=1)
    out = tmp_path / "out"
    code = main([str(source), "--out", str(out), "--models", str(profile)])
    assert code == 0  # notes.txt is skipped (not a photo), not an error: README
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 4 and sum(r["status"] == "ok" for r in rows) == 3
    assert (out / "claims/photo_000.jpg").is_file()


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda d: d / "missing.jpg", 2, "no such file"),
        (lambda d: (d / "note.txt").write_text("hi") and d / "note.txt", 1, "not a photo"),
        (lambda d: (d / "fake.jpg").write_text("hi") and d / "fake.jpg", 1, "not a photo we can read"),
        (lambda d: zips.traversal_zip(d / "evil.zip"), 1, "outside the archive"),
        (lambda d: zips.nested_zip(d / "nest.zip"), 1, "nested archives"),
        (lambda d: (d / "renamed.zip").write_text("no zip") and d / "renamed.zip", 1, "not a readable zip"),
    ],
)
def test_bad_input_exit_codes(profile, tmp_path, capsys, make, code, message):
    target = make(tmp_path)
    assert main([str(target), "--out", str(tmp_path / "o"), "--models", str(profile)]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err and message in err[0]
    assert "Traceback" not in "\n".join(err)


def test_bad_model_profile_is_one_line(tmp_path, capsys):
    photo = _photo(tmp_path / "p.jpg")
    profile = tmp_path / "p.toml"
    profile.write_text(f'[segmenter]\nmodel = "{tmp_path / "none.pt"}"\n[car]\nmodel = "{tmp_path / "nocar"}"\n')
    assert main([str(photo), "--out", str(tmp_path / "o"), "--models", str(profile)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CAR_MODEL" in err[0]


def test_module_entry_point(profile, tmp_path):
    photo = _photo(tmp_path / "p.jpg")
    data = cli_json(photo, "--out", tmp_path / "o", "--models", profile)
    assert data["results"][0]["is_car"] is True
