"""Issue 6: every hostile or odd upload gets a result or a one-line message, through the pipeline, the CLI
and the API (a live local server, gradio_client, every call under a timeout); the good photos of a zip
always come back. The corpus and its expected outcomes are in tests/hostile_corpus.py.
"""

from __future__ import annotations

import atexit
import csv
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import pipeline
from pipeline import testing
from pipeline.__main__ import main as cli
from tests import zips
from tests.hostile_corpus import MESSAGE, RESULT, Case, build_corpus

ROOT = Path(__file__).resolve().parents[1]
UPLOAD_LIMIT_MB = 10  # the API server of this module; the oversize cases are just over it
CALL_TIMEOUT = 90  # seconds: a request that takes longer counts as hung
SLOW_TIMEOUT = 240

# Built at collection (a few seconds), so each case is its own test id; removed when the session ends.
_CORPUS_DIR = Path(tempfile.mkdtemp(prefix="hostile-corpus-"))
atexit.register(shutil.rmtree, _CORPUS_DIR, ignore_errors=True)
CASES = build_corpus(_CORPUS_DIR, upload_limit_mb=UPLOAD_LIMIT_MB)


def _cases(layer: str) -> list:
    return [pytest.param(c, id=c.id) for c in CASES if layer in c.layers]


def assert_one_line(message: str) -> None:
    """What a person sees: one short line, no traceback, no code."""
    assert message, "empty message"
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message, message
    assert len(message) < 300, message


def test_corpus_covers_the_issue():
    kinds = Counter((c.kind, c.expected) for c in CASES)
    assert len(CASES) >= 30 and all(kinds.values())
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.path.is_file() for c in CASES)
    assert sum(c.slow for c in CASES) == 1  # the one 60 MP photo
    with Image.open(next(c.path for c in CASES if c.slow)) as big:
        assert big.width * big.height >= 60_000_000


def _zip_members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [i.filename for i in archive.infolist() if not i.is_dir()]


def _check_rows(case: Case, rows: list[dict], prefix: str = "") -> None:
    """Each expected entry got its status; every entry has exactly one row; failures say why in one line."""
    assert len(rows) == len(_zip_members(case.path))
    statuses = {r["file"]: r["status"] for r in rows}
    for name, status in case.entries.items():
        assert statuses.get(prefix + name) == status, (name, statuses.get(prefix + name), rows)
    for row in rows:
        if row["status"] != "ok":
            assert_one_line(str(row["message"]))
    if case.id == "duplicates":
        assert [r["status"] for r in rows] == ["ok", "ok"]


# ---------------------------------------------------------------- 1. the library


@pytest.mark.parametrize("case", _cases("pipeline"))
def test_pipeline(case: Case, settings_factory, tmp_path):
    settings = settings_factory()
    if case.kind == "photo":
        if case.expected == RESULT:
            analysis = pipeline.analyze(case.path, settings)
            assert analysis.size == case.size
            assert all(d.mask.shape == (case.size[1], case.size[0]) for d in analysis.detections)  # full size
            assert pipeline.annotate(analysis).size == case.overlay_size  # the working resolution
        else:
            with pytest.raises(pipeline.InputError) as raised:
                pipeline.analyze(case.path, settings)
            assert type(raised.value).__name__ == case.error
            assert_one_line(str(raised.value))
            assert case.fragment in str(raised.value)
        return
    out = tmp_path / "out"
    if case.expected == RESULT:
        result = pipeline.process_zip(case.path, out, settings)
        _check_rows(case, [row.to_dict() for row in result.rows])
        assert [p.name for p in out.iterdir()] == [result.archive.name]  # nothing half-written beside it
        names = zipfile.ZipFile(result.archive).namelist()
        assert all(not n.startswith(("/", "\\")) and ".." not in n.split("/") for n in names)
        assert len(names) == sum(r.status == "ok" for r in result.rows) + 5  # + the report files
    else:
        with pytest.raises(pipeline.UnsafeArchiveError) as raised:
            pipeline.process_zip(case.path, out, settings)
        assert_one_line(str(raised.value))
        assert case.fragment in str(raised.value)
        assert not out.exists() or list(out.iterdir()) == []


# ---------------------------------------------------------------- 2. the command line


@pytest.mark.parametrize("case", _cases("cli"))
def test_cli(case: Case, profile, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli([str(case.path), "--out", str(out), "--models", str(profile)])
    err = capsys.readouterr().err.splitlines()
    assert not any("Traceback" in line or line.startswith("  File ") for line in err), err
    errors = [line for line in err if line.startswith("error: ")]
    if case.kind == "photo":
        if case.expected == RESULT:
            assert (code, errors) == (0, [])
            (row,) = csv.DictReader((out / "report.csv").open(encoding="utf-8"))
            assert row["status"] == "ok" and (int(row["width"]), int(row["height"])) == case.size
            with Image.open(out / row["annotated_file"]) as annotated:
                assert annotated.size == case.overlay_size
        else:
            assert code == 1 and len(errors) == 1 and case.fragment in errors[0], errors
        return
    if case.expected == MESSAGE:
        assert code == 1 and len(errors) == 1 and case.fragment in errors[0], errors
        return
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    _check_rows(case, rows, prefix=f"{case.path.stem}/")
    failed = [r for r in rows if r["status"] in {"error", "refused"}]
    if not failed and code == 1 and rows[0]["status"] == "skipped":
        pytest.xfail("the CLI treats a zip whose first entry is skipped as one bad photo: HARDENING_NOTES.md P2")
    assert code == (1 if failed else 0) and len(errors) == len(failed)


def test_cli_zip_whose_first_entry_is_not_a_photo(profile, tmp_path, capsys):
    """README: files that are not photos are reported as skipped, exit code 0."""
    source = zips.with_entries(tmp_path / "claim.zip", [("notes.txt", b"claim 42"), ("car.jpg", zips.good_photo())])
    code = cli([str(source), "--out", str(tmp_path / "out"), "--models", str(profile)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    if code == 1 and errors == ["error: claim/notes.txt: not a photo (.txt file)"]:
        pytest.xfail("the CLI treats a zip whose first entry is skipped as one bad photo: HARDENING_NOTES.md P2")
    assert (code, errors) == (0, [])


# ---------------------------------------------------------------- 3. the API, on a live local server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(settings_factory):
    try:
        import app
    except Exception as exc:  # pragma: no cover - the Space is written in parallel
        pytest.skip(f"app not ready ({type(exc).__name__}: {exc})")
    service = app.CarDamageApp(settings_factory())
    demo = app.create_demo(service, [])
    options = {**app.LAUNCH_OPTIONS, "max_file_size": f"{UPLOAD_LIMIT_MB}mb"}
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True, **options)
    try:
        yield SimpleNamespace(service=service, demo=demo, url=demo.local_url)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server.url, download_files=str(tmp_path_factory.mktemp("hostile-downloads")), verbose=False)


def _call(client, case: Case):
    """(outputs, None) or (None, the error); fails if the request does not end in time."""
    from gradio_client import handle_file

    endpoint = "/analyze_image" if case.kind == "photo" else "/analyze_zip"
    job = client.submit(handle_file(case.path), api_name=endpoint)
    try:
        return job.result(timeout=SLOW_TIMEOUT if case.slow else CALL_TIMEOUT), None
    except TimeoutError:
        job.cancel()
        pytest.fail(f"{case.id}: no answer within the timeout (hung request)")
    except Exception as exc:
        return None, exc


@pytest.mark.parametrize("case", _cases("api"))
def test_api(case: Case, client, server):
    from gradio_client.exceptions import AppError

    outputs, exc = _call(client, case)
    error = None if exc is None else str(exc)
    if case.expected == MESSAGE:
        assert outputs is None, f"{case.id}: expected a message, got a result"
        assert_one_line(error)
        if not case.id.startswith("over_limit"):  # refused by the server before any event: not an AppError
            assert isinstance(exc, AppError), repr(exc)
        if "verbose error reporting" in error and case.kind == "photo":
            pytest.xfail("gr.Image decodes the upload before the app sees it: HARDENING_NOTES.md P1")
        assert case.fragment.lower() in error.lower(), error
        assert "verbose error reporting" not in error  # gradio's generic text: the app did not explain
        return
    assert error is None, f"{case.id}: {error}"
    if case.kind == "photo":
        summary, _, annotated, _, result = outputs
        assert summary and (result["width"], result["height"]) == case.size
        with Image.open(annotated) as image:
            assert image.size == case.overlay_size
    else:
        archive, _, report, _, summary = outputs
        rows = [dict(zip(report["headers"], row)) for row in report["data"]]
        _check_rows(case, rows)
        assert summary["files"] == len(rows) and Path(archive).is_file()
    jobs = server.service.jobs.root
    assert not list(jobs.glob("*/.partial-*"))  # nothing half-written left behind


def test_other_files_are_not_served(server, client, seg_model):
    """Gradio serves its cache and nothing else: not the source, not the models, not the job folders."""
    base = server.url
    for path in [ROOT / "app.py", ROOT / "pipeline" / "settings.py", seg_model, Path("/etc/passwd"), _CORPUS_DIR]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}gradio_api/file={path}", timeout=10)
        assert refused.value.code in (403, 404), path


def test_concurrent_users_get_only_their_own_results(client, tmp_path):
    """Six users at once, photos and zips: every request answered, each with its own files only."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import handle_file

    def user(i: int):
        photo = tmp_path / f"user{i}.jpg"
        photo.write_bytes(testing.jpeg_bytes(testing.photo(80 + 8 * i, 60, seed=i)))
        entries = [(f"user{i}/p{k}.jpg", testing.jpeg_bytes(testing.photo(64, 48, seed=10 * i + k))) for k in (1, 2)]
        archive = zips.with_entries(tmp_path / f"user{i}.zip", entries)
        image_job = client.submit(handle_file(photo), api_name="/analyze_image")
        zip_job = client.submit(handle_file(archive), api_name="/analyze_zip")
        return i, image_job.result(timeout=CALL_TIMEOUT), zip_job.result(timeout=CALL_TIMEOUT)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(user, range(6)))
    for i, image_out, zip_out in answers:
        assert image_out[4]["width"] == 80 + 8 * i  # this user's photo, not another's
        assert [row[0] for row in zip_out[2]["data"]] == [f"user{i}/p1.jpg", f"user{i}/p2.jpg"]
        assert Path(zip_out[0]).name == f"user{i}-results.zip"
        with zipfile.ZipFile(zip_out[0]) as result:
            assert {n for n in result.namelist() if n.endswith(".jpg")} == {f"user{i}/p1.jpg", f"user{i}/p2.jpg"}


def test_cancelled_zip_job_leaves_nothing_half_written(client, server, tmp_path):
    """A user who cancels mid-zip: the server finishes or drops the job, never leaves a partial archive."""
    import time

    from gradio_client import handle_file

    source = zips.photos_zip(tmp_path / "cancel.zip", count=40, size=(96, 72))
    job = client.submit(handle_file(source), api_name="/analyze_zip")
    deadline = time.monotonic() + CALL_TIMEOUT
    while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    jobs = server.service.jobs.root
    while list(jobs.glob("*/.partial-*")) and time.monotonic() < deadline:  # the worker thread runs to its end
        time.sleep(0.2)
    assert not list(jobs.glob("*/.partial-*"))
    assert all(len(list(folder.iterdir())) <= 1 for folder in jobs.iterdir())  # at most the finished archive
    photo = tmp_path / "after.jpg"
    photo.write_bytes(zips.good_photo())
    assert client.predict(handle_file(photo), api_name="/analyze_image")[4]["width"] == 48  # still serving


def test_photos_and_zips_given_as_urls_are_refused_without_a_download(client, server, tmp_path):
    """gradio would fetch http(s) inputs itself, with no size limit; the app refuses them before any request."""
    import http.server
    import threading

    import httpx
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    hits = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(zips.good_photo())

        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        for endpoint, name in (("/analyze_image", "car.jpg"), ("/analyze_zip", "photos.zip")):
            url = f"http://127.0.0.1:{web.server_address[1]}/{name}"
            with pytest.raises((AppError, httpx.HTTPStatusError)) as refused:
                client.predict(handle_file(url), api_name=endpoint)
            # /analyze_zip refuses when it joins the queue (its queue check reads the inputs): an HTTP 400 whose
            # body says why; /analyze_image refuses as the job starts.
            error = refused.value
            message = error.response.text if isinstance(error, httpx.HTTPStatusError) else str(error)
            assert "not fetched from URLs" in message
            assert_one_line(message)
    finally:
        web.shutdown()
    assert hits == []


def _slow_zip(path: Path, count: int = 300) -> Path:
    return zips.photos_zip(path, count=count, size=(160, 120))


def _wait_for_progress(job, seconds: float = CALL_TIMEOUT) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_cancelled_zip_stops_at_the_next_photo(client, server, tmp_path):
    """Cancel (or a closed tab) stops the job's work, not just its messages: the archive of what was done lists
    the rest as not processed, and the worker is free again in seconds."""
    import time

    from gradio_client import handle_file

    job = client.submit(handle_file(_slow_zip(tmp_path / "long.zip")), api_name="/analyze_zip")
    _wait_for_progress(job)
    job.cancel()
    jobs = server.service.jobs.root
    deadline = time.monotonic() + CALL_TIMEOUT
    while not list(jobs.glob("*/long-results.zip")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (archive,) = jobs.glob("*/long-results.zip")
    with zipfile.ZipFile(archive) as result:
        rows = list(csv.DictReader(result.read("report.csv").decode().splitlines()))
    assert len(rows) == 300 and sum(r["status"] == "not_processed" for r in rows) > 150
    assert all("cancelled" in r["message"] for r in rows if r["status"] == "not_processed")


def test_a_queue_of_zips_leaves_room_for_photos(client, server, tmp_path, monkeypatch):
    """With ZIP_QUEUE_SIZE zips waiting, the next zip is refused at once (one line), and photos are still served."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from space import config

    monkeypatch.setattr(config, "ZIP_QUEUE_SIZE", 1)
    running = client.submit(handle_file(_slow_zip(tmp_path / "a.zip")), api_name="/analyze_zip")
    _wait_for_progress(running)
    waiting = client.submit(handle_file(_slow_zip(tmp_path / "b.zip", 20)), api_name="/analyze_zip")
    import time

    time.sleep(1.0)  # b.zip joins the queue behind a.zip
    with pytest.raises((AppError, ValueError), match="zips are already waiting"):
        client.predict(handle_file(_slow_zip(tmp_path / "c.zip", 5)), api_name="/analyze_zip")
    photo = tmp_path / "meanwhile.jpg"
    photo.write_bytes(zips.good_photo())
    assert client.predict(handle_file(photo), api_name="/analyze_image")[4]["width"] == 48
    running.cancel()
    assert waiting.result(timeout=CALL_TIMEOUT)[4]["files"] == 20
