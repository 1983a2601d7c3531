"""The build's part data, cut from the one held-out split of ``train.sources``: the part segmenter's YOLO-seg
data (yb's damaged parts or dsmlr's 18 parts) and the held-out yb photos of the damaged-part figure.

Each function writes one prepared folder under ``work/`` and returns its data yaml (``python -m train.build_data
--what parts`` prepares them alone).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from train.prepare import Sample, write_data_yaml, write_yolo_split
from train.sources import HeldOutSplit, keep


def prepare_part_data(shared: Path, split: HeldOutSplit, work: Path) -> Path:
    """dsmlr part polygons -> YOLO-seg (its 18 part classes; the names the product shows); val = held-out dsmlr."""
    from train.prepare import class_names, read_coco, write_yolo_dataset

    root = work / "parts"
    shutil.rmtree(root, ignore_errors=True)
    samples = read_coco(Path(shared) / "data" / "dsmlr-carparts" / "annotations.json")
    splits = {"dsmlr": (keep(samples, split.train["dsmlr"]), keep(samples, split.held_out["dsmlr"]))}
    return write_yolo_dataset(splits, root, class_names(samples))


def prepare_yb_part_data(shared: Path, split: HeldOutSplit, work: Path) -> Path:
    """yb's damaged-part polygons -> YOLO-seg in yb's vocabulary (bonnet, bumper, dickey, door, fender, light,
    windshield): a part model of the photos users send (damaged cars), trained on yb's training groups of the
    split; val = held-out yb. Returns its data yaml."""
    from train.prepare import write_yolo_dataset
    from train.sources import read_yb

    root = work / "parts"
    shutil.rmtree(root, ignore_errors=True)
    samples = [Sample(s.image, [(n.lower(), poly) for n, poly in s.polygons]) for s in read_yb(shared)]
    names = sorted({n for s in samples for n, _ in s.polygons})
    splits = {"yb": (keep(samples, split.train["yb"]), keep(samples, split.held_out["yb"]))}
    return write_yolo_dataset(splits, root, names)


def prepare_yb_held_out(shared: Path, split: HeldOutSplit, work: Path) -> Path:
    """The held-out yb photos and their damaged-part labels (yb's class names) for the damaged-part figure
    (``train.evaluate.damaged_parts``, through the product); returns its data yaml."""
    import yaml

    from train.sources import SETS, read_yb

    root = work / "yb-held-out"
    shutil.rmtree(root, ignore_errors=True)
    names = yaml.safe_load((Path(shared) / "data" / SETS["yb"] / "data.yaml").read_text())["names"]
    write_yolo_split(keep(read_yb(shared), split.held_out["yb"]), root, "val", names, "yb")
    return write_data_yaml(root, names, splits=("val",))
