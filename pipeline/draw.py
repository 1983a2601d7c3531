"""The overlay: masks, boxes and 'label score' tags on a copy of the photo, drawn with supervision."""

from __future__ import annotations

import numpy as np
import supervision as sv
from PIL import Image

from .results import Analysis, Detection


def to_supervision(detections: tuple[Detection, ...]) -> sv.Detections:
    """Our records -> supervision's, for its annotators."""
    if not detections:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([d.box for d in detections], dtype=np.float32),
        mask=np.stack([d.mask for d in detections]),
        confidence=np.array([d.score for d in detections], dtype=np.float32),
        class_id=np.array([d.class_id for d in detections], dtype=int),
    )


def annotate(analysis: Analysis) -> Image.Image:
    """An annotated copy of the photo at its original resolution (the photo itself when no damage)."""
    scene = analysis.image.copy()  # a PIL image: supervision then handles the RGB/BGR order itself
    if not analysis.detections:
        return scene
    detections = to_supervision(analysis.detections)
    wh = analysis.image.size
    thickness = sv.calculate_optimal_line_thickness(resolution_wh=wh)
    text_scale = sv.calculate_optimal_text_scale(resolution_wh=wh)
    palette = sv.ColorPalette.DEFAULT
    labels = [f"{d.label} {d.score:.0%}" for d in analysis.detections]
    scene = sv.MaskAnnotator(color=palette, opacity=0.45).annotate(scene, detections)
    scene = sv.BoxAnnotator(color=palette, thickness=thickness).annotate(scene, detections)
    scene = sv.LabelAnnotator(
        color=palette,
        text_scale=text_scale,
        text_thickness=max(1, thickness // 2),
        text_position=sv.Position.TOP_LEFT,
        smart_position=True,  # keep tags inside the photo for damage at its edges
    ).annotate(scene, detections, labels=labels)
    return scene
