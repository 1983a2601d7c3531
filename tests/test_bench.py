"""The benchmark's drift figures: how fast-path instances are matched to the fp32 ones."""

import numpy as np

from bench.__main__ import _match_instances
from pipeline.results import Detection


def _detection(label: str, rows: slice) -> Detection:
    mask = np.zeros((10, 10), dtype=bool)
    mask[rows] = True
    return Detection(label=label, class_id=0, score=0.9, box=(0.0, 0.0, 10.0, 10.0), mask=mask)


def test_instances_match_one_to_one_by_label_and_iou():
    exact = (_detection("dent", slice(0, 4)), _detection("dent", slice(5, 9)), _detection("scratch", slice(0, 2)))
    fast = (
        _detection("dent", slice(0, 4)),  # the first dent, unchanged: IoU 1
        _detection("dent", slice(0, 3)),  # a second copy of it cannot take the first dent again
        _detection("scratch", slice(5, 9)),  # where the second dent is, but another class: no match
    )
    assert _match_instances(exact, fast) == [1.0]


def test_partial_overlap_counts_only_above_half():
    exact = (_detection("dent", slice(0, 4)),)
    assert _match_instances(exact, (_detection("dent", slice(1, 5)),)) == [0.6]  # 3 rows shared of 5
    assert _match_instances(exact, (_detection("dent", slice(2, 6)),)) == []  # IoU 2/6
