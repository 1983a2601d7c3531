"""One vehicle, many photos: which vehicle each file belongs to, and a vehicle's answer from its photos' answers.

Grouping: each top-level folder of an input (a zip, or a folder given to the command line) is one vehicle, and a
photo at the top level is a vehicle of its own, named by its file name. A ``vehicles.csv`` in the input (columns
``file`` and ``vehicle``) overrides the folders for the files it names: exports often put every photo in one
folder. A vehicles.csv that cannot be trusted whole (not CSV, over 1 MB, naming files the input does not hold) is
ignored, and the note saying why goes into the summary.

Aggregation works on the photos' rows (and their damages' part, grade and confidence), not on analyses, so every
engine gets the same answer: the local one as it goes, the Ray engine from its results after the run (a vehicle's
photos may have been analysed on different machines).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, VehiclesCsvError
from .formats import has_photo_suffix, is_system_file
from .results import GRADES, DamagedPart, Detection, ReportRow, Status, VehicleRow

VEHICLES_CSV = "vehicles.csv"
MAX_CSV_BYTES = 1_000_000
MAX_NAME_LENGTH = 200  # a vehicle name is a plate or a claim number, not a document

# ---------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Grouping:
    """Which vehicle each file of one input belongs to. ``root`` is the input's own prefix in the file names
    ('lot/' for a folder given to the command line): vehicle names keep it, as file names do, so two inputs
    never merge their vehicles."""

    root: str = ""
    by_file: Mapping[str, str] = field(default_factory=dict)  # vehicles.csv: file name as listed -> vehicle
    note: str = ""  # what became of the input's vehicles.csv ('' when it has none)

    def vehicle_of(self, name: str) -> str:
        if name in self.by_file:
            return self.root + self.by_file[name]
        return folder_vehicle(name, self.root)


def folder_vehicle(name: str, root: str = "") -> str:
    """The vehicle the folders say: 'root/AB-123-CD/front.jpg' -> 'root/AB-123-CD'; 'root/front.jpg' -> itself."""
    relative = name[len(root) :] if root and name.startswith(root) else name
    head, separator, _ = relative.replace("\\", "/").lstrip("/").partition("/")
    return (root + head) if separator else name


def grouping_of(names: Sequence[str], read: Callable[[str], bytes], root: str = "") -> Grouping:
    """The grouping of one input from its file names; ``read(name)`` gives at most ``MAX_CSV_BYTES`` + 1 bytes of
    a file (raising InputError when it cannot). Never raises for a bad vehicles.csv: it is ignored, with a note."""
    csv_name = grouping_file(names, root)
    if not csv_name:
        return Grouping(root)
    try:
        by_file = parse_vehicles_csv(read(csv_name), csv_name[: -len(VEHICLES_CSV)], root, names)
    except InputError as exc:
        return Grouping(root, note=f"{csv_name} ignored ({exc}): the folders decide")
    return Grouping(root, by_file, note=f"{csv_name} used: it names the vehicle of {len(by_file)} file(s)")


def grouping_file(names: Sequence[str], root: str = "") -> str:
    """The input's vehicles.csv: at its top level, or in its only top-level folder; '' when there is none."""
    mine = [name for name in names if name.startswith(root) and not is_system_file(name)]
    relative = {name: name[len(root) :].replace("\\", "/") for name in mine}
    top = [name for name, rel in relative.items() if rel.casefold() == VEHICLES_CSV]
    if top:
        return top[0]
    folders = {rel.split("/", 1)[0] for rel in relative.values()}
    if len(folders) != 1 or not all("/" in rel for rel in relative.values()):
        return ""
    wanted = f"{folders.pop()}/{VEHICLES_CSV}".casefold()
    return next((name for name, rel in relative.items() if rel.casefold() == wanted), "")


def parse_vehicles_csv(data: bytes, folder: str, root: str, names: Sequence[str]) -> dict[str, str]:
    """file name as listed -> vehicle. ``file`` values are relative to the folder the CSV sits in (or to the
    input's top). Raises VehiclesCsvError for a file that cannot be trusted whole."""
    if len(data) > MAX_CSV_BYTES:
        raise VehiclesCsvError(f"larger than {MAX_CSV_BYTES / 1e6:.0f} MB")
    rows = _csv_rows(data)
    listed = {_key(name): name for name in names}
    by_file: dict[str, str] = {}
    missing: list[str] = []
    for line, file, vehicle in rows:
        name = listed.get(_key(folder + file)) or listed.get(_key(root + file))
        if name is None:
            missing.append(file)
        elif by_file.setdefault(name, vehicle) != vehicle:
            raise VehiclesCsvError(f"line {line} puts {file!r} in a second vehicle")
    if missing:
        shown = ", ".join(repr(name[:80]) for name in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise VehiclesCsvError(f"it names {len(missing)} file(s) not in the input: {shown}")
    return by_file


def _csv_rows(data: bytes) -> list[tuple[int, str, str]]:
    """(line, file, vehicle) of each row; VehiclesCsvError for anything that is not such a CSV."""
    try:
        text = data.decode("utf-8-sig")
        if "\x00" in text:
            raise VehiclesCsvError("not a CSV file (binary content)")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [cell.strip().casefold() for cell in next(reader, [])]
        if "file" not in header or "vehicle" not in header:
            raise VehiclesCsvError("not a CSV file with a header row naming the columns file and vehicle")
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise VehiclesCsvError("not a CSV file (not UTF-8 text)") from None
    except csv.Error as exc:
        raise VehiclesCsvError(f"not a CSV file ({exc})") from None
    column_of = {"file": header.index("file"), "vehicle": header.index("vehicle")}
    return [_csv_row(line, row, len(header), column_of) for line, row in rows]


def _csv_row(line: int, row: list[str], width: int, column_of: dict[str, int]) -> tuple[int, str, str]:
    if len(row) != width:
        raise VehiclesCsvError(f"not a CSV file (line {line} has {len(row)} fields, the header {width})")
    file = row[column_of["file"]].strip().replace("\\", "/").removeprefix("./").lstrip("/")
    vehicle = " ".join(row[column_of["vehicle"]].split())
    if not file or not vehicle:
        raise VehiclesCsvError(f"line {line} has an empty file or vehicle")
    if len(vehicle) > MAX_NAME_LENGTH or not vehicle.isprintable():
        raise VehiclesCsvError(f"line {line}: a vehicle name is one line of at most {MAX_NAME_LENGTH} characters")
    return line, file, vehicle


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name.replace("\\", "/"))


# ---------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class PartDamage:
    """One damaged area as a vehicle's answer needs it: its part, its own grade, its confidence."""

    part: str
    severity: str
    score: float

    @classmethod
    def of_detection(cls, detection: Detection) -> PartDamage:
        return cls(detection.part, detection.severity, round(detection.score, 5))  # as predictions.json has it

    @classmethod
    def of_coco(cls, prediction: dict[str, Any]) -> PartDamage:
        """From a predictions.json annotation (the Ray engine's results carry these)."""
        attributes = prediction.get("attributes") or {}
        return cls(str(attributes.get("part", "")), str(attributes.get("severity", "")), float(prediction["score"]))


@dataclass(frozen=True)
class PhotoFacts:
    """What a vehicle's answer takes from one file: its report row's verdicts and its damages."""

    file: str
    vehicle: str
    status: Status
    is_car: bool = False
    is_damaged: bool = False
    damage_score: float = 0.0
    severity: str = ""
    damages: tuple[PartDamage, ...] = ()
    parts: tuple[str, ...] = ()  # the report's damaged parts (those of the damages, and any named without a mask)

    @classmethod
    def of(cls, row: ReportRow, vehicle: str, damages: Iterable[PartDamage] = ()) -> PhotoFacts:
        verdicts = (row.is_car is True, row.is_damaged is True, row.damage_score or 0.0, row.severity)
        parts = tuple(part for part in row.damaged_parts.split(";") if part)
        return cls(row.file, vehicle, row.status, *verdicts, tuple(damages), parts)

    @property
    def is_photo(self) -> bool:
        """Whether it belongs to a vehicle: analysed, or a photo that could not be (a broken photo, or one the
        job stopped before). A folder of notes is no vehicle, nor are entries refused for safety (a '..' path
        would otherwise name one)."""
        if self.status in (Status.OK, Status.ERROR):
            return True
        return self.status == Status.NOT_PROCESSED and has_photo_suffix(self.file)


def vehicle_rows(photos: Iterable[PhotoFacts]) -> list[VehicleRow]:
    """One row per vehicle with at least one photo, in the order the vehicles first appear."""
    groups: dict[str, list[PhotoFacts]] = {}
    for photo in photos:
        if photo.is_photo:
            groups.setdefault(photo.vehicle, []).append(photo)
    return [vehicle_row(vehicle, group) for vehicle, group in groups.items()]


def vehicle_row(vehicle: str, photos: Sequence[PhotoFacts]) -> VehicleRow:
    """A vehicle's answer from its photos (each given once, in order)."""
    analysed = [photo for photo in photos if photo.status == Status.OK]
    damaged = [photo for photo in analysed if photo.is_damaged]
    parts = damaged_parts(damaged)
    most_damaged = max(damaged, key=lambda photo: photo.damage_score, default=None)
    return VehicleRow(
        vehicle=vehicle,
        photos=len(analysed),
        photos_with_car=sum(photo.is_car for photo in analysed),
        damaged=bool(damaged) if analysed else None,
        severity=worst_grade([photo.severity for photo in damaged] + [part.severity for part in parts]),
        parts=parts,
        damage_count=sum(len(photo.damages) for photo in damaged),
        photos_not_analysed=len(photos) - len(analysed),
        files=tuple(photo.file for photo in photos),
        most_damaged_photo=most_damaged.file if most_damaged else "",
    )


def damaged_parts(damaged: Iterable[PhotoFacts]) -> tuple[DamagedPart, ...]:
    """Each part a damage lies on, once (by name), with the worst grade seen on it (the damage's own grade, else
    its photo's) and the photo where a damage on it has the highest confidence (the first, on a tie). A part named
    without a mask counts with its photo's grade and damage score."""
    grades: dict[str, list[str]] = {}
    best: dict[str, tuple[float, str]] = {}
    for photo in damaged:
        masked = [(d.part, d.severity or photo.severity, d.score) for d in photo.damages if d.part]
        placed = {part for part, _, _ in masked}
        unmasked = [(part, photo.severity, photo.damage_score) for part in photo.parts if part not in placed]
        for part, grade, score in masked + unmasked:
            grades.setdefault(part, []).append(grade)
            if part not in best or score > best[part][0]:
                best[part] = (score, photo.file)
    return tuple(DamagedPart(part, worst_grade(grades[part]), best[part][1], best[part][0]) for part in sorted(best))


def worst_grade(grades: Iterable[str]) -> str:
    """The worst of the grades (minor < moderate < severe); '' when none is a grade."""
    return max((grade for grade in grades if grade in GRADES), key=GRADES.index, default="")
