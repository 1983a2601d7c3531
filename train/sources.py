"""The shared data sets and ONE held-out split across all of them.

Every model of the build trains only on photos outside the held-out part, and every held-out figure is measured on
photos that no model trained on. A photo's *group* is held out or kept as a whole:

- near-duplicates across and within sets (pHash, Hamming <= 8, transitive): lensor photos are other crops of nm,
  vds and yb photos, and many vds photos are yb photos resized;
- photos of one listing or one session (lensor's file names carry the listing id or the shooting time).

Which groups are held out, in this order:

1. every group with a photo of vds-severity's own ``val`` folder (the severity figures are on it), and every group
   with an ImageNet-sample photo (the release evaluation's non-car photos; the car check's added class is fitted on
   the other half of them, ``build_data.imagenet_fitting_half``);
2. every group with a yb ``valid`` photo, unless it also holds a vds *training* photo (that vds photo stays a
   training photo, and the yb copy with it);
3. for the other sets, random groups until the set's ``HELD_OUT_FRACTION`` is held out.

whole-cars-extra is not hashed: its 100 px overhead crops all look alike to pHash (thousands of pairs within 8
bits), so it is split at random.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.common import list_images
from train.prepare import Sample, perceptual_hashes

# source tag -> folder under <shared>/data
SETS = {
    "nm": "nm-damage-via",
    "pd": "pd-damage-via",
    "lensor": "lensor-damage-coco",
    "vds": "vds-severity",
    "yb": "yb-damaged-parts-yolo",
    "dsmlr": "dsmlr-carparts",
    "web": "web-whole-cars",
    "wce": "whole-cars-extra",
    "imagenet": "imagenet-sample",
}
HELD_OUT_FRACTION = {"nm": 0.25, "pd": 0.25, "lensor": 0.2, "web": 0.25, "dsmlr": 0.15, "wce": 0.15}
HASH_DISTANCE = 8  # bits; at 9-12 the cross-set pairs checked by eye were different photos
GRADES = ("minor", "moderate", "severe")  # lensor class names are "<grade>-<type>"
UNHASHED = ("wce",)


@dataclass(frozen=True)
class HeldOutSplit:
    """Per source: the photos models may train on, and the held-out ones."""

    train: dict[str, list[Path]]
    held_out: dict[str, list[Path]]
    groups: dict[Path, int] = field(default_factory=dict)  # near-duplicate / session group of every photo

    def is_held_out(self, path: Path) -> bool:
        return Path(path) in self._held

    @property
    def _held(self) -> set[Path]:
        return {p for paths in self.held_out.values() for p in paths}

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"train": len(self.train[s]), "held_out": len(self.held_out[s])} for s in self.train}

    def carve(self, fraction: float, sources: Sequence[str], seed: int = 0) -> tuple[HeldOutSplit, dict]:
        """Split the training photos of ``sources`` again, groups whole (across sets too): (the rest, {source:
        carved photos}). For a development set (checkpoint choice) that is neither training nor held-out."""
        rng, picked = random.Random(seed), set()
        for source in sources:
            order = sorted({self._group(p) for p in self.train[source]})
            rng.shuffle(order)
            target = round(fraction * len(self.train[source]))
            for g in order:
                if sum(self._group(p) in picked for p in self.train[source]) >= target:
                    break
                picked.add(g)
        rest = {
            s: [p for p in paths if s not in sources or self._group(p) not in picked] for s, paths in self.train.items()
        }
        carved = {s: [p for p in self.train[s] if self._group(p) in picked] for s in sources}
        return HeldOutSplit(rest, self.held_out, self.groups), carved

    def _group(self, path: Path) -> int | str:
        return self.groups.get(path, str(path))

    def save(self, path: Path) -> None:
        data = {"train": _as_names(self.train), "held_out": _as_names(self.held_out), "counts": self.counts()}
        Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _as_names(by_source: dict[str, list[Path]]) -> dict[str, list[str]]:
    return {s: [str(p) for p in paths] for s, paths in by_source.items()}


# --- listing the sets ----------------------------------------------------------------------------


def list_sets(shared: Path) -> dict[str, list[Path]]:
    """Every photo of each shared set (by source tag); sets that are absent give empty lists."""
    data = Path(shared) / "data"
    return {tag: list_images(data / folder) if (data / folder).is_dir() else [] for tag, folder in SETS.items()}


def session_key(source: str, path: Path) -> str | None:
    """Photos of one car listing or shooting session share a key (lensor file names only); None when unknown."""
    if source != "lensor":
        return None
    name = Path(path).name
    if match := re.match(r"^(\d{5,})-", name):  # "8723259-renault-...": a listing id
        return f"listing-{match.group(1)}"
    if match := re.match(r"^(.*-\d{10})_\d+", name):  # "...-vitara-brezza-2018-1726908562_07": one shoot
        return f"shoot-{match.group(1)}"
    if match := re.match(r"^(\d{4})_", name):  # "0108_JPEG...": numbered in shooting order, sessions are runs
        return f"run-{int(match.group(1)) // 10}"
    return None


# --- groups --------------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(j)] = self.find(i)


def cached_hashes(paths: Sequence[Path], cache: Path | None) -> np.ndarray:
    """pHash of each photo, (N, 64) bool; reuses a cache file keyed by path, size and modification time."""
    stored = json.loads(cache.read_text()) if cache and cache.exists() else {}
    keys = [f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in paths]
    missing = [i for i, k in enumerate(keys) if k not in stored]
    for i, row in zip(missing, perceptual_hashes([paths[i] for i in missing]), strict=True):
        stored[keys[i]] = np.packbits(row).tobytes().hex()
    if cache and missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored))
    rows = [np.unpackbits(np.frombuffer(bytes.fromhex(stored[k]), dtype=np.uint8)).astype(bool) for k in keys]
    return np.stack(rows) if rows else np.zeros((0, 64), dtype=bool)


def photo_groups(
    sources: Sequence[str], paths: Sequence[Path], hash_cache: Path | None = None, max_distance: int = HASH_DISTANCE
) -> list[int]:
    """A group id per photo: pHash near-duplicates (across all sets) and same-session photos share one."""
    union = _UnionFind(len(paths))
    hashed = [i for i, s in enumerate(sources) if s not in UNHASHED]
    hashes = cached_hashes([paths[i] for i in hashed], hash_cache)
    for k, i in enumerate(hashed):
        close = np.nonzero((hashes[k + 1 :] != hashes[k]).sum(axis=1) <= max_distance)[0] + k + 1
        for m in close:
            union.union(i, hashed[int(m)])
    first_of_session: dict[str, int] = {}
    for i, (source, path) in enumerate(zip(sources, paths, strict=True)):
        key = session_key(source, path)
        if key is not None:
            union.union(first_of_session.setdefault(key, i), i)
    return [union.find(i) for i in range(len(paths))]


# --- the held-out split --------------------------------------------------------------------------


def in_folder(path: Path, name: str) -> bool:
    return name in Path(path).parts


def choose_held_out_groups(
    sources: Sequence[str],
    paths: Sequence[Path],
    groups: Sequence[int],
    fractions: dict[str, float] = HELD_OUT_FRACTION,
    seed: int = 0,
) -> set[int]:
    """The held-out groups, by the rules of the module docstring."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    held = {groups[i] for i, s in enumerate(sources) if s == "imagenet" or (s == "vds" and in_folder(paths[i], "val"))}
    pinned = {groups[i] for i, s in enumerate(sources) if s == "vds" and not in_folder(paths[i], "val")} - held
    held |= {groups[i] for i, s in enumerate(sources) if s == "yb" and in_folder(paths[i], "valid")} - pinned
    rng = random.Random(seed)
    for source, fraction in fractions.items():
        indices = [i for i, s in enumerate(sources) if s == source]
        target = round(fraction * len(indices))
        candidates = sorted({groups[i] for i in indices} - held - pinned)
        rng.shuffle(candidates)
        count = sum(groups[i] in held for i in indices)
        for g in candidates:
            if count >= target:
                break
            held.add(g)
            count += sum(sources[i] == source for i in members[g])
    return held


def held_out_split(shared: Path, seed: int = 0, hash_cache: Path | None = None) -> HeldOutSplit:
    """The one split every model of the build and every evaluation uses."""
    sets = list_sets(shared)
    sources = [tag for tag, paths in sets.items() for _ in paths]
    paths = [p for ps in sets.values() for p in ps]
    groups = photo_groups(sources, paths, hash_cache)
    held = choose_held_out_groups(sources, paths, groups, seed=seed)
    train: dict[str, list[Path]] = {tag: [] for tag in sets}
    held_out: dict[str, list[Path]] = {tag: [] for tag in sets}
    for source, path, group in zip(sources, paths, groups, strict=True):
        (held_out if group in held else train)[source].append(path)
    return HeldOutSplit(train, held_out, dict(zip(paths, groups, strict=True)))


# --- readers of the sets with labels -------------------------------------------------------------


def read_damage_polygons(shared: Path, source: str) -> list[Sample]:
    """nm / pd (VIA, one class "damage") or lensor (COCO, "<grade>-<type>"; the super-category is dropped)."""
    from train.prepare import read_coco, read_via

    folder = Path(shared) / "data" / SETS[source]
    if source == "lensor":
        return read_coco(folder / "annotations.json", skip=("_background_", "severity-damage"))
    return read_via(folder / "train" / "via_region_data.json")


def worst_grade(sample: Sample) -> str | None:
    """A lensor photo's grade: its worst annotated severity (None without graded polygons)."""
    found = [GRADES.index(name.split("-")[0]) for name, _ in sample.polygons if name.split("-")[0] in GRADES]
    return GRADES[max(found)] if found else None


def read_yolo_seg(images: Path, names: Sequence[str]) -> list[Sample]:
    """A YOLO-seg folder (``images/`` beside ``labels/``) back into samples with absolute polygons."""
    from train.prepare import image_size, yolo_to_polygon

    samples = []
    for image in list_images(images):
        label = images.parent / "labels" / f"{image.stem}.txt"
        lines = label.read_text(encoding="utf-8").splitlines() if label.exists() else []
        width, height = image_size(image)
        polygons = [yolo_to_polygon(line, width, height) for line in lines if len(line.split()) >= 7]
        samples.append(Sample(image, [(names[c], p) for c, p in polygons]))
    return samples


def read_yb(shared: Path) -> list[Sample]:
    """yb-damaged-parts-yolo, both of its folders (the held-out split decides, not the export's folders)."""
    import yaml

    root = Path(shared) / "data" / SETS["yb"]
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    return [s for folder in ("train", "valid") for s in read_yolo_seg(root / folder / "images", names)]


def keep(samples: Iterable[Sample], paths: Iterable[Path]) -> list[Sample]:
    """The samples whose photo is among ``paths`` (e.g. a source's training photos)."""
    wanted = set(paths)
    return [s for s in samples if s.image in wanted]
