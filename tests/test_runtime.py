"""The serving path without PyTorch: cached OpenVINO copies run by OpenVINO alone give the libraries' answers, and a
warm start imports neither PyTorch, transformers nor Ultralytics."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import testing
from pipeline.settings import ModelRef

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("openvino", reason="the serving path runs OpenVINO copies")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _same_answers(weights: Path, photos, image_size: int, conf: float) -> tuple[int, list[float]]:
    """Instances of the OpenVINO copy run by OpenVINOSegmenter and by Ultralytics, compared photo by photo, both
    compiled at f32: what the product promises for the f32 copy on every CPU (OpenVINO's own default is bf16 on a
    CPU with AVX512-BF16, which Ultralytics would keep)."""
    import openvino as ov
    from ultralytics import YOLO

    from pipeline.accel.yolo import _openvino_folder, _pin_openvino_precision
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.segment import Segmenter, _from_results, _to_detections

    runner = Segmenter(ModelRef(str(weights)), "int8", "openvino", None, image_size).model
    assert isinstance(runner, OpenVINOSegmenter)
    runner.shared_shapes = False  # Ultralytics pads to the stride, the product to SHAPE_SHARES (tested below)
    reference = YOLO(str(_openvino_folder(weights)), task="segment")
    _pin_openvino_precision(reference, _openvino_folder(weights), "fp32")
    for compiled in (runner.compiled, reference.predictor.model.backend.ov_compiled_model):
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    instances, ious = 0, []
    for photo in photos:
        ours = _to_detections(runner.predict(photo.image, conf, 0.5, image_size, 20), runner.names, photo)
        (result,) = reference.predict(photo.image, conf=conf, iou=0.5, imgsz=image_size, max_det=20, verbose=False)
        theirs = _to_detections(_from_results(result), reference.names, photo)
        cutoff = ours[-1].score if len(ours) == 20 else None
        assert not _deciding_ties(runner, photo, image_size, conf, 0.5, cutoff), "NMS would pick among tied anchors"
        ours, theirs = (sorted(found, key=lambda d: (-d.score, d.box)) for found in (ours, theirs))
        assert [(d.label, round(d.score, 4)) for d in ours] == [(d.label, round(d.score, 4)) for d in theirs]
        for a, b in zip(ours, theirs):
            assert np.allclose(a.box, b.box, atol=0.05)
            ious.append(_iou(a.mask, b.mask))
        instances += len(ours)
    return instances, ious


def _deciding_ties(runner, photo, image_size: int, conf: float, iou: float, cutoff: float | None) -> int:
    """Anchors with exactly the same score where which one NMS takes first changes what it keeps: two of one class
    that overlap by more than ``iou`` (one suppresses the other), or a tie at the ``max_det`` cutoff. Each NMS
    orders a tie as its sort does, so such a photo cannot be compared; other ties only reorder instances of equal
    score, which the comparison sorts by box."""
    from pipeline.accel.yolo_runtime import letterboxed

    _, pixels = letterboxed(photo.image, image_size, runner.stride, runner.shared_shapes)
    rows = min(runner.compiled({0: pixels}).values(), key=np.ndim)[0].T  # (anchors, 4 + classes + coefficients)
    scores = rows[:, 4 : 4 + len(runner.names)]
    best, labels = scores.max(axis=1), scores.argmax(axis=1)
    values, counts = np.unique(best[best > conf], return_counts=True)
    deciding = 0
    for value in values[counts > 1]:
        tied = np.flatnonzero(best == value)
        boxes = np.concatenate([rows[tied, :2] - rows[tied, 2:4] / 2, rows[tied, :2] + rows[tied, 2:4] / 2], axis=1)
        pairs = itertools.combinations(range(len(tied)), 2)
        overlaps = [_box_iou(boxes[i], boxes[j]) > iou for i, j in pairs if labels[tied[i]] == labels[tied[j]]]
        deciding += (value == cutoff) + sum(overlaps)
    return deciding


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


@pytest.fixture(scope="module")
def varied_seg_model(model_dir) -> Path:
    """The tiny segmenter with scores that vary from anchor to anchor (``seg_model`` gives all the same score)."""
    return testing.yolo_seg(model_dir / "seg-varied", ["dent", "scratch"], first_class_bias=0.0, varied=True)


def test_openvino_segmenter_gives_ultralytics_answers(varied_seg_model, tmp_path):
    """Same instances, labels, scores and boxes as Ultralytics on the same copy; masks within resampling noise."""
    from pipeline.decode import load_photo
    from pipeline.hub import clear_cache

    clear_cache()
    paths = []
    for i, (w, h) in enumerate([(200, 120), (90, 200), (333, 257), (64, 64)]):
        paths.append(tmp_path / f"{i}.png")
        testing.photo(w, h, seed=i).save(paths[-1])
    instances, ious = _same_answers(varied_seg_model, [load_photo(p) for p in paths], 320, 0.01)
    assert instances >= 4 and min(ious) >= 0.97
    clear_cache()


def _assert_same_instances(a, b) -> None:
    """Two runs of the same network on the same photo: same classes, scores and boxes, masks within resampling."""
    assert np.allclose(a.scores, b.scores, atol=2e-3) and a.classes.tolist() == b.classes.tolist()
    assert np.allclose(a.boxes, b.boxes, atol=0.5)
    assert all(_iou(a.to_image(m), b.to_image(n)) >= 0.97 for m, n in zip(a.masks, b.masks, strict=True))


def test_several_photos_take_the_throughput_copy_with_the_same_answers(varied_seg_model, tmp_path):
    """Several photos go to the copy compiled for throughput (a stream a core, every letterbox at once) on a
    machine with two cores or more; their instances are those of one call a photo on the latency copy."""
    import os

    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.segment import Segmenter

    runner = Segmenter(ModelRef(str(varied_seg_model)), "int8", "openvino", None, 320).model
    assert isinstance(runner, OpenVINOSegmenter)
    if (os.cpu_count() or 1) < 2:
        assert runner.streams is None
        pytest.skip("one core: no throughput copy")
    assert runner.streams is not None and int(runner.streams.get_property("NUM_STREAMS")) >= 2
    images = [testing.photo(w, h, seed=i) for i, (w, h) in enumerate([(200, 120), (90, 200), (333, 257), (64, 64)])]
    together = runner.predict_many(images * 2, 0.01, 0.5, 320, 20)
    alone = [runner.predict(image, 0.01, 0.5, 320, 20) for image in images * 2]
    assert sum(len(found.scores) for found in alone) >= 4
    for a, b in zip(together, alone, strict=True):
        _assert_same_instances(a, b)


def test_the_masks_mix_runs_numpys_blas_on_one_thread_and_leaves_the_process_setting():
    """OpenBLAS's idle workers spin for ~0.1 s after every product they share, on a core the next OpenVINO call
    needs (docs/performance.md): the masks' mix of prototypes runs on one BLAS thread, and the process's own
    setting (the bench's naive side, a user's code) is what it was after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from pipeline.accel.yolo_runtime import mixed_on_one_thread

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("NumPy without a BLAS threadpoolctl can see")
    seen = []

    class Coefficients:
        def __matmul__(self, prototypes):
            seen.append(blas_threads())
            return "mixed"

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert mixed_on_one_thread(Coefficients(), None) == "mixed"
        assert seen == [[1] * len(before)] and blas_threads() == before
    coefficients, prototypes = np.random.default_rng(0).normal(size=(2, 5, 32)).astype(np.float32)
    assert np.allclose(mixed_on_one_thread(coefficients[:3], prototypes.T), coefficients[:3] @ prototypes.T)


def test_an_input_that_fails_mid_queue_lets_the_running_requests_finish(varied_seg_model):
    """The throughput copy reads each input in place while the next is made: an error making one reaches the
    caller only once the requests already started are done, and the copy serves the next call."""
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter, letterboxed
    from pipeline.segment import Segmenter

    runner = Segmenter(ModelRef(str(varied_seg_model)), "int8", "openvino", None, 320).model
    assert isinstance(runner, OpenVINOSegmenter)
    if runner.streams is None:
        pytest.skip("one core: no throughput copy")
    images = [testing.photo(200, 120, seed=i) for i in range(3)]

    def inputs():
        for image in images:
            yield letterboxed(image, 320, runner.stride)[1]
        raise OSError("the fourth photo's file went away")

    with pytest.raises(OSError, match="went away"):
        runner._streamed(inputs())
    assert len(runner.predict_many(images, 0.01, 0.5, 320, 20)) == 3


def test_copies_that_cannot_be_compiled_leave_the_latency_copy(varied_seg_model, monkeypatch, caplog):
    """Should OpenVINO refuse the throughput hint or a fixed input shape, the segmenter loads as before and
    serves several photos and one photo alone."""
    from pipeline.accel import classifiers
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.hub import clear_cache
    from pipeline.segment import Segmenter

    real = classifiers.compile_model

    def refuse(xml, precision_hint="f32", dynamic_quantization=False, performance_hint=None, input_shape=None):
        if performance_hint == "THROUGHPUT" or input_shape is not None:
            raise RuntimeError("not supported")
        return real(xml, precision_hint, dynamic_quantization, performance_hint)

    clear_cache()
    monkeypatch.setattr(classifiers, "compile_model", refuse)
    runner = Segmenter(ModelRef(str(varied_seg_model)), "int8", "openvino", None, 320).model
    assert isinstance(runner, OpenVINOSegmenter) and runner.streams is None and "no throughput copy" in caplog.text
    images = [testing.photo(w, h, seed=i) for i, (w, h) in enumerate([(200, 120), (90, 200)])]
    assert len(runner.predict_many(images, 0.01, 0.5, 320, 20)) == 2
    alone = runner.predict(testing.photo(320, 240, seed=3), 0.01, 0.5, 320, 20)  # a 4:3 letterbox
    assert len(alone.scores) and runner.compile_for is None and "no copy of the segmenter for input" in caplog.text
    clear_cache()


def test_a_photo_alone_of_a_common_shape_takes_the_copy_compiled_for_its_shape(varied_seg_model):
    """A photo alone of a common letterbox (4:3, 3:4, square) runs on a copy compiled for that shape, made at the
    first such photo (never for several photos, which take the throughput copy), with the dynamic copy's answers."""
    from pipeline.accel.yolo_runtime import COMMON_SHAPES, Letterbox, OpenVINOSegmenter
    from pipeline.hub import clear_cache
    from pipeline.segment import Segmenter

    clear_cache()
    runner = Segmenter(ModelRef(str(varied_seg_model)), "int8", "openvino", None, 320).model
    assert isinstance(runner, OpenVINOSegmenter)
    images = [testing.photo(w, h, seed=i) for i, (w, h) in enumerate([(320, 240), (150, 200), (99, 99), (160, 120)])]
    runner.predict_many(images, 0.01, 0.5, 320, 20)
    assert runner._fixed == {} or runner.streams is None
    fixed = [runner.predict(image, 0.01, 0.5, 320, 20) for image in [*images, testing.photo(200, 120, seed=7)]]
    assert set(runner._fixed) == {(1, 3, *Letterbox.fit(shape, 320, runner.stride).size) for shape in COMMON_SHAPES}
    compiled, runner._fixed = runner._fixed, {}
    compile_for, runner.compile_for = runner.compile_for, None
    try:
        dynamic = [runner.predict(image, 0.01, 0.5, 320, 20) for image in images]
    finally:
        runner._fixed, runner.compile_for = compiled, compile_for
    assert sum(len(found.scores) for found in dynamic) >= 4
    for a, b in zip(fixed, dynamic):  # the last photo of ``fixed`` (2:1) only checks which copies were made
        _assert_same_instances(a, b)
    clear_cache()


@pytest.mark.shared
def test_openvino_segmenter_gives_ultralytics_answers_on_real_photos(shared_dir):
    from pipeline.decode import load_photo
    from pipeline.hub import clear_cache

    clear_cache()  # the session's cache: the f32 export is test_pipeline's too
    weights = shared_dir / "models" / "yolo11n-seg-vehicles" / "yolo11n-seg-vehicles.pt"
    photos = [load_photo(p) for p in sorted((shared_dir / "data" / "web-whole-cars").glob("*.jpg"))[::46][:20]]
    instances, ious = _same_answers(weights, photos, 640, 0.25)
    assert instances >= 15 and min(ious) >= 0.97 and np.mean(ious) >= 0.995
    clear_cache()


def test_two_threads_share_the_openvino_copies(settings_factory, car_imagenet_random, varied_seg_model):
    """The Space answers a photo and a zip in two threads with one set of models: freshly loaded OpenVINO copies
    (the first inference is where two threads were seen to deadlock) give each thread the answers of one thread."""
    import threading

    from pipeline import analyze_batch
    from pipeline.accel.classifiers import openvino_kind
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.analyze import stages_for
    from pipeline.hub import clear_cache

    settings = settings_factory(car=car_imagenet_random, seg=varied_seg_model, always_segment=True)
    settings = settings.with_models(precision="auto", seg_backend="openvino")  # OpenVINO copies on every CPU
    photos = [testing.photo(120 + 20 * i, 90, seed=70 + i) for i in range(4)]
    clear_cache()
    expected = [_answer(a) for a in analyze_batch(photos, settings)]
    stages = stages_for(settings.models).all()
    assert isinstance(stages["segmenter"].model, OpenVINOSegmenter)
    assert openvino_kind(settings.models.precision) is not None  # the classifiers' copies too
    clear_cache()  # fresh copies: both threads make the first inference
    answers: dict[int, list] = {}

    def work(thread: int) -> None:
        answers[thread] = [_answer(a) for _ in range(3) for a in analyze_batch(photos, settings)]

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "two threads in the OpenVINO copies never finished"
    assert answers == {0: expected * 3, 1: expected * 3}
    clear_cache()


RELEASE_AFTER_BATCH = """
import sys
from pathlib import Path
from pipeline import testing
from pipeline.accel.yolo import cached_openvino
photos = [testing.photo(120 + 20 * i, 90, seed=i) for i in range(4)]
for _ in range(int(sys.argv[2])):
    copy = cached_openvino(Path(sys.argv[1]), "f32")
    if copy.streams is None:
        sys.exit(3)  # one core: no throughput copy to release
    copy.predict_many(photos, 0.05, 0.5, 128, 10)
    del copy  # released right after its batch
"""


def test_a_copy_released_right_after_a_batch_never_hangs(settings_factory, varied_seg_model):
    """Releasing a segmenter's compiled copies right after a batch on its streams (``clear_cache`` between tests,
    profiles or the bench's precisions) deadlocked within ~20 tries: a stream thread still wanted the interpreter's
    lock, held by the destructor that joined it. Forty tries in a process of its own, with a deadline."""
    from pipeline.accel.yolo_runtime import OpenVINOSegmenter
    from pipeline.analyze import stages_for

    settings = settings_factory(seg=varied_seg_model).with_models(seg_backend="openvino")
    assert isinstance(stages_for(settings.models).segmenter.model, OpenVINOSegmenter)  # the export, in the cache
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", RELEASE_AFTER_BATCH, str(varied_seg_model), "40"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("releasing an OpenVINO copy right after a batch hung")
    if done.returncode == 3:
        pytest.skip("one core: the segmenter has no throughput copy")
    assert done.returncode == 0, done.stderr[-2000:]


def _answer(analysis) -> tuple:
    return (
        round(analysis.car.score, 5),
        round(analysis.damage.score, 5) if analysis.damage else None,
        [(d.label, round(d.score, 4), tuple(round(v, 1) for v in d.box)) for d in analysis.detections],
    )


def test_greedy_nms_is_torchvisions():
    torchvision = pytest.importorskip("torchvision")
    import torch

    from pipeline.accel.yolo_runtime import greedy_nms

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (300, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for iou in (0.3, 0.5, 0.7):
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        assert greedy_nms(boxes, scores, iou).tolist() == expected.tolist()
        assert greedy_nms(boxes, scores, iou, limit=7).tolist() == expected[:7].tolist()


def test_agnostic_nms_keeps_one_instance_where_two_types_overlap():
    """Two types over the same damage: class-aware NMS keeps both (a "dent" and a "scratch" mask counted twice),
    agnostic NMS the better-scoring one; instances apart are kept either way."""
    from pipeline.accel.yolo_runtime import _nms

    centres = np.array([[50, 50, 20, 20], [51, 50, 20, 20], [150, 150, 20, 20]], dtype=np.float32)  # cx, cy, w, h
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.0, 0.7]], dtype=np.float32)  # dent, scratch
    coefficients = np.ones((3, 1), dtype=np.float32)
    prediction = np.concatenate([centres, scores, coefficients], axis=1).T  # (4 + classes + masks, anchors)
    aware = _nms(prediction, 2, conf=0.25, iou=0.5, max_det=50)
    agnostic = _nms(prediction, 2, conf=0.25, iou=0.5, max_det=50, agnostic=True)
    assert np.allclose(aware[:, 4], [0.9, 0.8, 0.7])
    assert np.allclose(agnostic[:, 4], [0.9, 0.7]) and agnostic[:, 5].tolist() == [0, 1]


@pytest.mark.parametrize("model", ["car_imagenet_random", "damage_clip"])
def test_pixel_spec_gives_the_processors_pixels(request, model):
    """The spec written beside a classifier's copy reproduces transformers' preprocessing (ViT, CLIP)."""
    from transformers import AutoProcessor

    from pipeline.accel.pixels import PixelSpec, matches

    processor = AutoProcessor.from_pretrained(request.getfixturevalue(model))
    spec = PixelSpec.from_processor(getattr(processor, "image_processor", processor).to_dict())
    assert spec is not None and matches(spec, processor)
    photo = testing.photo(250, 170, seed=3)
    expected = processor(images=[photo], return_tensors="pt")["pixel_values"].numpy()
    assert np.abs(spec([photo]) - expected).mean() < 0.01


@pytest.mark.shared
def test_pixel_spec_gives_timms_pixels(shared_dir):
    """The shared EfficientNet-Lite0 (a timm model: resize to 256, centre crop 224) and its processor."""
    from transformers import AutoImageProcessor

    from pipeline.accel.pixels import PixelSpec, matches

    processor = AutoImageProcessor.from_pretrained(shared_dir / "models" / "imagenet-efficientnet-lite0")
    spec = PixelSpec.from_processor(processor.to_dict())
    assert spec is not None and spec.crop == (224, 224) and matches(spec, processor)


def test_processor_settings_it_cannot_follow_are_refused():
    from pipeline.accel.pixels import PixelSpec

    vit = {"do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2, "image_mean": [0.5] * 3}
    assert PixelSpec.from_processor(vit) is not None
    assert PixelSpec.from_processor(vit | {"do_pad": True}) is None
    assert PixelSpec.from_processor(vit | {"some_new_step": True}) is None
    assert PixelSpec.from_processor(vit | {"size": {"longest_edge": 32}}) is None


_RUN = """
import json, sys
from pipeline import Settings, analyze, load_models
from pipeline.testing import photo
settings = Settings.from_env().with_models(precision=sys.argv[1], seg_backend="auto", seg_image_size=320)
assert not any(load_models(settings).values())
result = analyze(photo(200, 150, seed=1), settings)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "ultralytics", "torchvision"})
print(json.dumps({"heavy": heavy, "car": result.car.score, "damage": result.damage.score,
                  "masks": [d.label for d in result.detections]}))
"""


def test_warm_start_imports_no_pytorch(car_imagenet_random, damage_clip, seg_model, tmp_path):
    """The first start builds the OpenVINO copies; the next one answers the same without importing PyTorch,
    transformers or Ultralytics (they were most of a cold start). Both kinds of classifier: ViT (car), CLIP.
    At 'auto' where it serves the classifiers from OpenVINO copies (every CPU with OpenVINO installed), else at
    'int8'."""
    from pipeline.accel.classifiers import openvino_kind

    precision = "auto" if openvino_kind("auto") is not None else "int8"
    env = os.environ | {
        "CAR_DAMAGE_CACHE": str(tmp_path / "cache"),
        "CAR_MODEL": str(car_imagenet_random),
        "DAMAGE_MODEL": str(damage_clip),
        "SEG_MODEL": str(seg_model),
    }

    def start() -> tuple[dict, str]:
        out = subprocess.run([sys.executable, "-c", _RUN, precision], env=env, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        warnings = "\n".join(line for line in out.stderr.splitlines() if "failed" in line or "WARNING" in line)
        return json.loads(out.stdout.strip().splitlines()[-1]), warnings

    (first, first_log), (warm, warm_log) = start(), start()
    assert first["heavy"], "the first start converts the models with PyTorch"
    # What made the warm start import them (a copy that failed and left PyTorch serving says so in its log).
    assert warm["heavy"] == [], f"first start:\n{first_log[-1500:]}\nwarm start:\n{warm_log[-1500:]}"
    assert warm["car"] == pytest.approx(first["car"], abs=1e-5)
    assert warm["damage"] == pytest.approx(first["damage"], abs=1e-5)
    assert warm["masks"] == first["masks"]


def test_one_pass_makes_a_photos_pixels_once_and_never_reads_them_stale(monkeypatch):
    """Inside one pass the car and damage checks share a photo's network input (same spec); a photo changed in
    place between two passes is read anew."""
    from pipeline.accel.pixels import PixelSpec, shared_pixels

    spec = PixelSpec((32, 32), None, 2, None, False, 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    made = []
    real = PixelSpec._one
    monkeypatch.setattr(PixelSpec, "_one", lambda self, image: made.append(image) or real(self, image))
    image, other = testing.photo(64, 48, seed=1), testing.photo(64, 48, seed=2)
    with shared_pixels():
        first = spec([image])
        again = spec([other, image])
    assert made == [image, other] and np.array_equal(again[1], first[0])
    image.paste((0, 0, 0), (0, 0, 64, 48))
    assert not np.array_equal(spec([image])[0], first[0]) and len(made) == 3


def test_photos_of_any_aspect_take_few_input_shapes_and_common_ones_pad_as_ultralytics():
    """The short side pads up to the next of SHAPE_SHARES of the long side: photos of every aspect ratio make at
    most nine input shapes (a dynamic copy's memory grows with each shape), while square, 4:3, 3:2, 16:9 and 2:1
    photos get Ultralytics' own letterbox (padded to the stride) at every serving size."""
    from pipeline.accel.yolo_runtime import SHAPE_SHARES, Letterbox

    for image_size in (384, 576, 640):
        sizes = {Letterbox.fit((h, w), image_size, 32).size for h in range(40, 1600, 37) for w in range(40, 1600, 41)}
        assert len(sizes) <= 2 * len(SHAPE_SHARES) - 1 and all(image_size in size for size in sizes)
        assert all(side % 32 == 0 for size in sizes for side in size)
        photos = [(480, 640), (3000, 4000), (640, 480), (224, 224), (1080, 1920), (1920, 1080), (500, 1000)]
        for h, w in [*photos, (4000, 6000), (800, 1200), (1200, 800)]:  # 3:2 too
            assert Letterbox.fit((h, w), image_size, 32) == Letterbox.fit((h, w), image_size, 32, shared=False)
    odd = Letterbox.fit((700, 1000), 576, 32)  # 0.7: the image in the middle of a 4:3 input
    assert odd.size == (448, 576) and odd.resized == (403, 576) and odd.pads == (22, 23, 0, 0)
    assert Letterbox.fit((4000, 1000), 576, 32).size == (576, 288)  # longer than 2:1: padded to 2:1


def test_rewriting_a_model_card_keeps_the_copies_and_a_new_config_rebuilds_them(tmp_path):
    from pipeline.accel.cache import fingerprint, folder_files

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("card")
    key = fingerprint(folder_files(tmp_path), "head")
    (tmp_path / "README.md").write_text("the card, rewritten by a release")
    assert fingerprint(folder_files(tmp_path), "head") == key
    (tmp_path / "config.json").write_text('{"num_labels": 3}')
    assert fingerprint(folder_files(tmp_path), "head") != key


def test_a_compiled_model_cache_openvino_cannot_use_leaves_the_copy_compiled_without_it(tmp_path, monkeypatch, caplog):
    """A blob OpenVINO cannot load again, or a full disk, must not send a classifier back to PyTorch."""
    import openvino as ov
    from openvino import opset13 as ops

    from pipeline.accel import classifiers

    pixels = ops.parameter([-1, 3, 8, 8], ov.Type.f32, name="pixels")
    ov.save_model(ov.Model([ops.relu(pixels)], [pixels], "tiny"), tmp_path / "model.xml")
    real = ov.Core.compile_model

    def refuses_the_cache(self, model, device, config=None):
        if config and "CACHE_DIR" in config:
            raise RuntimeError("cannot import the compiled blob")
        return real(self, model, device, config or {})

    monkeypatch.setattr(ov.Core, "compile_model", refuses_the_cache)
    monkeypatch.setenv("CAR_DAMAGE_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger=classifiers.__name__):
        forward = classifiers.CompiledForward(classifiers.compile_model(tmp_path / "model.xml"))
    values = np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    np.testing.assert_array_equal(forward(values), np.maximum(values, 0))
    assert "compiled-model cache failed" in caplog.text


def test_an_int8_copy_that_compiles_but_cannot_run_leaves_the_f32_copy_serving(
    car_imagenet_random, monkeypatch, caplog
):
    """With oneDNN limited to AVX2, OpenVINO compiled the int8 classifiers and failed at their first inference:
    that is found at load, where the f32 copy can still take over, not with every photo."""
    from pipeline.accel import classifiers
    from pipeline.classify import ImageClassifier

    photos = [testing.photo(120, 90, seed=seed) for seed in range(2)]
    reference = ImageClassifier.from_folder(car_imagenet_random, "fp32").probabilities(photos)  # PyTorch's
    real = classifiers.compile_model

    class Unrunnable:
        def __init__(self, compiled) -> None:
            self.inputs = compiled.inputs

        def create_infer_request(self):
            raise RuntimeError("could not create a primitive descriptor")

    def int8_that_fails(xml, precision_hint="f32", dynamic_quantization=False, **options):
        compiled = real(xml, precision_hint, dynamic_quantization, **options)
        return Unrunnable(compiled) if dynamic_quantization else compiled

    monkeypatch.setattr(classifiers, "compile_model", int8_that_fails)
    monkeypatch.setattr(classifiers, "_torch_forward", lambda *args: pytest.fail("PyTorch took over"))
    with caplog.at_level("WARNING", logger=classifiers.__name__):
        classifier = ImageClassifier.from_folder(car_imagenet_random, "int8")
    assert "int8 copy of car-random failed" in caplog.text and "primitive descriptor" in caplog.text
    np.testing.assert_allclose(classifier.probabilities(photos), reference, atol=1e-5)


def test_an_int8_copy_openvino_will_not_compile_leaves_the_f32_copy_serving(car_imagenet_random, monkeypatch, caplog):
    """Not PyTorch: a warm start would then import it again."""
    from pipeline.accel import classifiers
    from pipeline.classify import ImageClassifier

    photos = [testing.photo(120, 90, seed=seed) for seed in range(2)]
    reference = ImageClassifier.from_folder(car_imagenet_random, "fp32").probabilities(photos)  # PyTorch's
    real = classifiers.compile_model

    def no_int8(xml, precision_hint="f32", dynamic_quantization=False, **options):
        if dynamic_quantization:
            raise RuntimeError("no int8 kernels here")
        return real(xml, precision_hint, dynamic_quantization, **options)

    monkeypatch.setattr(classifiers, "compile_model", no_int8)
    monkeypatch.setattr(classifiers, "_torch_forward", lambda *args: pytest.fail("PyTorch took over"))
    with caplog.at_level("WARNING", logger=classifiers.__name__):
        classifier = ImageClassifier.from_folder(car_imagenet_random, "int8")
    np.testing.assert_allclose(classifier.probabilities(photos), reference, atol=1e-5)
    assert "int8 copy of car-random failed" in caplog.text
