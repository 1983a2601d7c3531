"""The overlay: masks, boxes and 'label score' tags on a copy of the photo, at the working resolution.

One annotator per concern: masks are painted here from their compact crops (supervision's mask annotator wants
full-size masks stacked, which is what bounded memory rules out); boxes and tags are supervision's.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from PIL import Image

from .results import Analysis, Detection

PALETTE = sv.ColorPalette.DEFAULT
MASK_OPACITY = 0.45


def to_supervision(detections: tuple[Detection, ...], scale: tuple[float, float]) -> sv.Detections:
    """Our records -> supervision's (boxes in working pixels; no masks), for its box and label annotators."""
    if not detections:
        return sv.Detections.empty()
    scale_x, scale_y = scale
    boxes = np.array([d.box for d in detections], dtype=np.float32) / np.array([scale_x, scale_y, scale_x, scale_y])
    return sv.Detections(
        xyxy=boxes.astype(np.float32),
        confidence=np.array([d.score for d in detections], dtype=np.float32),
        class_id=np.array([d.class_id for d in detections], dtype=int),
    )


def paint_masks(scene: np.ndarray, detections: tuple[Detection, ...]) -> np.ndarray:
    """Blend each mask's colour into its own region of the scene (RGB, working size), one mask at a time."""
    for detection in detections:
        crop = detection.mask_crop
        height, width = crop.bits.shape
        region = scene[crop.top : crop.top + height, crop.left : crop.left + width]
        colour = np.array(PALETTE.by_idx(detection.class_id).as_rgb(), dtype=np.float32)
        blended = region[crop.bits].astype(np.float32) * (1 - MASK_OPACITY) + colour * MASK_OPACITY
        region[crop.bits] = blended.round().astype(np.uint8)
    return scene


def tag(detection: Detection) -> str:
    text = f"{detection.label} {detection.score:.0%}"
    return f"{text} · {detection.part.replace('_', ' ')}" if detection.part else text


def annotate(analysis: Analysis) -> Image.Image:
    """An annotated copy of the working-resolution photo (the photo itself when there is no damage to show)."""
    scene = analysis.image.copy()
    if not analysis.detections:
        return scene
    scene = Image.fromarray(paint_masks(np.array(scene), analysis.detections))
    detections = to_supervision(analysis.detections, _scale(analysis))
    wh = scene.size
    thickness = sv.calculate_optimal_line_thickness(resolution_wh=wh)
    scene = sv.BoxAnnotator(color=PALETTE, thickness=thickness).annotate(scene, detections)
    return sv.LabelAnnotator(
        color=PALETTE,
        text_scale=sv.calculate_optimal_text_scale(resolution_wh=wh),
        text_thickness=max(1, thickness // 2),
        text_position=sv.Position.TOP_LEFT,
        smart_position=True,  # keep tags inside the photo for damage at its edges
    ).annotate(scene, detections, labels=[tag(d) for d in analysis.detections])


def _scale(analysis: Analysis) -> tuple[float, float]:
    return analysis.size[0] / analysis.image.width, analysis.size[1] / analysis.image.height
