"""Small annotation files in the four benchmarks' official formats, quirks included, written at test time.

They mirror `shared/datasets-meta/` (the real files) in layout and byte format, so every index reader
is tested on a fresh clone too; `Expected` says what the index must find in them, and `OFFICIAL` holds
the same numbers for the real files, whose exact-count tests run wherever those files exist.

Quirks reproduced: UCF101's CRLF lists, 1-based classInd, unlabeled test lists and the
`HandstandPushups/v_HandStandPushups_*` capital S; HMDB51's "<video>.avi <0|1|2> " lines with a
trailing space and names holding `[ ] ! ( ) &`; SSv2's {template: "id"} labels and bracketed templates
("[Something]", "[something in it]", "[somewhere]"); ActivityNet's ids starting with `-`, a segment
start written as integer 0, segments ending after the video, and unannotated `testing` videos.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Expected:
    """What the index must report for one set of annotation files."""

    ucf_counts: dict[int, tuple[int, int]]  # split -> (train, val)
    ucf_videos: int
    ucf_classes: int
    hmdb_counts: tuple[int, int, int]  # (train, val, unused), every split
    hmdb_per_class: tuple[int, int]  # (train, val) of every class, every split
    hmdb_classes: int
    ssv2_classes: int
    ssv2_val: int
    anet_segments: int
    anet_videos: tuple[int, int, int]  # training, validation, testing
    anet_labels: int
    anet_class_list: int


OFFICIAL = Expected(
    ucf_counts={1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)},
    ucf_videos=13320,
    ucf_classes=101,
    hmdb_counts=(3570, 1530, 1666),
    hmdb_per_class=(70, 30),
    hmdb_classes=51,
    ssv2_classes=174,
    ssv2_val=20,
    anet_segments=48,
    anet_videos=(20, 15, 5),
    anet_labels=31,
    anet_class_list=200,
)

# --------------------------------------------------------------------------- UCF101

UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "HandstandPushups", "YoYo")
UCF_GROUPS, UCF_CLIPS = 7, 4  # split k tests groups 2k-1 and 2k; group 7 always trains


def ucf_file_stem(class_name: str) -> str:
    """The archive's own quirk: class HandstandPushups holds v_HandStandPushups_* files."""
    return "HandStandPushups" if class_name == "HandstandPushups" else class_name


def ucf_video(class_name: str, group: int, clip: int) -> str:
    return f"{class_name}/v_{ucf_file_stem(class_name)}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    crlf = "\r\n"
    (folder / "classInd.txt").write_bytes(
        "".join(f"{i} {c}{crlf}" for i, c in enumerate(UCF_CLASSES, 1)).encode()
    )
    for split in (1, 2, 3):
        train, test = [], []
        for number, class_name in enumerate(UCF_CLASSES, 1):
            for group in range(1, UCF_GROUPS + 1):
                for clip in range(1, UCF_CLIPS + 1):
                    rel = ucf_video(class_name, group, clip)
                    if group in (2 * split - 1, 2 * split):
                        test.append(f"{rel}{crlf}")
                    else:
                        train.append(f"{rel} {number}{crlf}")
        (folder / f"trainlist0{split}.txt").write_bytes("".join(train).encode())
        (folder / f"testlist0{split}.txt").write_bytes("".join(test).encode())


# --------------------------------------------------------------------------- HMDB51

# Real file names from the official lists, odd characters and all.
HMDB_VIDEOS = {
    "brush_hair": [
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
        "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_fr_goo_0.avi",
        "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_le_goo_3.avi",
        "Aussie_Brunette_Brushing_Long_Hair_brush_hair_u_nm_np1_ba_med_3.avi",
        "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi",
    ],
    "cartwheel": [f"(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_{i}.avi" for i in range(6)],
    "catch": [f"Ball_hochwerfen_-_Rolle_-_Ball_fangen_(Timo_3)_catch_f_cm_np1_ri_{i}.avi" for i in range(6)],
    "climb_stairs": [f"Bubblegum_&_Spongebob_climb_stairs_f_cm_np1_fr_med_{i}.avi" for i in range(6)],
}
# Codes per video for split 1 (1 = train, 2 = test, 0 = unused); split k rotates them by 2(k-1).
HMDB_CODES = ("1", "1", "2", "0", "1", "2")


def hmdb_code(split: int, position: int) -> str:
    return HMDB_CODES[(position + 2 * (split - 1)) % len(HMDB_CODES)]


def write_hmdb51(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for class_name, videos in HMDB_VIDEOS.items():
        for split in (1, 2, 3):
            lines = "".join(f"{v} {hmdb_code(split, i)} \n" for i, v in enumerate(videos))  # trailing space
            (folder / f"{class_name}_test_split{split}.txt").write_text(lines)


# --------------------------------------------------------------------------- SSv2

SSV2_TEMPLATES = (
    "Approaching something with your camera",
    "Putting something on a surface",
    "Something falling like a feather or paper",
    "Something falling like a rock",
    "Spinning something that quickly stops spinning",
    "Showing something on top of something",
    "Taking something from somewhere",
    "Tipping something with something in it over, so something in it falls out",
)
SSV2_VALIDATION = (
    ("74225", "Spinning [something] that quickly stops spinning", ["cube"]),
    ("116154", "Showing [something] on top of [something]", ["clay box", "wallet"]),
    ("92355", "[Something] falling like a feather or paper", ["a sheet"]),
    (
        "149956",
        "Tipping [something] with [something in it] over, so [something in it] falls out",
        ["cup", "water", "water"],
    ),
    ("169362", "Taking [something] from [somewhere]", ["pen", "a drawer"]),
    ("198186", "Approaching [something] with your camera", ["a door"]),
)


def ssv2_label_id(template: str) -> int:
    return SSV2_TEMPLATES.index(template.replace("[", "").replace("]", ""))


def write_ssv2(folder: Path) -> None:
    """The labels json as the dataset ships it ({template: "id"}, one per line, CRLF) and the validation list."""
    folder.mkdir(parents=True, exist_ok=True)
    body = ",\r\n".join(f' "{t}":"{i}"' for i, t in enumerate(SSV2_TEMPLATES))
    (folder / "something-something-v2-labels.json").write_bytes(f"{{\r\n{body}\r\n}}\r\n".encode())
    entries = [
        {"id": vid, "label": template.replace("[", "").replace("]", "").lower(), "template": template,
         "placeholders": placeholders}
        for vid, template, placeholders in SSV2_VALIDATION
    ]  # fmt: skip
    (folder / "something-something-v2-validation.sample20.json").write_text(json.dumps(entries))
    test = [{"id": str(500000 + i)} for i in range(3)]  # the test list carries no template
    (folder / "something-something-v2-test.sample20.json").write_text(json.dumps(test))


# --------------------------------------------------------------------------- Kinetics-400

K400_HEADER = ("label", "youtube_id", "time_start", "time_end", "split")
# (label, youtube_id, start, end); ids may start with "-" and labels hold spaces and brackets.
K400_TRAIN = (
    ("abseiling", "-3B32lodo2M", 59, 69),
    ("abseiling", "0DCgLcz-WZM", 0, 10),
    ("passing American football (in game)", "--6bJUbfpnQ", 17, 27),
    ("passing American football (in game)", "Zz9b2SpIUWk", 140, 150),
)
K400_VAL = (
    ("abseiling", "0wR5jVB-WPk", 417, 427),
    ("passing American football (in game)", "-_9J4aLQMkE", 3, 13),
)


def k400_stem(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def write_k400(folder: Path) -> None:
    """train.csv and validate.csv as in the CVDF release (a header row, labels quoted where needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for filename, rows, split in (("train.csv", K400_TRAIN, "train"), ("validate.csv", K400_VAL, "val")):
        with open(folder / filename, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(K400_HEADER)
            writer.writerows((*row, split) for row in rows)


# --------------------------------------------------------------------------- ActivityNet

ANET_LABELS = ("Drinking beer", "Paintball", "Removing ice from car", "Shoveling snow", "Wakeboarding")
ANET_DATABASE = {
    "---9CpRcKoU": ("training", 14.07, [([0.01, 12.64], "Drinking beer")]),
    "-1IBHYS3L-Y": ("training", 252.819, [([0, 184.98], "Removing ice from car")]),  # start written as 0
    "-1IlTIWPNs4": ("training", 86.05, [([0, 86.05315192743764], "Shoveling snow")]),  # ends after the video
    "bYUmtLBL7W4": (
        "training",
        224.49,
        [
            ([11.55, 57.07], "Wakeboarding"),
            ([68.62, 126.04], "Wakeboarding"),
            ([135.49, 201.31], "Wakeboarding"),
        ],
    ),
    "-5c9WHk408g": ("validation", 142.5, [([0.01, 142.5007029478458], "Paintball")]),  # ends after the video
    "hDPLy21Yyuk": ("validation", 76.23, [([21.39, 76.161], "Shoveling snow"), ([1.5, 9.0], "Paintball")]),
    "--tFD65KaK4": ("testing", 30.0, []),
    "-1EC1ZP6aC4": ("testing", 61.2, []),
}
ANET_CLASS_LIST = (*ANET_LABELS, "Archery", "Arm wrestling")  # the csv lists classes with no segment here


def write_activitynet(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    database = {
        vid: {
            "duration": duration,
            "subset": subset,
            "url": f"https://www.youtube.com/watch?v={vid}",
            "annotations": [{"segment": segment, "label": label} for segment, label in annotations],
        }
        for vid, (subset, duration, annotations) in ANET_DATABASE.items()
    }
    excerpt = {"version": "VERSION 1.3", "taxonomy": [], "database": database}
    (folder / "activity_net.v1-3.excerpt40.json").write_text(json.dumps(excerpt))
    with open(folder / "action_name.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["action"])
        writer.writerows([name] for name in ANET_CLASS_LIST)
    gt = {  # mmaction2's shape: no "database", ids already "v_...", a resolution field
        f"v_{vid}": dict(database[vid], resolution="1280x720") for vid in ("bYUmtLBL7W4", "hDPLy21Yyuk")
    }
    for entry in gt.values():
        entry["subset"] = "validation"
    (folder / "mmaction2_test_eval_detection_gt.json").write_text(json.dumps(gt))


# --------------------------------------------------------------------------- all four


def write_samples(root: Path) -> Expected:
    """Write ucf101/, hmdb51/, ssv2/, activitynet/ under `root` (the datasets-meta layout)."""
    write_ucf101(root / "ucf101")
    write_hmdb51(root / "hmdb51")
    write_ssv2(root / "ssv2")
    write_activitynet(root / "activitynet")
    per_split = 2 * UCF_CLIPS * len(UCF_CLASSES)
    total = UCF_GROUPS * UCF_CLIPS * len(UCF_CLASSES)
    hmdb_train, hmdb_val, hmdb_unused = (HMDB_CODES.count(c) for c in "120")
    subsets = [subset for subset, _, _ in ANET_DATABASE.values()]
    return Expected(
        ucf_counts={split: (total - per_split, per_split) for split in (1, 2, 3)},
        ucf_videos=total,
        ucf_classes=len(UCF_CLASSES),
        hmdb_counts=tuple(n * len(HMDB_VIDEOS) for n in (hmdb_train, hmdb_val, hmdb_unused)),  # type: ignore[arg-type]
        hmdb_per_class=(hmdb_train, hmdb_val),
        hmdb_classes=len(HMDB_VIDEOS),
        ssv2_classes=len(SSV2_TEMPLATES),
        ssv2_val=len(SSV2_VALIDATION),
        anet_segments=sum(len(a) for _, _, a in ANET_DATABASE.values()),
        anet_videos=(subsets.count("training"), subsets.count("validation"), subsets.count("testing")),
        anet_labels=len(ANET_LABELS),
        anet_class_list=len(ANET_CLASS_LIST),
    )
