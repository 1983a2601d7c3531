"""Load test: N gradio_client users against a local Space for a fixed time, photos and small zips mixed.

    python -m bench.load --clients 20 --seconds 120 [--models PROFILE] [--out results.json]

Starts ``python app.py`` in a subprocess on 127.0.0.1 (a free port; tiny offline models built on the fly
unless --models names a profile), with fresh GRADIO_TEMP_DIR and TMPDIR so its temp files can be counted.
Each client thread submits one request at a time until the deadline, each under a timeout. Reports:
requests, failures (and why), latency p50/p95/max, queue wait (submit -> processing, polled), the server's
RSS over time and whether it levels off, and the temp folders left when the run ends. Stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


@dataclass
class Sample:
    kind: str  # photo | zip
    ok: bool
    seconds: float
    queue_wait: float | None
    error: str = ""


# ---------------------------------------------------------------- inputs and models


def make_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """A few phone-like photos and small zips (5 photos + 1 broken file each)."""
    sys.path.insert(0, str(ROOT))
    from pipeline import testing

    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, size in enumerate([(640, 480), (480, 640), (800, 600), (320, 240), (1024, 768)]):
        path = folder / f"photo_{i}.jpg"
        path.write_bytes(testing.jpeg_bytes(testing.photo(*size, seed=i)))
        photos.append(path)
    zips = []
    for z in range(3):
        path = folder / f"claim_{z}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for i in range(5):
                archive.writestr(f"car/{i}.jpg", testing.jpeg_bytes(testing.photo(400, 300, seed=10 * z + i)))
            archive.writestr("broken.jpg", b"\xff\xd8\xff not a whole photo")
        zips.append(path)
    return photos, zips


def tiny_profile(folder: Path) -> Path:
    """The tests' tiny offline models (random weights, real label names) and a profile naming them."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(OFFLINE_ENV)
    from pipeline import testing

    car = testing.vit_classifier(folder / "car", testing.IMAGENET_STYLE_LABELS, favour="sports car")
    damage = testing.vit_classifier(folder / "damage", ["whole", "damaged"], favour="damaged")
    seg = testing.yolo_seg(folder / "seg", ["dent", "scratch"])
    profile = folder / "tiny.toml"
    profile.write_text(f'[car]\nmodel = "{car}"\n[damage]\nmodel = "{damage}"\n[segmenter]\nmodel = "{seg}"\n')
    return profile


def full_size_profile(folder: Path) -> Path:
    """The benchmark's full-size architectures (bench.models: the real weights when cached, else random ones)."""
    from .common import DEFAULT_MODEL_DIR
    from .models import bench_settings

    models = bench_settings(DEFAULT_MODEL_DIR)[0].models  # built once, kept between runs
    folder.mkdir(parents=True, exist_ok=True)
    profile = folder / "full-size.toml"
    profile.write_text(
        f'[car]\nmodel = "{models.car.id}"\n[damage]\nmodel = "{models.damage.id}"\n'
        f'[segmenter]\nmodel = "{models.segmenter.id}"\n'
    )
    return profile


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(profile: Path, port: int, work: Path, log: Path) -> tuple[subprocess.Popen, dict[str, Path]]:
    dirs = {"gradio": work / "gradio-cache", "tmp": work / "tmp"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = os.environ | OFFLINE_ENV | {"GRADIO_TEMP_DIR": str(dirs["gradio"]), "TMPDIR": str(dirs["tmp"])}
    env["YOLO_CONFIG_DIR"] = str(work / "yolo-config")
    command = [sys.executable, "app.py", "--models", str(profile), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return server, dirs


def wait_ready(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} (see its log)")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the server did not answer on {url} within {timeout:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 1e6


def temp_state(dirs: dict[str, Path]) -> dict[str, int | float]:
    cache = [p for p in dirs["gradio"].iterdir() if p.is_dir()] if dirs["gradio"].exists() else []
    jobs = list(dirs["tmp"].glob("car-damage-jobs-*/job-*"))
    partial = list(dirs["tmp"].glob("car-damage-jobs-*/job-*/.partial-*"))
    size = sum(f.stat().st_size for f in dirs["gradio"].rglob("*") if f.is_file()) if dirs["gradio"].exists() else 0
    return {
        "gradio_cache_folders": len(cache),
        "gradio_cache_mb": round(size / 1e6, 1),
        "job_folders": len(jobs),
        "partial_archives": len(partial),
        "tmp_entries": len(list(dirs["tmp"].iterdir())),
    }


# ---------------------------------------------------------------- the clients


def run_client(url: str, photos: list[Path], zips: list[Path], deadline: float, seed: int, timeout: float,
               downloads: Path, samples: list[Sample], lock: threading.Lock, zip_share: float) -> None:  # fmt: skip
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    rng = random.Random(seed)
    try:
        client = Client(url, download_files=str(downloads), verbose=False)
    except Exception as exc:  # a client that cannot even connect is a failed request
        with lock:
            samples.append(Sample("connect", False, 0.0, None, _one_line(exc)))
        return
    while time.monotonic() < deadline:
        is_zip = rng.random() < zip_share
        path = rng.choice(zips if is_zip else photos)
        started = time.monotonic()
        processing_at: float | None = None
        try:
            job = client.submit(handle_file(path), api_name="/analyze_zip" if is_zip else "/analyze_image")
            while not job.done():
                if processing_at is None and job.status().code in (Status.PROCESSING, Status.PROGRESS):
                    processing_at = time.monotonic()
                if time.monotonic() - started > timeout:
                    job.cancel()
                    raise TimeoutError(f"no answer within {timeout:.0f} s")
                time.sleep(0.05)
            job.result(timeout=5)
            seconds = time.monotonic() - started
            sample = Sample("zip" if is_zip else "photo", True, seconds, _wait(started, processing_at))
        except Exception as exc:
            error = f"{type(exc).__name__}: {_one_line(exc)}"
            sample = Sample("zip" if is_zip else "photo", False, time.monotonic() - started, None, error)
        with lock:
            samples.append(sample)


def _wait(started: float, processing_at: float | None) -> float | None:
    return None if processing_at is None else processing_at - started


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# ---------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def levels_off(samples: list[tuple[float, float]]) -> bool:
    """RSS of the last third of the run stays within 10% (or 50 MB) of the peak of the middle third."""
    if len(samples) < 6:
        return False
    third = len(samples) // 3
    middle = max(r for _, r in samples[third : 2 * third])
    last = max(r for _, r in samples[2 * third :])
    return last <= max(middle * 1.10, middle + 50)


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="car-damage-load-"))
    try:
        profile = Path(args.models).resolve() if args.models else None
        profile = profile or (full_size_profile(work / "models") if args.full_size else tiny_profile(work / "models"))
        photos, zips = make_inputs(work / "inputs")
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        log = work / "server.log"
        server, dirs = start_server(profile, port, work, log)
        try:
            wait_ready(url, server, args.startup_timeout)
            before = temp_state(dirs)
            memory: list[tuple[float, float]] = []
            samples: list[Sample] = []
            lock = threading.Lock()
            t0 = time.monotonic()
            deadline = t0 + args.seconds
            threads = [
                threading.Thread(
                    target=run_client,
                    args=(url, photos, zips, deadline, i, args.timeout, work / f"dl{i}", samples, lock, args.zip_share),
                    daemon=True,
                )
                for i in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline + args.timeout + 30:
                memory.append((round(time.monotonic() - t0, 1), round(rss_mb(server.pid), 1)))
                time.sleep(args.sample_every)
            hung = sum(t.is_alive() for t in threads)
            time.sleep(3)  # let the last responses be written and the folders settle
            after = temp_state(dirs)
            memory.append((round(time.monotonic() - t0, 1), round(rss_mb(server.pid), 1)))
        finally:
            stop_server(server)
        log_tail = log.read_text(errors="replace").splitlines()[-20:]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    waits = [s.queue_wait for s in ok if s.queue_wait is not None]
    by_kind = {
        kind: {
            "requests": sum(s.kind == kind for s in samples),
            "p50_s": percentile([s.seconds for s in ok if s.kind == kind], 0.50),
            "p95_s": percentile([s.seconds for s in ok if s.kind == kind], 0.95),
        }
        for kind in ("photo", "zip")
    }
    rss = [r for _, r in memory]
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "models": args.models or ("full-size architectures (bench.models)" if args.full_size else "tiny test models"),
        "requests": len(samples),
        "failures": len(failed),
        "failure_reasons": dict(sorted(_count(s.error for s in failed).items(), key=lambda kv: -kv[1])[:10]),
        "hung_clients": hung,
        "throughput_per_min": round(len(ok) / (args.seconds / 60), 1),
        "latency_s": {
            "p50": percentile([s.seconds for s in ok], 0.50),
            "p95": percentile([s.seconds for s in ok], 0.95),
            "max": round(max((s.seconds for s in ok), default=0), 2),
        },
        "queue_wait_s": {
            "p50": percentile(waits, 0.50),
            "p95": percentile(waits, 0.95),
            "max": round(max(waits, default=0), 2),
        },
        "by_kind": by_kind,
        "server_rss_mb": {
            "start": rss[0] if rss else None,
            "peak": max(rss, default=None),
            "end": rss[-1] if rss else None,
            "median": round(statistics.median(rss), 1) if rss else None,
            "levels_off": levels_off(memory),
            "samples": memory,
        },
        "temp_before": before,
        "temp_after": after,
        "server_log_tail": log_tail if failed or hung else [],
    }


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--models", metavar="PROFILE", help="TOML model profile (default: tiny offline models)")
    parser.add_argument("--full-size", action="store_true", help="the default models' architectures at full size")
    parser.add_argument("--zip-share", type=float, default=0.3, help="fraction of requests that are zips")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a request counts as hung")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, temp dirs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    summary = {k: v for k, v in report.items() if k != "server_rss_mb"}
    summary["server_rss_mb"] = {k: v for k, v in report["server_rss_mb"].items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0 if report["failures"] == 0 and report["hung_clients"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
