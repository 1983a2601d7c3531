"""Issue 16: the Ray engine on a local 2-CPU Ray cluster (one for the session): the local engine's rows, one
Parquet row per input, resuming after an interrupted run, and an actor killed mid-run. Issue 23: the local
engine's vehicles.csv. Issue 25: the actors read and decode their photos (the local engine's messages), and the
command line's own local runtime needs no runtime env."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import Settings, testing
from pipeline.__main__ import main as cli
from tests import zips

ray = pytest.importorskip("ray", reason="the Ray engine needs ray[data] (requirements-dev.txt)")
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]  # one Ray runtime: one worker
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray runtime with 2 CPUs for the whole session (start-up costs seconds); its address. Started as the
    command line starts its own: no runtime env, its processes inherit this environment with the checkout on
    PYTHONPATH, so an actor takes a worker the runtime started ahead (with a runtime env every actor waited for a
    worker of its own to start and unpack the package). --ray-address runs still send theirs (the rerun test)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("YOLO_AUTOINSTALL", "False")
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory, car_imagenet_random, damage_yes, seg_model) -> Path:
    """The tiny models at the product's default precision, every photo a car: each model on its OpenVINO copy,
    which an actor loads in under a second without importing PyTorch, transformers or Ultralytics (at "fp32" every
    actor start spent ~4 s importing them). The copies are built here, once, into the session's CAR_DAMAGE_CACHE
    that the actors share: no actor exports a model."""
    from pipeline.analyze import load_models

    path = tmp_path_factory.mktemp("ray-profile") / "tiny.toml"
    models = f'[car]\nmodel = "{car_imagenet_random}"\n[damage]\nmodel = "{damage_yes}"\n'
    path.write_text(
        f'{models}[segmenter]\nmodel = "{seg_model}"\n[thresholds]\ncar = 0.0\n'
        '[runtime]\nprecision = "auto"\nseg_image_size = 320\n'
    )
    assert not [error for error in load_models(Settings.from_env(path)).values() if error]
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """A zip of 30 photos with 4 broken files, a folder of photos with a note, and a list of paths."""
    folder = tmp_path_factory.mktemp("ray-inputs")
    source = zips.photos_zip(folder / "claims.zip", count=30, broken=4)
    lot = folder / "lot"
    lot.mkdir()
    for i in range(8):
        testing.photo(96, 64, seed=40 + i).save(lot / f"{i}.jpg")
    (lot / "notes.txt").write_text("claim 42")
    listed = []
    for i in range(4):
        listed.append(folder / f"m{i}.png")
        testing.photo(64, 48, seed=90 + i).save(listed[-1])
    listing = folder / "more.txt"
    listing.write_text("\n".join(map(str, listed)))
    return [str(source), str(lot), str(listing)]


def _report(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "report.csv").open(encoding="utf-8")))


def _answers(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    columns = ("status", "message", "is_car", "is_damaged", "damage_count")
    return [(r["file"].split("/")[-1], *(r[column] for column in columns)) for r in rows]


def _ray(inputs: list[str], out: Path, profile: Path, *extra: str) -> int:
    return cli(
        [
            *inputs,
            "--out",
            str(out),
            "--models",
            str(profile),
            "--engine",
            "ray",
            "--actors",
            "1",
            "--batch-size",
            "4",
            *extra,
        ]
    )


def test_the_default_pool_gives_each_actor_two_cpus():
    """An actor of two threads runs the models as the local engine does on two cores, so its rows are the local
    engine's to the digit (actors of one thread each wrote other counts near the thresholds, docs/scale.md); with
    --gpus-per-actor, no more actors than the GPUs hold."""
    from pipeline.scale import RayOptions, actors_for

    assert RayOptions().actors is None
    assert [actors_for(cpus) for cpus in (1, 2, 3, 4, 16, 0.5)] == [1, 1, 1, 2, 8, 1]
    assert [actors_for(16, slots) for slots in (1, 2.5, 4, 32)] == [1, 2, 4, 8]  # no actor waits for a GPU


def test_ray_writes_the_local_engines_rows(ray_cluster, inputs, tiny_profile, tmp_path):
    local_inputs = inputs[:2] + [p for p in Path(inputs[2]).read_text().splitlines()]
    assert cli([*local_inputs, "--out", str(tmp_path / "local"), "--models", str(tiny_profile)]) == 1  # 4 broken
    assert _ray(inputs, tmp_path / "ray", tiny_profile, "--save-images") == 1
    local, distributed = _report(tmp_path / "local"), _report(tmp_path / "ray")
    assert _answers(distributed) == _answers(local) and len(local) == 30 + 9 + 4
    import pyarrow.dataset as pads

    table = pads.dataset(str(tmp_path / "ray" / "results.parquet"), format="parquet").to_table()
    assert table.num_rows == len(local) and len(set(table.column("key").to_pylist())) == len(local)
    ok = [r for r in distributed if r["status"] == "ok"]
    assert all((tmp_path / "ray" / r["annotated_file"]).is_file() for r in ok)  # --save-images
    assert (tmp_path / "ray" / "predictions.json").is_file() and (tmp_path / "ray" / "summary.json").is_file()


def test_a_rerun_after_an_interrupted_run_skips_what_is_done(ray_cluster, inputs, tiny_profile, tmp_path):
    """The first run is killed once its first batches are written; the rerun does only the rest, and the report
    has every input exactly once."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", *inputs, "--out", str(out), "--models", str(tiny_profile),
               "--engine", "ray", "--ray-address", ray_cluster, "--actors", "1", "--batch-size", "2"]  # fmt: skip
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "results.parquet"
    deadline = time.monotonic() + 240
    while not list(parts.glob("part-*.parquet")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the OpenVINO copies write a batch every ~0.1 s: look often, to cut the run early
    first.send_signal(signal.SIGKILL)
    first.wait()
    from pipeline.scale import done_keys

    done = done_keys(parts)
    assert 0 < len(done) < 43, "the first run should have been cut"
    assert _ray(inputs, out, tiny_profile) == 1
    rows = _report(out)
    assert len(rows) == 43 and len({r["file"] for r in rows}) == 43
    assert sum(r["status"] == "ok" for r in rows) == 30 - 4 + 8 + 4
    assert len(done_keys(parts)) == 43


def test_an_actor_killed_mid_run_costs_no_row(ray_cluster, inputs, tiny_profile, tmp_path):
    """Ray restarts a dead actor and retries its batch: every input still gets exactly one row."""
    from pipeline.scale import RayOptions, run_ray

    out, results = tmp_path / "out", {}
    settings = Settings.from_env(tiny_profile)
    options = RayOptions(address=ray_cluster, actors=1, batch_size=2)
    worker = threading.Thread(target=lambda: results.update(run=run_ray(inputs, out, settings, options)))
    worker.start()
    parts = out / "results.parquet"
    deadline = time.monotonic() + 240
    while not list(parts.glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)  # often: the actor must still have batches to do when it is killed
    import pyarrow.parquet as pq

    pid = pq.read_table(sorted(parts.glob("part-*.parquet"))[0]).column("worker_pid")[0].as_py()
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=300)
    rows = results["run"].rows
    assert len(rows) == 43 and len({r.file for r in rows}) == 43
    assert sum(r.status == "ok" for r in rows) == 30 - 4 + 8 + 4


def test_the_command_lines_own_runtime_needs_no_runtime_env(inputs, tiny_profile, tmp_path):
    """Without --ray-address the command line starts a local Ray runtime whose workers import this package from
    the checkout (nothing packaged or uploaded), whatever folder the command runs in."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pipeline.__main__ import main; sys.exit(main())"
    out = tmp_path / "out"
    command = [sys.executable, "-c", code, *inputs, "--out", str(out), "--models", str(tiny_profile),
               "--engine", "ray", "--actors", "1"]  # fmt: skip
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "RAY_ADDRESS")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # the zip's 4 broken files
    rows = _report(out)
    assert len(rows) == 43 and sum(r["status"] == "ok" for r in rows) == 30 - 4 + 8 + 4


@pytest.fixture(scope="module")
def graded_parts_profile(tmp_path_factory, model_dir, car_imagenet_random, seg_model) -> Path:
    """fp32 tiny models that fill every vehicles.csv column: a grade from the damage model, a part per damage."""
    graded = testing.vit_classifier(model_dir / "ray-graded", ["whole", "minor", "moderate", "severe"], favour="severe")
    parts = testing.yolo_seg(model_dir / "ray-parts", ["front_bumper", "hood"])
    path = tmp_path_factory.mktemp("ray-vehicles") / "tiny.toml"
    path.write_text(
        f'[car]\nmodel = "{car_imagenet_random}"\n[damage]\nmodel = "{graded}"\n[segmenter]\nmodel = "{seg_model}"\n'
        f'[parts]\nmodel = "{parts}"\n[thresholds]\ncar = 0.0\n[runtime]\nprecision = "fp32"\nseg_image_size = 320\n'
    )
    return path


def test_ray_writes_the_local_engines_vehicles(ray_cluster, graded_parts_profile, tmp_path):
    """Issue 23: vehicles grouped by the zip's folders and by a folder's vehicles.csv; the Ray engine makes the
    rows from its results after the run (batches of 2: a vehicle's photos go to different actor calls) and they
    are the local engine's, byte for byte."""
    fleet = [f"AB-123-CD/{side}.jpg" for side in ("front", "rear", "left")] + ["XY-987/front.jpg", "XY-987/left.jpg"]
    entries = [(name, testing.jpeg_bytes(testing.photo(80, 60, seed=i))) for i, name in enumerate(fleet)]
    entries += [("XY-987/broken.jpg", b"not a jpeg"), ("notes/readme.txt", b"three cars")]
    source = zips.with_entries(tmp_path / "fleet.zip", entries)
    export = tmp_path / "export"
    export.mkdir()
    for i in range(3):
        testing.photo(64, 48, seed=60 + i).save(export / f"{i}.jpg")
    (export / "vehicles.csv").write_text("file,vehicle\n0.jpg,EF-456\n1.jpg,EF-456\n2.jpg,GH-789\n")
    inputs = [str(source), str(export)]
    assert cli([*inputs, "--out", str(tmp_path / "local"), "--models", str(graded_parts_profile)]) == 1  # broken
    assert _ray(inputs, tmp_path / "ray", graded_parts_profile, "--batch-size", "2") == 1
    local, distributed = (tmp_path / side / "vehicles.csv" for side in ("local", "ray"))
    assert distributed.read_text() == local.read_text()
    rows = list(csv.DictReader(distributed.open(encoding="utf-8")))
    assert [(r["vehicle"], r["photos"], r["photos_not_analysed"]) for r in rows] == [
        ("fleet/AB-123-CD", "3", "0"), ("fleet/XY-987", "2", "1"), ("export/EF-456", "2", "0"),
        ("export/GH-789", "1", "0"),
    ]  # fmt: skip
    assert all(r["damaged"] == "True" and r["severity"] == "severe" for r in rows)
    assert rows[0]["damaged_parts"] == "front bumper: severe" and rows[0]["best_photo"].startswith("front bumper: ")
    summaries = [json.loads((tmp_path / side / "summary.json").read_text()) for side in ("local", "ray")]
    assert summaries[0]["vehicles"] == summaries[1]["vehicles"]
    assert summaries[1]["vehicle_notes"] == ["export/vehicles.csv used: it names the vehicle of 3 file(s)"]
    coco = json.loads((tmp_path / "ray" / "predictions.json").read_text())
    assert {image["vehicle"] for image in coco["images"]} == {r["vehicle"] for r in rows}
