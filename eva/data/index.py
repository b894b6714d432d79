"""Index stage: read a benchmark's official annotation files into one table of labelled clips.

Every dataset ends up in the same shape (`INDEX_SCHEMA` below, the one definition): one row per clip with
`video_id, path, label, label_name, split, start, end`, splits named `train` and `val`, rows sorted by
(split, video_id). Readers follow each benchmark's official files and split definitions so accuracies
stay comparable with published numbers; all quirks of the real files (CRLF line endings, HMDB names with
brackets, SSv2 templates with "[Something]", ActivityNet segments ending after the video) are handled
here, once.

Videos named by the annotations but absent under `dataset.root` are dropped and reported (a partial
download still yields a usable index); only an index with nothing usable left is an error. Existence is
checked against one directory listing per folder, never one `stat` per candidate name, so SSv2's 220k
videos cost a single `scandir`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from eva.config import (
    OPTIONAL_TEXT,
    TEXT,
    check,
    check_fields,
    invalid,
    number,
    one_of,
    section_values,
    setting,
)

log = logging.getLogger(__name__)

DATASETS = ("demo", "ucf101", "hmdb51", "ssv2", "k400", "activitynet", "folder")
DATASET_NAME = one_of(
    *DATASETS
)  # `dataset.name`: DatasetConfig's rule, also for the stages that only record it
SPLITS = ("train", "val")
OFFICIAL_SPLITS = (1, 2, 3)  # UCF101 and HMDB51 both define three train/test splits
MISSING_LISTED = 100  # how many missing paths metrics/index.json lists (the count is always complete)

# Extensions tried, in this order, when the annotations name a video without its container.
VIDEO_EXTENSIONS = ("webm", "mp4", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "wmv", "flv")

# Official Something-Something V2 file names; the demo dataset writes the same names so one reader serves both.
SSV2_LABELS = "something-something-v2-labels.json"
SSV2_SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "val": "something-something-v2-validation.json",
}

# Kinetics-400 (CVDF release `kinetics400.tar.gz`): train.csv / validate.csv, "label,youtube_id,time_start,
# time_end,split"; the 2017 release names them kinetics_train.csv / kinetics_val.csv. Split folders on disk.
KINETICS_SPLIT_FILES = {
    "train": ("train.csv", "kinetics_train.csv"),
    "val": ("validate.csv", "kinetics_val.csv"),
}
KINETICS_SPLIT_DIRS = {"train": ("train", "train_256"), "val": ("val", "validate", "val_256")}

ACTIVITYNET_JSON = "activity_net.v1-3.min.json"
ACTIVITYNET_SUBSETS = {"training": "train", "validation": "val"}  # "testing" has no labels

INDEX_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
    ]
)


VAL_FRACTION = number(0, below=1)


@dataclass(frozen=True)
class DatasetConfig:
    """The `dataset` section of params.yaml: which benchmark, where its videos and annotation files are."""

    name: str = setting(rule=DATASET_NAME)
    root: str = setting(rule=TEXT)  # folder holding the videos
    annotations: str | None = setting(rule=OPTIONAL_TEXT)  # official annotation files ("" for plain folders)
    split: int | str | None = 1  # official split of ucf101 / hmdb51 (checked there); ignored elsewhere
    class_list: str | None = setting(default="", rule=OPTIONAL_TEXT)  # activitynet only
    val_fraction: float = setting(default=0.2, rule=VAL_FRACTION)  # folder data without train/val lists

    def __post_init__(self) -> None:
        check_fields(self, "dataset")
        if self.name in ("ucf101", "hmdb51"):
            _official_split(self.split, self.name)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DatasetConfig:
        return cls(**section_values(cls, params, "dataset"))


@dataclass(frozen=True)
class _Clip:
    """One annotated clip before its file is looked up: `candidates` are paths relative to the root,
    most likely first (several when the container or the folder convention is not fixed)."""

    video_id: str
    candidates: tuple[str, ...]
    label_name: str
    split: str
    start: float | None = None
    end: float | None = None


@dataclass
class IndexResult:
    """The index of one dataset: the table written to parquet, the class names, and what was dropped."""

    dataset: str
    split: int | None
    table: pa.Table
    classes: list[str]
    missing: list[str]  # root-joined paths of annotated videos not found on disk (all of them)
    annotated: dict[str, int]  # clips per split named by the annotations, before the existence check
    stats: dict[str, Any] = field(default_factory=dict)  # reader-specific counts (e.g. clamped segments)

    @property
    def counts(self) -> dict[str, int]:
        splits = self.table.column("split").to_pylist()
        return {name: splits.count(name) for name in SPLITS}

    def metrics(self) -> dict[str, Any]:
        """What `metrics/index.json` holds: small, stable, diffable with `dvc metrics diff`."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "counts": self.counts,
            "annotated": dict(self.annotated),
            "classes": len(self.classes),
            "missing": {"count": len(self.missing), "videos": self.missing[:MISSING_LISTED]},
            **self.stats,
        }


def build_index(
    name: str,
    root: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    split: int | str | None = 1,
    class_list: str | os.PathLike[str] | None = "",
    *,
    val_fraction: float = 0.2,
    check_exists: bool = True,
) -> IndexResult:
    """Index dataset `name` (params `dataset.*`). `check_exists=False` keeps every annotated clip without
    looking at the disk (paths then use the dataset's default file name), for counting annotations alone."""
    check("dataset.name", name, DATASET_NAME)
    check("dataset.val_fraction", val_fraction, VAL_FRACTION)
    root = Path(root)
    annotations = Path(annotations) if str(annotations or "") else None
    class_list = Path(class_list) if str(class_list or "") else None
    if class_list is not None and name != "activitynet":
        log.warning("dataset.class_list=%s is only read for activitynet; ignored for %s", class_list, name)

    official_split: int | None = None
    stats: dict[str, Any] = {}
    if name == "ucf101":
        official_split = _official_split(split, name)
        classes, clips = _read_ucf101(_require_dir(annotations, name), official_split)
    elif name == "hmdb51":
        official_split = _official_split(split, name)
        classes, clips = _read_hmdb51(_require_dir(annotations, name), official_split, stats)
    elif name in ("ssv2", "demo"):
        classes, clips = _read_ssv2(_require_dir(annotations, name))
    elif name == "k400":
        classes, clips = _read_kinetics(_require_dir(annotations, name))
    elif name == "activitynet":
        classes, clips = _read_activitynet(_require_path(annotations, name), class_list, stats)
    else:
        classes, clips = _read_folder(root, annotations, float(val_fraction))

    annotated = {s: sum(c.split == s for c in clips) for s in SPLITS}
    if not clips:
        raise ValueError(
            f"dataset.annotations={annotations} names no labelled {name} videos; nothing to index"
        )
    _check_unique(clips, name)

    if check_exists:
        kept, missing = _locate(clips, root)
    else:
        kept, missing = [(clip, clip.candidates[0]) for clip in clips], []

    if not kept:
        raise ValueError(
            f"no usable {name} videos: all {len(missing)} videos named in dataset.annotations={annotations} "
            f"are missing under dataset.root={root} (first: {missing[0]}); point dataset.root at the folder "
            f"holding the videos"
        )
    if missing:
        log.warning("%d annotated %s videos are missing on disk (listed in metrics)", len(missing), name)

    label_of = {c: i for i, c in enumerate(classes)}
    kept.sort(key=lambda item: (item[0].split, item[0].video_id))
    table = pa.table(
        {
            "video_id": [c.video_id for c, _ in kept],
            "path": [str(root / rel) for _, rel in kept],
            "label": [label_of[c.label_name] for c, _ in kept],
            "label_name": [c.label_name for c, _ in kept],
            "split": [c.split for c, _ in kept],
            "start": [c.start for c, _ in kept],
            "end": [c.end for c, _ in kept],
        },
        schema=INDEX_SCHEMA,
    )
    stats["classes_without"] = _classes_without(table, classes)
    result = IndexResult(name, official_split, table, list(classes), missing, annotated, stats)
    for s, n in result.counts.items():
        if n == 0:
            log.warning("%s has no usable %s videos", name, s)
    for s, empty in stats["classes_without"].items():
        if empty["count"]:
            log.warning(
                "%d %s classes have no %s video (e.g. %s); listed in metrics",
                empty["count"], name, s, ", ".join(empty["classes"][:3]),
            )  # fmt: skip
    log.info("indexed %s: %s, %d classes, %d missing", name, result.counts, len(classes), len(missing))
    return result


def _classes_without(table: pa.Table, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per split, the classes with no usable video: a model cannot learn (or be scored on) them."""
    names = table.column("label_name").to_pylist()
    splits = table.column("split").to_pylist()
    out = {}
    for s in SPLITS:
        present = {n for n, sp in zip(names, splits, strict=True) if sp == s}
        absent = [c for c in classes if c not in present]
        out[s] = {"count": len(absent), "classes": absent[:MISSING_LISTED]}
    return out


def _locate(clips: Sequence[_Clip], root: Path) -> tuple[list[tuple[_Clip, str]], list[str]]:
    """Pair each clip with its file as found under `root`; list (root-joined, once) the files not found."""
    listing = _DirectoryListing(root)
    found: dict[str, str | None] = {}
    kept: list[tuple[_Clip, str]] = []
    missing: list[str] = []
    for clip in clips:
        first = clip.candidates[0]
        if first not in found:  # ActivityNet: several segments share one file, looked up and reported once
            found[first] = next((r for r in map(listing.find, clip.candidates) if r is not None), None)
            if found[first] is None:
                missing.append(str(root / first))
        if (rel := found[first]) is not None:
            kept.append((clip, rel))
    return kept, missing


def read_index(path: str | os.PathLike[str]) -> pa.Table:
    """Read an index parquet written by the index stage, checking it has the contract's columns."""
    table = pq.read_table(path)
    absent = [f.name for f in INDEX_SCHEMA if f.name not in table.column_names]
    if absent:
        raise ValueError(f"{path} is not an index (missing columns {absent}); re-run the index stage")
    return table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)


# --------------------------------------------------------------------------- parameter checks


def _official_split(split: int | str | None, name: str) -> int:
    # Accept 2 and "2" (both come out of params.yaml / `-S`), nothing else: 2.5 or True is a typo.
    value = int(split) if isinstance(split, int | str) and str(split).strip().isdigit() else None
    if isinstance(split, bool) or value not in OFFICIAL_SPLITS:
        raise invalid("dataset.split", f"1, 2 or 3 for {name} (its official splits)", split)
    return value


def _require_path(annotations: Path | None, name: str) -> Path:
    if annotations is None or not annotations.exists():
        raise FileNotFoundError(
            f"dataset.annotations={annotations} does not exist; expected the {name} annotation files there"
        )
    return annotations


def _require_dir(annotations: Path | None, name: str) -> Path:
    if not _require_path(annotations, name).is_dir():
        raise FileNotFoundError(
            f"dataset.annotations={annotations} is not a folder; expected the folder "
            f"holding the {name} annotation files"
        )
    return annotations  # type: ignore[return-value]


def _require_file(folder: Path, filename: str, name: str, expected: str) -> Path:
    path = folder / filename
    if not path.is_file():
        raise FileNotFoundError(f"dataset.annotations={folder} has no {filename}; expected {expected}")
    return path


def _subfolder_holding(annotations: Path, subfolder: str, pattern: str) -> Path:
    """The folder with the annotation files: the given one, or the official archive's subfolder inside it."""
    nested = annotations / subfolder
    if not any(annotations.glob(pattern)) and nested.is_dir():
        return nested
    return annotations


def _check_unique(clips: Sequence[_Clip], name: str) -> None:
    seen: set[str] = set()
    dupes = []
    for clip in clips:
        if clip.video_id in seen:
            dupes.append(clip.video_id)
        seen.add(clip.video_id)
    if dupes:
        raise ValueError(
            f"dataset.annotations lists {len(dupes)} {name} videos twice (e.g. {dupes[:3]}); "
            f"each video must be in one split once"
        )


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines with surrounding whitespace removed (CRLF and trailing spaces in official files)."""
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]


def _load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _with_extensions(stems: Iterable[str], usual: str) -> tuple[str, ...]:
    """Candidate file names: every stem with the dataset's usual container first, then the others."""
    extensions = (usual, *(e for e in VIDEO_EXTENSIONS if e != usual))
    return tuple(f"{stem}.{ext}" for ext in extensions for stem in stems)


# --------------------------------------------------------------------------- readers


def _read_ucf101(annotations: Path, split: int) -> tuple[list[str], list[_Clip]]:
    """ucfTrainTestlist: classInd.txt ("1 ApplyEyeMakeup"), trainlist0N.txt ("Class/v_x.avi 1"),
    testlist0N.txt ("Class/v_x.avi", no label: it comes from the class folder)."""
    folder = _subfolder_holding(annotations, "ucfTrainTestlist", "classInd.txt")
    expected = "UCF101's ucfTrainTestlist files (classInd.txt, trainlist0N.txt, testlist0N.txt)"
    class_ind = _require_file(folder, "classInd.txt", "ucf101", expected)
    numbered = {}
    for line in _read_lines(class_ind):
        number, class_name = line.split(maxsplit=1)
        numbered[int(number)] = class_name
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise ValueError(f"{class_ind}: class numbers must run 1..{len(numbered)}")
    classes = [numbered[i] for i in range(1, len(numbered) + 1)]
    known = set(classes)

    clips = []
    for split_name, filename in (("train", f"trainlist0{split}.txt"), ("val", f"testlist0{split}.txt")):
        path = _require_file(folder, filename, "ucf101", expected)
        for line in _read_lines(path):
            rel, *number = line.split()
            class_name, _, filename_ = rel.partition("/")
            if class_name not in known or not filename_:
                raise ValueError(f"{path}: {rel!r} is not <class>/<video> with a class from classInd.txt")
            if number and numbered.get(int(number[0])) != class_name:
                raise ValueError(f"{path}: {rel!r} is numbered {number[0]} but its folder is {class_name}")
            # The official archive keeps class folders; some copies are flat, so try the bare name too.
            clips.append(_Clip(Path(filename_).stem, (rel, filename_), class_name, split_name))
    return classes, clips


def _read_hmdb51(annotations: Path, split: int, stats: dict[str, Any]) -> tuple[list[str], list[_Clip]]:
    """testTrainMulti_7030_splits/<class>_test_split<N>.txt: "<video>.avi <0|1|2>" with
    1 = train, 2 = test (our `val`), 0 = not used by this split (dropped)."""
    suffix = f"_test_split{split}.txt"
    folder = _subfolder_holding(annotations, "testTrainMulti_7030_splits", f"*{suffix}")
    files = sorted(folder.glob(f"*{suffix}"))
    if not files:
        raise FileNotFoundError(
            f"dataset.annotations={annotations} has no *{suffix}; expected HMDB51's testTrainMulti_7030_splits "
            f"files (<class>_test_split1..3.txt), directly or in a testTrainMulti_7030_splits/ subfolder"
        )
    classes = sorted(f.name[: -len(suffix)] for f in files)
    clips, unused = [], 0
    for path in files:
        class_name = path.name[: -len(suffix)]
        for line in _read_lines(path):
            video, _, code = line.rpartition(" ")
            video = video.strip()
            if code not in ("0", "1", "2") or not video:
                raise ValueError(f"{path}: expected '<video>.avi <0|1|2>', got {line!r}")
            if code == "0":
                unused += 1
                continue
            clips.append(
                _Clip(
                    Path(video).stem,
                    (f"{class_name}/{video}", video),
                    class_name,
                    "train" if code == "1" else "val",
                )
            )
    stats["unused"] = unused
    return classes, clips


def ssv2_template_key(template: str) -> str:
    """The official conversion (TSM / the dataset's own scripts): drop the brackets, keep the words."""
    return template.replace("[", "").replace("]", "")


def _read_ssv2(annotations: Path) -> tuple[list[str], list[_Clip]]:
    """Something-Something V2: labels json {template: "id"} and per-split lists of
    {"id", "template": "Putting [something] on [something]", ...}; video file <root>/<id>.webm
    (any container in VIDEO_EXTENSIONS is accepted: the demo writes mp4)."""
    expected = f"Something-Something V2's {SSV2_LABELS} and {', '.join(SSV2_SPLIT_FILES.values())}"
    labels_path = _require_file(annotations, SSV2_LABELS, "ssv2", expected)
    ids = {template: int(i) for template, i in _load_json(labels_path).items()}
    if sorted(ids.values()) != list(range(len(ids))):
        raise ValueError(f"{labels_path}: label ids must be 0..{len(ids) - 1}, each once")
    classes = [""] * len(ids)
    for template, i in ids.items():
        classes[i] = template
    # Fallback for files whose capitalisation or spacing drifted from the labels json.
    loose = {" ".join(t.lower().split()): t for t in ids}

    clips = []
    for split_name, filename in SSV2_SPLIT_FILES.items():
        path = _require_file(annotations, filename, "ssv2", expected)
        for entry in _load_json(path):
            key = ssv2_template_key(entry["template"])
            if key not in ids:
                key = loose.get(" ".join(key.lower().split()), key)
            if key not in ids:
                raise ValueError(
                    f"{path}: video {entry['id']} has template {entry['template']!r}, which is not "
                    f"in {labels_path.name}"
                )
            video_id = str(entry["id"])
            clips.append(_Clip(video_id, _with_extensions([video_id], usual="webm"), key, split_name))
    return classes, clips


def kinetics_clip_name(youtube_id: str, start: float, end: float) -> str:
    """The file stem every Kinetics downloader writes: `<youtube_id>_<start:06d>_<end:06d>`."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def _read_kinetics(annotations: Path) -> tuple[list[str], list[_Clip]]:
    """Kinetics-400: per split a csv "label,youtube_id,time_start,time_end,split" (a header row; labels such
    as "passing American football (in game)" hold spaces and brackets). Classes are the train csv's labels,
    sorted (the order every K400 codebase uses). A clip's file is `<youtube_id>_<start>_<end>` with any
    container, found in `<split dir>/<label>/` (the crawler layout, label with spaces or underscores),
    `<split dir>/` (the CVDF layout), `<label>/` or the root itself."""
    expected = "Kinetics-400's train.csv and validate.csv"
    clips = []
    for split_name, filenames in KINETICS_SPLIT_FILES.items():
        path = next((annotations / f for f in filenames if (annotations / f).is_file()), None)
        if path is None:
            path = _require_file(annotations, filenames[0], "k400", expected)  # raises, naming the files
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        absent = {"label", "youtube_id", "time_start", "time_end"} - set(rows[0] if rows else {})
        if absent:
            raise ValueError(
                f"{path}: expected the columns label,youtube_id,time_start,time_end; missing {sorted(absent)}"
            )
        for row in rows:
            label = row["label"].strip()
            start, end = float(row["time_start"]), float(row["time_end"])
            stem = kinetics_clip_name(row["youtube_id"], start, end)
            folders = [
                *(
                    f"{d}/{lab}"
                    for d in KINETICS_SPLIT_DIRS[split_name]
                    for lab in (label, label.replace(" ", "_"))
                ),
                *KINETICS_SPLIT_DIRS[split_name],
                label,
                label.replace(" ", "_"),
            ]
            stems = [f"{folder}/{stem}" for folder in folders] + [stem]
            clips.append(_Clip(stem, _with_extensions(stems, usual="mp4"), label, split_name))
    classes = sorted({c.label_name for c in clips if c.split == "train"})
    unknown = sorted({c.label_name for c in clips} - set(classes))
    if unknown:
        raise ValueError(f"{annotations}: validation labels absent from the train csv: {unknown[:5]}")
    return classes, clips


def _activitynet_file(annotations: Path) -> Path:
    if annotations.is_file():
        return annotations
    preferred = annotations / ACTIVITYNET_JSON
    if preferred.is_file():
        return preferred
    found = sorted(annotations.glob("activity_net*.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"dataset.annotations={annotations} has no {ACTIVITYNET_JSON} (or other "
            f"activity_net*.json); expected ActivityNet v1.3's annotation json"
        )
    raise ValueError(
        f"dataset.annotations={annotations} holds several activity_net*.json "
        f"({[f.name for f in found]}); set dataset.annotations to the one json file to use"
    )


def _read_class_list(path: Path) -> list[str]:
    """One label per line, or a csv whose `action` column holds the labels (ActivityNet's action_name.csv)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset.class_list={path} does not exist; expected a file with one class "
            f"name per line, or a csv with an `action` column"
        )
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        column = rows[0].index("action") if rows and "action" in rows[0] else 0
        names = [row[column].strip() for row in rows[1:] if row and row[column].strip()]
    else:
        names = _read_lines(path)
    if len(set(names)) != len(names) or not names:
        raise ValueError(
            f"dataset.class_list={path} must name each class once (got {len(names)} lines, "
            f"{len(set(names))} distinct)"
        )
    return names


def _taxonomy_leaves(taxonomy: list[dict[str, Any]]) -> list[str]:
    """ActivityNet's 200 classes are the taxonomy's leaves: nodes that are no other node's parent."""
    parents = {node.get("parentId") for node in taxonomy}
    return sorted({node["nodeName"] for node in taxonomy if node["nodeId"] not in parents})


def _read_activitynet(
    annotations: Path, class_list: Path | None, stats: dict[str, Any]
) -> tuple[list[str], list[_Clip]]:
    """ActivityNet v1.3 json: each annotated segment becomes one trimmed clip `<id>_<segment index>`.

    Segments are clamped to the video's duration (the official file has ends past it) and dropped when
    empty. Classes, in order of precedence: `dataset.class_list` when set (an explicit param is never
    silently overridden), the taxonomy leaves when the json carries a taxonomy, else the sorted labels.
    """
    path = _activitynet_file(annotations)
    data = _load_json(path)
    database = data.get(
        "database", data
    )  # the official file nests videos under "database"; mmaction's gt does not
    clips, segments, clamped, dropped = [], 0, 0, 0
    skipped: dict[str, int] = {}
    for raw_id in sorted(database):
        video = database[raw_id]
        split = ACTIVITYNET_SUBSETS.get(video.get("subset", ""))
        if split is None:
            skipped[video.get("subset", "")] = skipped.get(video.get("subset", ""), 0) + 1
            continue
        duration = float(video.get("duration") or 0.0)
        stems = [raw_id] if raw_id.startswith("v_") else [f"v_{raw_id}", raw_id]
        candidates = _with_extensions(stems, usual="mp4")
        for i, annotation in enumerate(video.get("annotations", [])):
            segments += 1
            start, end = (float(t) for t in annotation["segment"])
            start = max(start, 0.0)
            if duration > 0 and end > duration:
                end, clamped = duration, clamped + 1
            if end <= start:
                dropped += 1
                continue
            clips.append(_Clip(f"{raw_id}_{i}", candidates, annotation["label"], split, start, end))

    labels = {c.label_name for c in clips}
    if class_list is not None:
        classes, source, param = (
            _read_class_list(class_list),
            "class_list",
            f"dataset.class_list={class_list}",
        )
    elif data.get("taxonomy"):
        classes, source, param = _taxonomy_leaves(data["taxonomy"]), "taxonomy", f"the taxonomy of {path}"
    else:
        classes, source, param = sorted(labels), "annotations", str(path)
    unknown = sorted(labels - set(classes))
    if unknown:
        raise ValueError(
            f"{path} uses labels that {param} does not list: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}"
        )
    stats.update(
        class_source=source,
        segments={"annotated": segments, "clamped": clamped, "dropped_empty": dropped},
        skipped_videos=skipped,
    )
    return classes, clips


def _read_folder(root: Path, annotations: Path | None, val_fraction: float) -> tuple[list[str], list[_Clip]]:
    """Users' own data, <root>/<class>/<video>: classes are the sorted class folders.

    Split: `<annotations>/train.txt` and `val.txt` (one path relative to the root per line) when present;
    otherwise stratified per class (`stratified_split`), so every class with two or more videos has
    both a training and a validation video, whatever the dataset size.
    """
    lists = {s: annotations / f"{s}.txt" for s in SPLITS} if annotations is not None else {}
    present = [s for s, p in lists.items() if p.is_file()]
    if present and len(present) != len(SPLITS):
        raise FileNotFoundError(
            f"dataset.annotations={annotations} has {present[0]}.txt but no "
            f"{'val' if present[0] == 'train' else 'train'}.txt; expected both lists or neither"
        )
    if present:
        listed = [(s, rel.replace("\\", "/")) for s in SPLITS for rel in _read_lines(lists[s])]
        bad = [rel for _, rel in listed if "/" not in rel]
        if bad:
            raise ValueError(
                f"{lists['train'].parent}: list lines must be <class>/<video> relative to "
                f"dataset.root; got {bad[0]!r}"
            )
    else:
        if not root.is_dir():
            raise FileNotFoundError(
                f"dataset.root={root} does not exist; expected <root>/<class>/<video files>"
            )
        log.info(
            "no train.txt/val.txt in dataset.annotations=%r: stratified split, dataset.val_fraction=%s per class",
            str(annotations or ""), val_fraction,
        )  # fmt: skip
        found = _scan_class_folders(root)
        split_of = stratified_split(found, val_fraction)
        listed = [(split_of[rel], rel) for rel in found]
    classes = sorted({rel.split("/", 1)[0] for _, rel in listed})
    clips = [_Clip(rel, (rel,), rel.split("/", 1)[0], s) for s, rel in listed]
    return classes, clips


def _scan_class_folders(root: Path) -> list[str]:
    suffixes = {f".{ext}" for ext in VIDEO_EXTENSIONS}
    found = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for video in sorted(class_dir.iterdir()):
            if video.is_file() and not video.name.startswith(".") and video.suffix.lower() in suffixes:
                found.append(f"{class_dir.name}/{video.name}")
    return found


def stratified_split(rels: Sequence[str], val_fraction: float) -> dict[str, str]:
    """`<class>/<video>` -> "train" | "val": per class, `round(n * val_fraction)` videos go to val,
    at least one and at most n - 1 when the class has two or more videos (and val_fraction > 0).

    Which ones is decided by a hash of each path, never by the listing order or the machine: the same
    files always give the same split, and adding a video to a class moves at most one other video.
    """
    by_class: dict[str, list[str]] = {}
    for rel in rels:
        by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    split = {}
    for videos in by_class.values():
        ranked = sorted(videos, key=lambda rel: (hashlib.sha1(rel.encode("utf-8")).digest(), rel))
        n_val = round(len(ranked) * val_fraction)
        if val_fraction > 0 and len(ranked) >= 2:
            n_val = min(max(n_val, 1), len(ranked) - 1)
        for i, rel in enumerate(ranked):
            split[rel] = "val" if i < n_val else "train"
    return split


class _DirectoryListing:
    """Existence checks from one `scandir` per folder (cached), with a case-insensitive fallback for
    copies whose capitalisation drifted (e.g. UCF101's HandstandPushups / v_HandStandPushups_*)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[frozenset[str], dict[str, str]]] = {}

    def _names(self, rel_dir: str) -> tuple[frozenset[str], dict[str, str]]:
        if rel_dir not in self._cache:
            try:
                with os.scandir(self.root / rel_dir) as entries:
                    names = frozenset(e.name for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            self._cache[rel_dir] = (names, {n.lower(): n for n in sorted(names, reverse=True)})
        return self._cache[rel_dir]

    def find(self, rel: str) -> str | None:
        """`rel` as it exists on disk (relative to the root), or None."""
        resolved: list[str] = []
        for part in rel.split("/"):
            names, lowered = self._names("/".join(resolved))
            actual = part if part in names else lowered.get(part.lower())
            if actual is None:
                return None
            resolved.append(actual)
        return "/".join(resolved)
