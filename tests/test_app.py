"""The Space: the named endpoints through gradio_client on a live local server, with tiny offline models."""

from __future__ import annotations

import io
import json
import re
import socket
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app
import pipeline
from pipeline import testing
from space import config
from space.service import DAMAGE_HEADERS, ZIP_HEADERS
from space.status import ModelStatus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served(NamedTuple):
    demo: gr.Blocks
    url: str
    service: app.CarDamageApp


@contextmanager
def serve(settings: pipeline.Settings, examples: list[str] | None = None, **options) -> Iterator[Served]:
    """Build the app for these settings and serve it on a free localhost port (as ``python app.py`` does)."""
    service = app.CarDamageApp(settings)
    demo = app.create_demo(service, examples or [])
    launch = {**app.LAUNCH_OPTIONS, **options}
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch)
    try:
        yield Served(demo, demo.local_url, service)
    finally:
        demo.close()


def write_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.write_bytes(testing.jpeg_bytes(testing.photo(width, height, seed)))
    return path


def write_zip(path: Path) -> Path:
    """Three photos (one in a folder), a text file and a broken JPEG."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("front.jpg", testing.jpeg_bytes(testing.photo(160, 96, 1)))
        zf.writestr("side.png", testing.png_bytes(testing.photo(120, 80, 2)))
        zf.writestr("lot/rear.jpg", testing.jpeg_bytes(testing.photo(96, 96, 3)))
        zf.writestr("notes.txt", b"not a photo")
        zf.writestr("broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    return path


@pytest.fixture(scope="module")
def server(settings_factory) -> Iterator[Served]:
    # A small upload limit here, so the test can check that the limit is enforced.
    with serve(settings_factory(), max_file_size=1_000_000) as served:
        yield served


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> Client:
    return Client(server.url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)


# ---------------------------------------------------------------- the named API


def test_api_lists_both_named_endpoints_with_docs(client):
    api = client.view_api(return_format="dict", print_info=False)
    named = api["named_endpoints"]
    assert set(named) == {"/analyze_image", "/analyze_vehicle", "/analyze_zip"}
    image_params = [p["parameter_name"] for p in named["/analyze_image"]["parameters"]]
    assert image_params == ["image", "car_threshold", "damage_threshold", "mask_threshold", "always_segment"]
    assert all(p["parameter_has_default"] for p in named["/analyze_image"]["parameters"][1:])
    zip_params = [p["parameter_name"] for p in named["/analyze_zip"]["parameters"]]
    assert zip_params[0] == "archive" and "progress" not in zip_params
    assert named["/analyze_image"]["description"].startswith("Analyse one photo")
    assert named["/analyze_zip"]["description"].startswith("Analyse every photo in a zip")
    vehicle_params = [p["parameter_name"] for p in named["/analyze_vehicle"]["parameters"]]
    assert vehicle_params == ["photos", "car_threshold", "damage_threshold", "mask_threshold", "always_segment"]
    assert all(p["parameter_has_default"] for p in named["/analyze_vehicle"]["parameters"][1:])
    assert named["/analyze_vehicle"]["description"].startswith("Analyse several photos of ONE vehicle")


def test_analyze_image_endpoint(client, tmp_path):
    photo = write_photo(tmp_path / "car.jpg", 160, 96)
    summary, confidences, annotated, damages, result = client.predict(
        image=handle_file(photo), api_name="/analyze_image"
    )
    assert summary.startswith("Damaged car")
    assert {c["label"] for c in confidences["confidences"]} == {"car", "damage"}
    assert all(c["confidence"] > 0.9 for c in confidences["confidences"])
    assert Image.open(annotated).size == (160, 96)
    assert damages["headers"] == DAMAGE_HEADERS
    assert damages["data"] and {row[1] for row in damages["data"]} <= {"dent", "scratch"}  # the type column
    assert all(0 < row[4] <= 1 and 0 < row[3] <= 100 for row in damages["data"])  # confidence, area %
    assert result["is_car"] is True and result["is_damaged"] is True
    assert result["damage_count"] == len(damages["data"]) and (result["width"], result["height"]) == (160, 96)
    assert set(result["models"]) == {"car", "damage", "segmenter"}


def test_thresholds_reach_the_pipeline(client, tmp_path):
    photo = write_photo(tmp_path / "car.jpg", 64, 64)
    summary, *_, damages, result = client.predict(
        handle_file(photo), 0.5, 0.5, 0.9999, False, api_name="/analyze_image"
    )
    assert result["segmented"] and result["damage_count"] == 0 and damages["data"] == []
    # damaged, nothing outlined: the verdict (and grade) stand, and the sentence says why nothing is drawn
    assert summary.startswith("Damaged car (car ")
    assert summary.endswith("No area outlined above the mask threshold 0.9999.")


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = tmp_path / "big.jpg"  # over the 1 MB upload limit of this server
    big.write_bytes(testing.jpeg_bytes(testing.photo(64, 64)) + b"\0" * 1_200_000)
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        client.predict(handle_file(big), api_name="/analyze_image")


def test_analyze_zip_endpoint(client, tmp_path):
    archive, summary_text, report, gallery, summary = client.predict(
        archive=handle_file(write_zip(tmp_path / "photos.zip")), api_name="/analyze_zip"
    )
    assert Path(archive).name == "photos-results.zip"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {"front.jpg", "side.png", "lot/rear.jpg", "report.csv", "predictions.json", "summary.json"} <= names
        assert Image.open(io.BytesIO(zf.read("lot/rear.jpg"))).size == (96, 96)
        assert json.loads(zf.read("summary.json"))["photos_analyzed"] == 3
    assert summary["files"] == 5 and summary["photos_analyzed"] == 3
    assert summary["cars"] == 3 and summary["damaged_cars"] == 3
    assert {f["file"] for f in summary["failures"]} == {"notes.txt", "broken.jpg"}
    assert "3 damaged cars" in summary_text and "notes.txt" in summary_text
    assert report["headers"] == ZIP_HEADERS
    rows = {row[0]: dict(zip(report["headers"], row, strict=True)) for row in report["data"]}
    assert set(rows) == {"front.jpg", "side.png", "lot/rear.jpg", "notes.txt", "broken.jpg"}
    assert rows["notes.txt"]["status"] == "skipped" and rows["broken.jpg"]["status"] == "error"
    assert [item["caption"].split(":")[0] for item in gallery] == ["front.jpg", "side.png", "lot/rear.jpg"]
    assert all(Path(item["image"]).exists() for item in gallery)


def test_analyze_vehicle_endpoint(client, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    photos = [write_photo(tmp_path / "front.jpg", 160, 96, 1), write_photo(tmp_path / "rear.jpg", 120, 80, 2), broken]
    summary, parts, gallery, result = client.predict(
        photos=[handle_file(photo) for photo in photos], mask_threshold=0.2, api_name="/analyze_vehicle"
    )
    vehicle, answers = result["vehicle"], result["photos"]
    assert vehicle["photos"] == 2 and vehicle["photos_not_analysed"] == 1 and vehicle["damaged"] is True
    assert vehicle["files"] == ["front.jpg", "rear.jpg", "broken.jpg"] and vehicle["damage_count"] >= 1
    assert vehicle["best_photo"] in ("front.jpg", "rear.jpg")  # no part model: the most surely damaged photo
    assert [(a["file"], a["status"]) for a in answers] == [
        ("front.jpg", "ok"),
        ("rear.jpg", "ok"),
        ("broken.jpg", "error"),
    ]
    assert answers[0]["is_damaged"] is True and (answers[0]["width"], answers[0]["height"]) == (160, 96)
    assert answers[2]["message"] and "\n" not in answers[2]["message"]
    assert "Damaged vehicle" in summary and "2 of 2 photos" in summary and "broken.jpg" in summary
    assert parts["headers"] == ["part", "worst grade", "best photo", "confidence"] and parts["data"] == []
    assert [item["caption"].split(":")[0] for item in gallery] == ["front.jpg", "rear.jpg"]
    assert set(result["models"]) == {"car", "damage", "segmenter"}


def test_analyze_vehicle_refuses_urls_and_nothing(client, settings_factory):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not fetched from URLs"):
        client.predict([handle_file("http://127.0.0.1:9/car.jpg")], api_name="/analyze_vehicle")
    with pytest.raises(gr.Error, match="Upload the vehicle's photos"):
        app.CarDamageApp(settings_factory()).analyze_vehicle([])


def test_mcp_lists_the_vehicle_tool_with_a_usable_description(server):
    with urllib.request.urlopen(f"{server.url}gradio_api/mcp/schema", timeout=30) as response:
        tools = {tool["name"]: tool for tool in json.loads(response.read())}
    name = next(name for name in tools if name.endswith("analyze_vehicle"))
    tool = tools[name]
    assert "several photos of ONE vehicle" in tool["description"] and "best photo" in tool["description"]
    assert "photos" in json.dumps(tool["inputSchema"])


def test_a_refused_zip_is_a_friendly_error(client, tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip")
    with pytest.raises(Exception, match="not a readable zip"):
        client.predict(handle_file(fake), api_name="/analyze_zip")


def test_job_folders_are_private_and_cleaned(server, client, tmp_path):
    url, jobs = server.url, server.service.jobs
    client.predict(handle_file(write_zip(tmp_path / "a.zip")), api_name="/analyze_zip")
    folders = list(jobs.root.iterdir())
    assert len(folders) >= 1 and all(len([*f.iterdir()]) == 1 for f in folders)  # the archive, no leftovers
    archive = next(jobs.root.glob("*/a-results.zip"))
    with pytest.raises(urllib.error.HTTPError) as refused:  # never served from the job folder itself
        urllib.request.urlopen(f"{url}gradio_api/file={archive}")
    assert refused.value.code in (403, 404)
    jobs.sweep(max_age=0)
    assert list(jobs.root.iterdir()) == []


def readme_api_examples() -> list[str]:
    """The gradio_client snippets of README.md (or, until merged, APP_NOTES.md)."""
    for name in ("README.md", "APP_NOTES.md"):
        path = Path(app.__file__).parent / name
        blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S) if path.exists() else []
        blocks = [block for block in blocks if "gradio_client" in block and "api_name=" in block]
        if blocks:
            return blocks
    return []


def test_readme_api_examples_work_as_written(server, tmp_path, monkeypatch, capsys):
    blocks = readme_api_examples()
    if not blocks:
        pytest.skip("no gradio_client examples in README.md or APP_NOTES.md")
    endpoints = {m for b in blocks for m in re.findall(r'api_name="([^"]+)"', b)}
    assert {"/analyze_image", "/analyze_vehicle", "/analyze_zip"} <= endpoints
    write_photo(tmp_path / "car.jpg", 160, 96)
    write_photo(tmp_path / "front.jpg", 160, 96, 1)
    write_photo(tmp_path / "rear.jpg", 120, 80, 2)
    write_zip(tmp_path / "photos.zip")
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        code = code.replace('Client("http://127.0.0.1:7860/")', f'Client("{server.url}")')
        assert server.url in code
        exec(compile(code, "README example", "exec"), {})
    printed = capsys.readouterr().out
    assert "Damaged car" in printed and "photos-results.zip" in printed and "notes.txt skipped" in printed
    assert "damaged: True" in printed and "front.jpg ok" in printed


# ---------------------------------------------------------------- the functions behind the endpoints


def test_no_car_is_a_plain_result(settings_factory, car_imagenet_no, tmp_path):
    service = app.CarDamageApp(settings_factory(car=car_imagenet_no))
    summary, confidences, annotated, damages, result = service.analyze_image(
        str(write_photo(tmp_path / "x.jpg", 80, 60))
    )
    assert summary.startswith("No car found")
    assert set(confidences) == {"car"} and damages["data"] == []
    assert annotated.size == (80, 60) and result["is_car"] is False


def test_no_damage_is_a_plain_result(settings_factory, damage_no, tmp_path):
    service = app.CarDamageApp(settings_factory(damage=damage_no))
    summary, confidences, _, damages, _ = service.analyze_image(str(write_photo(tmp_path / "x.jpg", 80, 60)))
    assert summary.startswith("No damage found")
    assert confidences["damage"] < 0.5 and damages["data"] == []


def test_missing_inputs_and_bad_photos_raise_gradio_errors(settings_factory, tmp_path):
    service = app.CarDamageApp(settings_factory())
    with pytest.raises(gr.Error, match="Upload a photo"):
        service.analyze_image(None)
    with pytest.raises(gr.Error, match="Upload a zip"):
        service.analyze_zip(None, progress=lambda *a, **k: None)
    text = tmp_path / "not-a-photo.jpg"
    text.write_text("hello")
    with pytest.raises(gr.Error):
        service.analyze_image(str(text))


def test_zip_progress_advances_photo_by_photo(settings_factory, tmp_path):
    calls = []
    service = app.CarDamageApp(settings_factory(batch_size=2))
    service.analyze_zip(str(write_zip(tmp_path / "p.zip")), progress=lambda value, **kw: calls.append(value))
    assert calls[0] == 0
    assert [done for done, _ in calls[1:]] == [1, 2, 3, 4, 5] and {total for _, total in calls[1:]} == {5}


def test_model_banner_names_the_model_and_env_var(monkeypatch, car_imagenet_yes, damage_yes):
    monkeypatch.setenv("CAR_MODEL", str(car_imagenet_yes))
    monkeypatch.setenv("DAMAGE_MODEL", str(damage_yes))
    monkeypatch.setenv("SEG_MODEL", "/nonexistent/seg-model.pt")
    service = app.CarDamageApp(pipeline.Settings.from_env())
    assert service.status.wait(120)
    banner, models, timer = service.model_report()
    assert banner["visible"] is True and timer.active is False
    assert "segmenter" in banner["value"] and "seg-model.pt" in banner["value"]
    assert "/nonexistent" not in banner["value"] and "/nonexistent" not in models  # no server paths shown
    assert "SEG_MODEL" in banner["value"] and "car model" not in banner["value"]
    assert "✅ loaded" in models and "❌ failed" in models and f"`{car_imagenet_yes.name} (local)`" in models


def test_models_load_cleanly_hide_the_banner(settings_factory):
    service = app.CarDamageApp(settings_factory())
    assert service.status.wait(120)
    banner, models, _ = service.model_report()
    assert banner["visible"] is False and models.count("✅ loaded") == 3


# ---------------------------------------------------------------- page, examples, queue, command line


def _component_types(demo: gr.Blocks) -> list[str]:
    return [c["type"] for c in demo.config["components"]]


def test_examples_shown_only_when_present(settings_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    for name in ("b.jpg", "a.png"):
        write_photo(tmp_path / name, 40, 30)
    (tmp_path / "README.md").write_text("how to add photos")
    found = app.find_examples([tmp_path, tmp_path / "missing"])
    assert [Path(p).name for p in found] == ["a.png", "b.jpg"]
    assert "dataset" in _component_types(app.create_demo(app.CarDamageApp(settings_factory()), found))
    assert "dataset" not in _component_types(app.create_demo(app.CarDamageApp(settings_factory()), []))
    assert app.fetch_examples_repo("") is None


@pytest.mark.xdist_group("shared-split")  # the session's pHashes of ../shared: computed in one worker
def test_the_repo_examples_are_few_small_attributed_and_redistributable(request):
    """At most 6, longest side <= 1024 px, each listed in examples/README.md; with ../shared present, each one is
    (by perceptual hash) a photo of the two sets whose licences allow it, nm-damage-via train and lensor."""
    folder = Path(app.__file__).parent / "examples"
    photos = [Path(p) for p in app.find_examples([folder])]
    listing = (folder / "README.md").read_text(encoding="utf-8")
    assert 0 < len(photos) <= 6
    for photo in photos:
        assert max(Image.open(photo).size) <= 1024 and f"`{photo.name}`" in listing
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        return
    from train.prepare import perceptual_hashes
    from train.sources import cached_hashes

    allowed = [
        *(shared / "nm-damage-via" / "train").glob("*.jpg"),
        *(shared / "lensor-damage-coco" / "images").glob("*"),
    ]
    hashes = cached_hashes(allowed, request.getfixturevalue("shared_split")[1])  # hashed once a session
    for photo, mine in zip(photos, perceptual_hashes(photos)):
        distance = (hashes != mine).sum(axis=1).min()  # bits that differ: imagehash's ``-``
        assert distance <= 4, f"{photo.name} is no photo of the redistributable sets"


def test_queue_and_limits(server):
    demo = server.demo
    assert demo._queue.max_size == config.QUEUE_SIZE
    limits = {
        fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name in {"analyze_image", "analyze_zip"}
    }
    assert limits == {"analyze_image": 1, "analyze_zip": 1}
    assert app.LAUNCH_OPTIONS["max_file_size"]


def test_command_line(monkeypatch, tmp_path, car_imagenet_yes, damage_yes, seg_model):
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw, demo=self))
    monkeypatch.setattr(ModelStatus, "start", lambda self: self)
    monkeypatch.setattr(app, "demo", app.demo)  # restored after the test
    profile = tmp_path / "models.toml"
    profile.write_text(
        f'[car]\nmodel = "{car_imagenet_yes}"\n[damage]\nmodel = "{damage_yes}"\n[segmenter]\nmodel = "{seg_model}"\n'
        "[thresholds]\ncar = 0.3\ndamage = 0.6\n"
    )
    app.main(["--models", str(profile), "--share", "--host", "0.0.0.0", "--port", "7999"])
    assert launched["share"] is True and launched["server_name"] == "0.0.0.0" and launched["server_port"] == 7999
    assert launched["max_file_size"] == config.MAX_FILE_SIZE
    panel = [c["props"].get("value") for c in launched["demo"].config["components"] if c["type"] == "markdown"]
    assert any(f"`{car_imagenet_yes.name} (local)`" in str(value) for value in panel)  # the profile's car model
    sliders = [c["props"]["value"] for c in launched["demo"].config["components"] if c["type"] == "slider"]
    assert sliders[:3] == [0.3, 0.6, pipeline.Settings().thresholds.mask]  # the profile's thresholds start the sliders
    app.main([])
    assert launched["share"] is None and launched["server_name"] is None and launched["server_port"] is None


# ---------------------------------------------------------------- with the real ImageNet model from ../shared


@pytest.mark.shared
def test_imagenet_car_model_through_the_api(shared_dir, settings_factory, tmp_path):
    car_model = shared_dir / "models" / "imagenet-efficientnet-lite0"
    photos = shared_dir / "data" / "imagenet-sample"
    if not car_model.is_dir():
        pytest.skip(f"{car_model} not found")
    with serve(settings_factory(car=car_model)) as (_, url, _):
        client = Client(url, download_files=str(tmp_path), verbose=False)
        car = client.predict(handle_file(photos / "n04285008_sports_car.jpg"), api_name="/analyze_image")
        fish = client.predict(handle_file(photos / "n01440764_tench.jpg"), api_name="/analyze_image")
    assert car[4]["is_car"] is True and car[4]["car_score"] > 0.5
    assert Image.open(car[2]).size == Image.open(photos / "n04285008_sports_car.jpg").size
    assert fish[4]["is_car"] is False and fish[0].startswith("No car found")
