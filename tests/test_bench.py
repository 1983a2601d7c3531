"""The drift figures of the benchmarks and tests: how fast-path instances are matched to the fp32 ones."""

import numpy as np

from pipeline import testing
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


def test_interleaved_latency_measures_both_sides_on_the_same_photos(settings_factory):
    """The bench's drift-proof ratios: both sides timed alternately on every photo, the ratio from their p50s."""
    from dataclasses import replace

    from bench.__main__ import _interleaved
    from pipeline import testing

    photos = [testing.photo(96, 64, seed=s) for s in range(3)]
    fast = replace(settings_factory(), batch_size=2)
    figures = _interleaved(fast, replace(settings_factory(), batch_size=1), photos)
    assert set(figures) >= {"p50_ms_single_fast", "p50_ms_single_naive", "speedup_batch_vs_naive"}
    assert figures["speedup_single_vs_naive"] == round(
        figures["p50_ms_single_naive"] / figures["p50_ms_single_fast"], 2
    )


def test_speedups_are_the_median_of_rounds_measured_in_turn():
    """One slow round (the host drifting while one side ran) moves no headline ratio."""
    from bench.__main__ import _median_ratios, _round_ratios

    fast = {"p50_ms_single": 100.0, "p50_ms_batch": 80.0, "photos_per_s": 10.0}
    naive = {"p50_ms_single": 320.0, "photos_per_s": 2.5}
    drifted = dict(naive, p50_ms_single=160.0, photos_per_s=5.0)  # naive twice as fast in one round
    rounds = [_round_ratios(fast, naive), _round_ratios(fast, drifted), _round_ratios(fast, naive)]
    assert rounds[0] == {"speedup_batch_vs_naive": 4.0, "speedup_single_vs_naive": 3.2, "speedup_zip_vs_naive": 4.0}
    assert _median_ratios(rounds) == rounds[0]


def test_the_mixed_zip_spreads_aspect_ratios_from_one_to_four_to_four_to_one(tmp_path):
    import zipfile

    from PIL import Image

    from bench.common import zip_of_aspects

    source = tmp_path / "p.jpg"
    testing.photo(120, 90, seed=1).save(source)
    with zipfile.ZipFile(zip_of_aspects([source], 9, tmp_path / "a.zip")) as archive:
        sizes = [Image.open(archive.open(name)).size for name in archive.namelist()]
    ratios = [w / h for w, h in sizes]
    assert len(sizes) == 9 and max(max(size) for size in sizes) == 640
    assert abs(ratios[0] - 0.25) < 0.01 and abs(ratios[-1] - 4) < 0.01 and ratios == sorted(ratios)
