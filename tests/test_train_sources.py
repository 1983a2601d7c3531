"""train.sources: one held-out split over all shared sets; near-duplicates and sessions never straddle it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline import testing
from train import sources


def test_session_keys_of_lensor_file_names() -> None:
    key = sources.session_key
    assert key("lensor", Path("8723259-renault-kiger-minor_dent-dents_jpeg.rf.dd35.jpg")) == "listing-8723259"
    assert key("lensor", Path("8723259-renault-kiger-minor_scratch-dents_jpeg.rf.3ae6.jpg")) == "listing-8723259"
    shoot = "maruti-suzuki-vitara-brezza-2018-1726908562"
    assert key("lensor", Path(f"{shoot}_07_jpg.rf.1.jpg")) == key("lensor", Path(f"{shoot}_01_jpg.rf.2.jpg"))
    assert key("lensor", Path("0108_jpeg_jpg.rf.a.jpg")) == key("lensor", Path("0101_JPEG_jpg.rf.b.jpg"))
    assert key("lensor", Path("0108_jpeg_jpg.rf.a.jpg")) != key("lensor", Path("0112_JPEG_jpg.rf.b.jpg"))
    assert key("lensor", Path("AEzs6F2OTASWknEevd4GlQ_jpeg.rf.3e.jpg")) is None
    assert key("vds", Path("8723259-renault.jpg")) is None  # other sets carry no session in their names


def test_near_duplicates_across_sets_and_sessions_share_a_group(tmp_path: Path) -> None:
    original = tmp_path / "a.jpg"
    testing.photo(128, 128, seed=1).save(original)
    Image.open(original).resize((96, 60)).save(tmp_path / "a-stretched.jpg")  # lensor photos are stretched copies
    for i, name in enumerate(("b.jpg", "8723259-x.jpg", "8723259-y.jpg")):
        testing.photo(128, 128, seed=10 + i).save(tmp_path / name)
    paths = [tmp_path / n for n in ("a.jpg", "a-stretched.jpg", "b.jpg", "8723259-x.jpg", "8723259-y.jpg")]
    cache = tmp_path / "cache.json"
    groups = sources.photo_groups(["vds", "lensor", "vds", "lensor", "lensor"], paths, cache)
    assert groups[0] == groups[1]  # a copy in another set
    assert groups[3] == groups[4]  # one listing
    assert len({groups[0], groups[2], groups[3]}) == 3
    assert cache.exists() and groups == sources.photo_groups(["vds", "lensor", "vds", "lensor", "lensor"], paths, cache)


def test_held_out_rules() -> None:
    """vds val and ImageNet are held out; a yb valid photo stays with its vds training copy; fractions per set."""
    rows = [  # (source, path, group)
        ("vds", "vds/val/minor/1.jpg", 0),
        ("yb", "yb/train/images/1.jpg", 0),  # a copy of a vds val photo: held out with it
        ("vds", "vds/train/minor/2.jpg", 1),
        ("yb", "yb/valid/images/2.jpg", 1),  # a copy of a vds training photo: not held out
        ("yb", "yb/valid/images/3.jpg", 2),
        ("imagenet", "imagenet/x.jpg", 3),
        *[("web", f"web/{i}.jpg", 10 + i) for i in range(8)],
    ]
    src, paths, groups = zip(*rows, strict=True)
    held = sources.choose_held_out_groups(src, [Path(p) for p in paths], groups, {"web": 0.25}, seed=0)
    assert {0, 2, 3} <= held and 1 not in held
    assert sum(g in held for g in range(10, 18)) == 2


def test_carve_keeps_groups_whole() -> None:
    paths = [Path(f"{i}.jpg") for i in range(40)]
    split = sources.HeldOutSplit({"web": paths}, {"web": []}, {p: i // 2 for i, p in enumerate(paths)})
    rest, carved = split.carve(0.25, ["web"], seed=3)
    assert 10 <= len(carved["web"]) <= 11 and len(rest.train["web"]) + len(carved["web"]) == 40
    carved_groups = {split.groups[p] for p in carved["web"]}
    assert not carved_groups & {split.groups[p] for p in rest.train["web"]}


def test_worst_grade() -> None:
    sample = sources.Sample(Path("x.jpg"), [("minor-scratch", None), ("severe-dent", None), ("moderate-dent", None)])
    assert sources.worst_grade(sample) == "severe"
    assert sources.worst_grade(sources.Sample(Path("y.jpg"), [("damage", None)])) is None


@pytest.mark.xdist_group("shared-split")  # the session's pHashes of ../shared: computed in one worker
def test_held_out_split_of_shared(shared_split) -> None:
    """On the real sets: every photo on one side, and no pHash group on both."""
    split, _ = shared_split
    counts = split.counts()
    assert counts["vds"]["held_out"] >= 457 and counts["imagenet"]["train"] == 0
    assert 0.15 < counts["lensor"]["held_out"] / sum(counts["lensor"].values()) < 0.3
    train_groups = {split.groups[p] for paths in split.train.values() for p in paths}
    held_groups = {split.groups[p] for paths in split.held_out.values() for p in paths}
    assert not train_groups & held_groups
