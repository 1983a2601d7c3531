"""The drift figures of the benchmarks and tests: how fast-path instances are matched to the fp32 ones."""

import numpy as np

from pipeline.results import Detection, MaskCrop
from pipeline.testing import match_instances


def _detection(label: str, rows: slice) -> Detection:
    mask = np.zeros((10, 10), dtype=bool)
    mask[rows] = True
    crop = MaskCrop.from_full(mask, (10, 10))
    return Detection(label=label, class_id=0, score=0.9, box=(0.0, 0.0, 10.0, 10.0), mask_crop=crop)


def test_instances_match_one_to_one_by_label_and_iou():
    exact = (_detection("dent", slice(0, 4)), _detection("dent", slice(5, 9)), _detection("scratch", slice(0, 2)))
    fast = (
        _detection("dent", slice(0, 4)),  # the first dent, unchanged: IoU 1
        _detection("dent", slice(0, 3)),  # a second copy of it cannot take the first dent again
        _detection("scratch", slice(5, 9)),  # where the second dent is, but another class: no match
    )
    assert match_instances(exact, fast) == [1.0]


def test_partial_overlap_counts_only_above_half():
    exact = (_detection("dent", slice(0, 4)),)
    assert match_instances(exact, (_detection("dent", slice(1, 5)),)) == [0.6]  # 3 rows shared of 5
    assert match_instances(exact, (_detection("dent", slice(2, 6)),)) == []  # IoU 2/6


def test_compact_masks_expand_to_the_original_size():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 12:20] = True
    crop = MaskCrop.from_full(mask, (60, 40))  # a working copy at half the original's size
    assert (crop.left, crop.top, crop.bits.shape) == (12, 5, (5, 8))
    full = crop.to_array()
    assert full.shape == (40, 60) and full.sum() == 4 * 5 * 8 and full[10:20, 24:40].all()
    assert crop.area_fraction == 40 / 600
