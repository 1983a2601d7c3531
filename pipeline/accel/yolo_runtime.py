"""A segmenter's OpenVINO copy run without Ultralytics or PyTorch: the letterbox, NMS and mask steps of Ultralytics'
predictor (8.4, ``retina_masks=False``) in NumPy and OpenCV, on the folder Ultralytics exported.

Why: Ultralytics imports PyTorch and, at its first prediction, torchvision and ``torch._dynamo``: most of a cold
start. The answers are Ultralytics' own (tests compare the two on the same copy).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .classifiers import OPENVINO_CALLS

logger = logging.getLogger(__name__)
_BLAS_LIMIT = threading.Lock()

PAD_VALUE = 114  # Ultralytics' letterbox grey
CLASS_OFFSET = 7680  # Ultralytics' max_wh: boxes of different classes are moved apart so NMS keeps both
BATCH = 8  # photos of one letterbox size a network call (the pipeline's default batch)
COMMON_SHAPES = ((3, 4), (4, 3), (1, 1))  # height:width of most photos (landscape and portrait 4:3, square)
# The short side of a network input is padded up to the first of these shares of the long side (rounded up to the
# stride), not only to the stride as Ultralytics pads: a dynamic OpenVINO copy keeps ~15-25 MB of kernels for every
# input shape it has run, so photos of many aspect ratios made its memory grow by ~0.7 GB over 30 shapes
# (docs/performance.md). Square, 4:3, 3:2, 16:9 and 2:1 photos pad exactly as Ultralytics pads them (3:2, the
# cameras' other aspect, padded to 4:3 changed held-out masks by 0.01 mAP50); a photo longer than 2:1 (rare) pads to
# 2:1. Nine input shapes at most, at any size.
SHAPE_SHARES = (1, 3 / 4, 2 / 3, 9 / 16, 1 / 2)


@dataclass(frozen=True)
class Letterbox:
    """Ultralytics' LetterBox(auto=True) for one image: scaled to fit, padded to the stride (``shared``: to the next
    of SHAPE_SHARES), centred."""

    source: tuple[int, int]  # (height, width) of the image
    resized: tuple[int, int]  # (height, width) of the image inside the network input
    pads: tuple[int, int, int, int]  # top, bottom, left, right

    @classmethod
    def fit(cls, source: tuple[int, int], image_size: int, stride: int, shared: bool = True) -> Letterbox:
        height, width = source
        ratio = min(image_size / height, image_size / width)
        new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
        sides = _padded_sides(image_size, stride) if shared else ()
        dw, dh = (_padded(side, image_size, stride, sides) - side for side in (new_w, new_h))
        dw, dh = dw / 2, dh / 2
        return cls(source, (new_h, new_w), (round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)))

    @property
    def size(self) -> tuple[int, int]:
        top, bottom, left, right = self.pads
        return self.resized[0] + top + bottom, self.resized[1] + left + right

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 in [0, 1], RGB."""
        if rgb.shape[:2] != self.resized:
            rgb = cv2.resize(rgb, self.resized[::-1], interpolation=cv2.INTER_LINEAR)
        padded = cv2.copyMakeBorder(rgb, *self.pads, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        chw = padded.transpose(2, 0, 1)
        out = np.empty((1, *chw.shape), dtype=np.float32)
        np.divide(chw, np.float32(255), out=out[0])  # one pass: cast, scale and lay out (was three arrays)
        return out

    def _inner(self) -> tuple[float, float, int, int, int, int]:
        """Ultralytics' scale_boxes / scale_masks geometry: gains, and the image's place in the input."""
        (in_h, in_w), (h0, w0) = self.size, self.source
        gain = min(in_h / h0, in_w / w0)
        new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
        top, left = round((in_h - new_h) / 2 - 0.1), round((in_w - new_w) / 2 - 0.1)
        return new_h / h0, new_w / w0, top, left, new_h, new_w

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        gain_y, gain_x, top, left, _, _ = self._inner()
        out = (boxes - np.array([left, top, left, top], dtype=np.float32)) / np.array(
            [gain_x, gain_y, gain_x, gain_y], dtype=np.float32
        )
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.source[1])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.source[0])
        return out

    def mask_to_source(self, mask: np.ndarray) -> np.ndarray:
        """One mask at the input's size -> a boolean mask at the image's size (padding cropped, then resized)."""
        _, _, top, left, new_h, new_w = self._inner()
        inner = mask[top : top + new_h, left : left + new_w].astype(np.float32)
        if inner.shape != self.source:
            inner = cv2.resize(inner, self.source[::-1], interpolation=cv2.INTER_LINEAR)
        return inner > 0.5


def _padded(side: int, image_size: int, stride: int, sides: tuple[int, ...]) -> int:
    """Ultralytics: the side plus its remainder to the stride; then up to the first of ``sides`` that holds it."""
    side += (image_size - side) % stride
    return next((padded for padded in sides if padded >= side), side)


@functools.cache
def _padded_sides(image_size: int, stride: int) -> tuple[int, ...]:
    return tuple(sorted({-(-round(image_size * share) // stride) * stride for share in SHAPE_SHARES}))


def letterboxed(
    image: Image.Image, image_size: int, stride: int = 32, shared: bool = True
) -> tuple[Letterbox, np.ndarray]:
    """A photo as the network sees it (also what the int8 copy is calibrated on), and the letterbox's geometry."""
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    box = Letterbox.fit(rgb.shape[:2], image_size, stride, shared)
    return box, box.network_input(rgb)


@dataclass(frozen=True, eq=False)
class Instances:
    """What a segmenter found in one image, best first: boxes in the image's pixels, masks one by one."""

    boxes: np.ndarray  # (n, 4) xyxy
    scores: np.ndarray  # (n,)
    classes: np.ndarray  # (n,) int
    masks: object  # n masks in the network's letterbox (any array type ``to_image`` takes)
    to_image: Callable[[object], np.ndarray]  # one mask -> boolean mask at the image's size


class OpenVINOSegmenter:
    """An Ultralytics segmentation export (OpenVINO IR + metadata.yaml), run by OpenVINO alone. Thread-safe: one
    inference at a time (``classifiers.OPENVINO_CALLS``)."""

    task = "segment"

    def __init__(self, compiled, names: dict[int, str], stride: int, streams=None, compile_for=None) -> None:
        self.compiled, self.names, self.stride = compiled, names, stride
        self.shared_shapes = True  # letterboxes padded to SHAPE_SHARES (False: as Ultralytics pads, for tests)
        self.streams = streams  # the copy compiled for throughput (a stream a core), None on one core
        self.compile_for = compile_for  # input shape -> a latency copy for that one shape (None: none are made)
        self._fixed: dict[tuple[int, ...], object] = {}  # those made, by input shape

    @classmethod
    def load(cls, folder: Path, precision_hint: str) -> OpenVINOSegmenter | None:
        """The copy compiled at ``precision_hint`` for latency, as Ultralytics compiles it; None when it is not a
        plain dynamic-shape segmentation export (an end-to-end head or fixed shapes: Ultralytics runs those)."""
        import yaml

        from .classifiers import compile_model

        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        if meta.get("task") != "segment" or meta.get("end2end") or not (meta.get("args") or {}).get("dynamic"):
            return None
        xml = next(folder.glob("*.xml"))
        compiled = compile_model(xml, precision_hint, performance_hint="LATENCY")
        if len(compiled.outputs) != 2:
            return None
        names = {int(k): str(v) for k, v in meta["names"].items()}
        compile_for = functools.partial(_fixed_copy, xml, precision_hint)
        return cls(compiled, names, int(meta.get("stride", 32)), _throughput_copy(xml, precision_hint), compile_for)

    def predict(
        self, image: Image.Image, conf: float, iou: float, image_size: int, max_det: int, agnostic: bool = False
    ) -> Instances:
        return self.predict_many([image], conf, iou, image_size, max_det, agnostic)[0]

    def predict_many(
        self, images: list[Image.Image], conf: float, iou: float, image_size: int, max_det: int, agnostic: bool = False
    ) -> list[Instances]:
        """Each image letterboxed as it would be alone. Several images: one request each on the throughput copy, a
        stream a core (any letterbox, no batch to fill; docs/performance.md).
        One image, or one core: the latency copy, images whose letterboxes have the same size in batches of BATCH,
        the rest one by one (two batch sizes only, since OpenVINO prepares its kernels anew for every input shape);
        a photo alone of a common letterbox on a copy compiled for its shape (``_latency_copy``)."""
        if self.streams is not None and len(images) > 1:
            boxes: list[Letterbox] = []

            def inputs() -> Iterator[np.ndarray]:  # each photo letterboxed while the photos before it run
                for image in images:
                    box, network_input = letterboxed(image, image_size, self.stride, self.shared_shapes)
                    boxes.append(box)
                    yield network_input

            outputs = self._streamed(inputs())
            return [self._instances(box, *outputs[i], conf, iou, max_det, agnostic) for i, box in enumerate(boxes)]
        boxed = [letterboxed(image, image_size, self.stride, self.shared_shapes) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (box, _) in enumerate(boxed):
            groups.setdefault(box.size, []).append(i)
        chunks = []
        for members in groups.values():
            full = len(members) - len(members) % BATCH
            chunks += [members[k : k + BATCH] for k in range(0, full, BATCH)] + [[i] for i in members[full:]]
        found: dict[int, Instances] = {}
        for members in chunks:
            network_input = np.concatenate([boxed[i][1] for i in members])
            copy = self._latency_copy(network_input.shape, image_size)
            with OPENVINO_CALLS:
                request = copy.create_infer_request()
                request.infer({0: network_input})
                predictions, protos = _network_outputs(request)  # this thread's request
            for row, i in enumerate(members):
                found[i] = self._instances(boxed[i][0], predictions[row], protos[row], conf, iou, max_det, agnostic)
        return [found[i] for i in range(len(images))]

    def warm_up(self, image_size: int) -> None:
        """One call at the square letterbox (and one a stream of the throughput copy at each of COMMON_SHAPES):
        OpenVINO prepares its kernels for each input shape it has not seen (about ten times the network's own
        time), which the first photos would otherwise wait for. The latency copy is warmed at one shape only: it
        keeps ~20 MB of kernels a shape, and a photo alone of a common letterbox runs on a copy of its own."""
        for shape in COMMON_SHAPES:
            height, width = Letterbox.fit(shape, image_size, self.stride).size
            blank = np.zeros((1, 3, height, width), dtype=np.float32)
            if shape == (1, 1) or self.compile_for is None:
                with OPENVINO_CALLS:
                    self.compiled.create_infer_request().infer({0: blank})
            if self.streams is not None:
                self._streamed([blank] * int(self.streams.get_property("NUM_STREAMS")))

    def _latency_copy(self, shape: tuple[int, ...], image_size: int):
        """The copy one latency call of ``shape`` runs on. A photo alone of a common letterbox: a copy compiled for
        that one shape, made at the first such photo (a dynamic copy redoes its shape work whenever the shape
        changes from its last call, as it does from one user's photo to the next: docs/performance.md); batches,
        other letterboxes, or where such a copy cannot be compiled: the dynamic copy."""
        if self.compile_for is None or shape not in _common_inputs(image_size, self.stride):
            return self.compiled
        copy = self._fixed.get(shape)
        if copy is None:
            with OPENVINO_CALLS:  # compiled once a shape, while no other thread runs a model (as every call here)
                copy = self._fixed.get(shape) or self._make_fixed(shape)
        return copy or self.compiled

    def _make_fixed(self, shape: tuple[int, ...]):
        from .classifiers import one_line

        try:
            self._fixed[shape] = self.compile_for(shape)
        except Exception as exc:  # slower, never wrong
            logger.warning("no copy of the segmenter for input %s (%s)", shape, one_line(exc))
            self.compile_for = None
        return self._fixed.get(shape)

    def _streamed(self, inputs: Iterable[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(predictions, prototypes) of each input, the inputs spread over the throughput copy's streams; an input
        may be made while the ones before it run, and is read where it lies (kept until its request is done).
        Requests of our own, read in this thread as each finishes: with AsyncInferQueue's Python callback, a stream
        thread could still want the interpreter's lock when a compiled copy was released, whose destructor joins
        that thread with the lock held: a deadlock (docs/performance.md)."""
        with OPENVINO_CALLS:
            idle = [self.streams.create_infer_request() for _ in range(int(self.streams.get_property("NUM_STREAMS")))]
            outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            running: dict[int, tuple[object, np.ndarray]] = {}  # index -> (request, its input), started, not read
            try:
                for index, network_input in enumerate(inputs):
                    if not idle:  # the first request to finish is read, then runs this input
                        done = _first_done(running)
                        request, _ = running.pop(done)
                        outputs[done] = _finished(request)
                        idle.append(request)
                    request = idle.pop()
                    request.start_async({0: network_input}, share_inputs=True)
                    running[index] = (request, network_input)
            finally:  # whatever happened to the next input, the running requests finish reading theirs
                for request, _ in running.values():
                    request.wait()
            outputs |= {index: _finished(request) for index, (request, _) in running.items()}
            return [outputs[i] for i in range(len(outputs))]

    def _instances(
        self, box: Letterbox, prediction, protos, conf: float, iou: float, max_det: int, agnostic: bool = False
    ) -> Instances:
        kept = _nms(prediction, len(self.names), conf, iou, max_det, agnostic)
        masks = _masks(protos, kept[:, 6:], kept[:, :4], box.size)
        has_pixels = masks.any(axis=(1, 2))  # Ultralytics drops instances without a pixel
        kept, masks = kept[has_pixels], masks[has_pixels]
        boxes = box.boxes_to_source(kept[:, :4].copy())
        return Instances(boxes, kept[:, 4], kept[:, 5].astype(int), masks, box.mask_to_source)


def _first_done(running: dict) -> int:
    """The index of a running request that has finished, waiting (without the interpreter's lock) until one has."""
    while True:
        for index, (request, _) in running.items():
            if request.wait_for(0):
                return index
        next(iter(running.values()))[0].wait_for(1)  # the oldest, a millisecond at most


def _finished(request) -> tuple[np.ndarray, np.ndarray]:
    """A throughput request's outputs once it is done, copied out (its buffers are reused)."""
    request.wait()
    predictions, protos = _network_outputs(request)
    return predictions[0].copy(), protos[0].copy()


def _network_outputs(request) -> tuple[np.ndarray, np.ndarray]:
    """A finished request's predictions (B, 4+nc+nm, N) and mask prototypes (B, nm, h, w), told apart by rank."""
    return tuple(sorted((request.get_output_tensor(k).data for k in range(2)), key=lambda a: a.ndim))


@functools.cache
def _common_inputs(image_size: int, stride: int) -> frozenset[tuple[int, ...]]:
    """The network input of one photo of each of COMMON_SHAPES."""
    return frozenset((1, 3, *Letterbox.fit(shape, image_size, stride).size) for shape in COMMON_SHAPES)


def _fixed_copy(xml: Path, precision_hint: str, shape: tuple[int, ...]):
    from .classifiers import compile_model

    return compile_model(xml, precision_hint, performance_hint="LATENCY", input_shape=shape)


def _throughput_copy(xml: Path, precision_hint: str):
    """The copy compiled for throughput, or None where it would have one stream (one core, one thread) or cannot
    be compiled: the latency copy then serves every call, as before."""
    from .classifiers import compile_model, one_line

    try:
        streams = compile_model(xml, precision_hint, performance_hint="THROUGHPUT")
    except Exception as exc:  # an OpenVINO build or CPU that refuses the hint: slower, never wrong
        logger.warning("no throughput copy of %s (%s)", xml.name, one_line(exc))
        return None
    return streams if int(streams.get_property("NUM_STREAMS")) >= 2 else None


def _nms(
    prediction: np.ndarray, classes: int, conf: float, iou: float, max_det: int, agnostic: bool = False
) -> np.ndarray:
    """Rows (x1, y1, x2, y2, score, class, mask coefficients...) kept by NMS, best first: class-aware, or across
    classes (``agnostic``, Ultralytics' agnostic_nms)."""
    rows = prediction.T  # (N, 4 + nc + nm)
    scores = rows[:, 4 : 4 + classes]
    best = scores.max(axis=1)
    rows, scores, best = rows[best > conf], scores[best > conf], best[best > conf]
    if not len(rows):
        return np.zeros((0, rows.shape[1] + 2 - classes), dtype=np.float32)
    xy, wh = rows[:, :2], rows[:, 2:4] / 2
    boxes = np.concatenate([xy - wh, xy + wh], axis=1)
    labels = scores.argmax(axis=1).astype(np.float32)
    table = np.concatenate([boxes, best[:, None], labels[:, None], rows[:, 4 + classes :]], axis=1)
    keep = greedy_nms(boxes if agnostic else boxes + labels[:, None] * CLASS_OFFSET, best, iou, max_det)
    return table[keep]


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """torchvision.ops.nms: highest score first, dropping boxes that overlap a kept one by more than ``iou``; the
    first ``limit`` kept (greedy order makes them the same, and stopping there keeps a model that scores thousands of
    anchors over the threshold from costing a quadratic loop)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size and (limit is None or len(keep) < limit):
        first, rest = order[0], order[1:]
        keep.append(first)
        top_left = np.maximum(boxes[first, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[first, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        overlap = inter / (areas[first] + areas[rest] - inter)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def mixed_on_one_thread(coefficients: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """coefficients @ prototypes, with NumPy's BLAS on one thread. Why: OpenBLAS's workers spin for ~0.1 s after
    every product they share, on a core the next OpenVINO call needs (on 2 cores that call ran at half speed:
    docs/performance.md); one thread computes these small products in a fraction of a millisecond. Only here: the
    process's own setting (another pipeline's, the bench's naive side) is left as it was; the lock keeps two threads'
    limits from restoring each other's."""
    with _BLAS_LIMIT, _blas_controller().limit(limits=1, user_api="blas"):
        return coefficients @ prototypes


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _masks(protos: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Ultralytics' process_mask(upsample=True): prototypes mixed, upsampled to the input, > 0, cropped to the box."""
    channels, mh, mw = protos.shape
    out = np.zeros((len(coefficients), *size), dtype=np.uint8)
    if not len(coefficients):
        return out
    mixed = mixed_on_one_thread(coefficients, protos.reshape(channels, -1)).reshape(-1, mh, mw)
    columns, rows = np.arange(size[1], dtype=np.float32), np.arange(size[0], dtype=np.float32)
    for i, (mask, (x1, y1, x2, y2)) in enumerate(zip(mixed, boxes)):
        upsampled = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_LINEAR) > 0
        inside = ((rows >= y1) & (rows < y2))[:, None] & ((columns >= x1) & (columns < x2))[None, :]
        out[i] = upsampled & inside
    return out
