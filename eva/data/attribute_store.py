"""The attribute store's contract: attribute names, the Parquet schema, its writer and reader.

Shared by the code that writes attributes (`eva.attributes`, the `attributes` stage) and the code
that reads them (`eva.data.clips`, `eva.models`, `eva.train`, `eva.evaluate`), so that data and models
depend on this module, not on the attribute extractors.

Parquet storage of per-video attribute embeddings, and a random-access reader for training.

One row per video. Each attribute is a `fixed_size_list<halffloat>[K*L*D]` column holding the
row-major `[K, L, D]` tensor (K keyframes, L encoder layers, D joint embedding dim). Embedding
columns are stored uncompressed, PLAIN-encoded and without dictionaries, in small row groups, so the
reader can memory-map the file and copy out just the requested video's values: a row's K*L*D
half floats lie contiguously in the column chunk's data pages (`AttributeStore.get`).

Attributes labelled by a detector (`attributes.label.method: detector`) have one more small column,
`label_box`: the top box of each keyframe, 4 floats (x0, y0, x1, y1 in pixels of the stored frame)
per keyframe. Other files have no such column, so their bytes are what they always were.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eva.config import Rule, check

TEXT_ATTRIBUTES = ("label", "caption")
VISUAL_ATTRIBUTES = ("foreground", "background", "original", "dynamic")
ATTRIBUTES = TEXT_ATTRIBUTES + VISUAL_ATTRIBUTES

METADATA_KEY = b"eva"
# Rows per row group: a random read decodes one group, so keep it small (16 x 6 x [4, 12, 512] fp16 ~ 5 MB).
ROW_GROUP_ROWS = 16
_TEXT_COLUMNS = ("video_id", "keyframe_indices", "label_text", "label_score", "caption_text", "mask_coverage")
BOX_COLUMN = "label_box"


# the top-level `stage`: checked by the check stage and wherever a stage number is turned into attributes
STAGE = Rule("1 (text attributes) or 2 (text + visual)", lambda v: not isinstance(v, bool) and v in (1, 2))


def attributes_for_stage(stage: int) -> tuple[str, ...]:
    """Stage 1 trains with the text attributes, stage 2 with all six."""
    check("stage", stage, STAGE)
    return TEXT_ATTRIBUTES if stage == 1 else ATTRIBUTES


@dataclass(frozen=True)
class AttributeMeta:
    encoder: str
    text_layers: int
    image_layers: int
    dim: int
    keyframes: int
    attributes: tuple[str, ...] = ATTRIBUTES
    pretrained: str = ""
    captioner: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # how the attributes were made (vocabulary, mask...)

    def layers(self, name: str) -> int:
        """Layer count of the tower that encoded attribute `name`."""
        if name in TEXT_ATTRIBUTES:
            return self.text_layers
        if name in VISUAL_ATTRIBUTES:
            return self.image_layers
        raise ValueError(f"Unknown attribute {name!r}; expected one of {ATTRIBUTES}")

    @property
    def boxes(self) -> bool:
        """Whether the file has the `label_box` column (labels from a detector)."""
        return self.extra.get("label_method") == "detector"

    def shape(self, name: str) -> tuple[int, int, int]:
        return (self.keyframes, self.layers(name), self.dim)

    def to_json(self) -> str:
        d = asdict(self)
        d["attributes"] = list(self.attributes)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> AttributeMeta:
        d = json.loads(text)
        d["attributes"] = tuple(d["attributes"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class VideoAttributes:
    """Everything stored for one video; `embeddings[name]` is float16 `[K, L, D]`."""

    video_id: str
    keyframe_indices: list[int]
    label_text: list[str]
    label_score: list[float]
    caption_text: list[str]
    mask_coverage: list[float]
    embeddings: dict[str, np.ndarray]
    label_box: list[float] | None = None  # K x (x0, y0, x1, y1), flat; labels from a detector only


def attribute_schema(meta: AttributeMeta) -> pa.Schema:
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("keyframe_indices", pa.list_(pa.int32())),
        pa.field("label_text", pa.list_(pa.string())),
        pa.field("label_score", pa.list_(pa.float32())),
        pa.field("caption_text", pa.list_(pa.string())),
        pa.field("mask_coverage", pa.list_(pa.float32())),
    ]
    if meta.boxes:
        fields.append(pa.field(BOX_COLUMN, pa.list_(pa.float32())))
    for name in meta.attributes:
        size = int(np.prod(meta.shape(name)))
        fields.append(pa.field(name, pa.list_(pa.float16(), size)))
    return pa.schema(fields, metadata={METADATA_KEY: meta.to_json().encode()})


def rows_to_table(rows: Sequence[VideoAttributes], meta: AttributeMeta) -> pa.Table:
    """Columnar build: one contiguous float16 buffer per attribute, no per-row Python lists of floats."""
    schema = attribute_schema(meta)
    columns: list[pa.Array] = [
        pa.array([r.video_id for r in rows], pa.string()),
        pa.array([r.keyframe_indices for r in rows], pa.list_(pa.int32())),
        pa.array([r.label_text for r in rows], pa.list_(pa.string())),
        pa.array([r.label_score for r in rows], pa.list_(pa.float32())),
        pa.array([r.caption_text for r in rows], pa.list_(pa.string())),
        pa.array([r.mask_coverage for r in rows], pa.list_(pa.float32())),
    ]
    if meta.boxes:
        columns.append(pa.array([r.label_box for r in rows], pa.list_(pa.float32())))
    for name in meta.attributes:
        shape = meta.shape(name)
        size = int(np.prod(shape))
        for r in rows:
            if r.embeddings[name].shape != shape:
                raise ValueError(
                    f"{r.video_id}: attribute {name!r} has shape {r.embeddings[name].shape}, expected {shape}"
                )
        flat = (
            np.stack([r.embeddings[name] for r in rows]).astype(np.float16).reshape(-1)  # [N*K*L*D]
            if rows
            else np.zeros(0, np.float16)
        )
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), size))
    return pa.Table.from_arrays(columns, schema=schema)


def _leaf(name: str) -> str:
    return name if name == "video_id" else f"{name}.list.element"  # Parquet path of a (list) column


def _writer(path: str | os.PathLike[str], schema: pa.Schema) -> pq.ParquetWriter:
    small_names = (*_TEXT_COLUMNS, BOX_COLUMN)
    small = [_leaf(n) for n in schema.names if n in small_names]
    embeddings = [_leaf(f.name) for f in schema if f.name not in small_names]
    return pq.ParquetWriter(
        str(path),
        schema,
        compression={**dict.fromkeys(small, "zstd"), **dict.fromkeys(embeddings, "none")},
        use_dictionary=small,
        write_statistics=["video_id"],
    )


def write_table(path: str | os.PathLike[str], table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write one attribute table (caller handles atomicity, e.g. with `eva.utils.io.atomic_path`)."""
    with _writer(path, table.schema) as writer:
        writer.write_table(table, row_group_size=row_group_rows)


def concat_parquet(
    parts: Iterable[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    schema: pa.Schema,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> int:
    """Stream the rows of several part files (same schema) into one file; returns the row count."""
    rows = 0
    with _writer(path, schema) as writer:
        for part in parts:
            table = pq.read_table(part, memory_map=True)
            if table.schema.metadata != schema.metadata or not table.schema.equals(schema):
                raise ValueError(f"Part file {part} was written with another attribute config; delete it")
            writer.write_table(table, row_group_size=row_group_rows)
            rows += table.num_rows
    return rows


# ----------------------------------------------------------------------------- raw page access
# The embedding columns as `_writer` stores them (no compression, no dictionary, PLAIN half floats, no
# nulls) keep each row's values as one run of bytes inside the column chunk's data pages. Reading the
# page headers (Thrift compact protocol, the few fields below) locates that run, so `get` copies
# 2 * K*L*D bytes instead of decoding a whole row group. Any other layout is read through pyarrow.

_PLAIN, _RLE = 0, 3  # parquet Encoding
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3  # parquet PageType
_HALF = 2  # bytes per float16 value (FIXED_LEN_BYTE_ARRAY(2), little-endian)


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _skip(buf: Any, pos: int, kind: int, *, element: bool = False) -> int:
    """Past one compact-protocol value of type `kind` (a bool element of a list takes a byte)."""
    if kind in (1, 2):  # booleans: in the field header, or a byte as a list element
        return pos + 1 if element else pos
    if kind == 3:  # byte
        return pos + 1
    if kind in (4, 5, 6):  # i16, i32, i64: varints
        return _varint(buf, pos)[1]
    if kind == 7:  # double
        return pos + 8
    if kind == 8:  # binary: varint length + bytes
        size, pos = _varint(buf, pos)
        return pos + size
    if kind in (9, 10):  # list, set: size and element type in one byte (size 15: a varint follows)
        head = buf[pos]
        pos += 1
        size, inner = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        for _ in range(size):
            pos = _skip(buf, pos, inner, element=True)
        return pos
    if kind == 11:  # map: varint size, then one byte of key and value types
        size, pos = _varint(buf, pos)
        if size:
            types = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(buf, pos, types >> 4, element=True)
                pos = _skip(buf, pos, types & 0x0F, element=True)
        return pos
    if kind == 12:
        return _thrift_struct(buf, pos)[1]
    raise ValueError(f"unknown thrift compact type {kind}")


def _thrift_struct(buf: Any, pos: int) -> tuple[dict[int, Any], int]:
    """A compact-protocol struct at `pos`: field id -> int, bool or nested struct (others skipped)."""
    fields: dict[int, Any] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        kind, delta = head & 0x0F, head >> 4
        if delta:
            last += delta
        else:
            raw, pos = _varint(buf, pos)
            last = _zigzag(raw)
        if kind in (1, 2):
            fields[last] = kind == 1
        elif kind in (4, 5, 6):
            raw, pos = _varint(buf, pos)
            fields[last] = _zigzag(raw)
        elif kind == 12:
            fields[last], pos = _thrift_struct(buf, pos)
        else:
            pos = _skip(buf, pos, kind)


def _value_runs(buf: Any, start: int, end: int, levels: tuple[int, int]) -> list[tuple[int, int, int]] | None:
    """(first value, value count, byte offset of the values) of every data page of the column chunk
    at `buf[start:end]`, or None unless each page holds PLAIN half floats with no nulls.

    `levels`: the column's max repetition and definition levels (which level runs a v1 page has).
    """
    max_rep, max_def = levels
    runs: list[tuple[int, int, int]] = []
    first, pos = 0, start
    while pos < end:
        header, body = _thrift_struct(buf, pos)
        page_end = body + header[3]  # compressed_page_size: the chunk is uncompressed (checked)
        kind = header[1]
        if kind == _DATA_PAGE:
            page = header.get(5, {})
            if page.get(2) != _PLAIN or (page.get(3), page.get(4)) != (_RLE, _RLE):
                return None
            values = body
            for present in (max_rep > 0, max_def > 0):  # v1: repetition, then definition levels
                if present:
                    values += 4 + struct.unpack_from("<I", buf, values)[0]
            count = page.get(1, -1)
        elif kind == _DATA_PAGE_V2:
            page = header.get(8, {})
            if page.get(4) != _PLAIN or page.get(2) != 0:
                return None
            values = body + page.get(5, 0) + page.get(6, 0)
            count = page.get(1, -1)
        elif kind == _DICTIONARY_PAGE:
            return None
        else:  # index pages hold no values
            pos = page_end
            continue
        if count < 0 or page_end - values != count * _HALF:  # a null would leave a value out
            return None
        runs.append((first, count, values))
        first += count
        pos = page_end
    return runs


def read_meta(path: str | os.PathLike[str]) -> AttributeMeta:
    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} has no EVA attribute metadata (schema key {METADATA_KEY!r})")
    return AttributeMeta.from_json(metadata[METADATA_KEY])


class AttributeStore:
    """Random access to one attribute file by video id, for the training loader.

    Opening reads the footer and the `video_id` column only. `get` copies the video's values out of
    the memory-mapped file: the page headers of a column chunk are read once, and a row's values are
    then one run of bytes (files `write_table` wrote; other layouts fall back to decoding the row
    group through pyarrow, as `describe` does, keeping a few decoded groups). Picklable: each
    DataLoader worker re-opens the file lazily.
    """

    def __init__(self, path: str | os.PathLike[str], cache_groups: int = 8) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Attribute file '{self.path}' does not exist (run the `attributes` stage)"
            )
        self.meta = read_meta(self.path)
        self._cache_groups = cache_groups
        self._file: pq.ParquetFile | None = None
        self._cache: OrderedDict[tuple[int, tuple[str, ...]], pa.Table] = OrderedDict()
        self._where: dict[str, tuple[int, int]] = {}
        self._raw: mmap.mmap | None = None
        # (row group, attribute) -> value runs of its pages, or None: read through pyarrow
        self._runs: dict[tuple[int, str], list[tuple[int, int, int]] | None] = {}
        pf = self._parquet()
        for group in range(pf.num_row_groups):
            ids = pf.read_row_group(group, columns=["video_id"]).column(0).to_pylist()
            for row, video_id in enumerate(ids):
                self._where[video_id] = (group, row)

    def _parquet(self) -> pq.ParquetFile:
        if self._file is None:
            self._file = pq.ParquetFile(self.path, memory_map=True)
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_cache"] = OrderedDict()
        state["_raw"] = None
        state["_runs"] = {}
        return state

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._where

    def _group(self, group: int, columns: tuple[str, ...]) -> pa.Table:
        key = (group, columns)
        table = self._cache.get(key)
        if table is None:
            table = self._parquet().read_row_group(group, columns=list(columns))
            self._cache[key] = table
            while len(self._cache) > self._cache_groups:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return table

    def _locate(self, video_id: str) -> tuple[int, int]:
        try:
            return self._where[video_id]
        except KeyError:
            raise KeyError(f"Video {video_id!r} has no attributes in {self.path}") from None

    def _column_runs(self, group: int, name: str) -> list[tuple[int, int, int]] | None:
        """The value runs of attribute `name`'s pages in row group `group` (None: not raw-readable)."""
        key = (group, name)
        if key in self._runs:
            return self._runs[key]
        pf = self._parquet()
        paths = [pf.schema.column(i).path for i in range(pf.metadata.num_columns)]
        index = paths.index(_leaf(name))
        leaf = pf.schema.column(index)
        chunk = pf.metadata.row_group(group).column(index)
        runs = None
        if (
            leaf.physical_type == "FIXED_LEN_BYTE_ARRAY"
            and leaf.length == _HALF
            and chunk.compression == "UNCOMPRESSED"
            and not chunk.has_dictionary_page
        ):
            if self._raw is None:
                with open(self.path, "rb") as file:
                    self._raw = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            start = chunk.data_page_offset
            levels = (leaf.max_repetition_level, leaf.max_definition_level)
            runs = _value_runs(self._raw, start, start + chunk.total_compressed_size, levels)
            values = pf.metadata.row_group(group).num_rows * int(np.prod(self.meta.shape(name)))
            if runs is not None and sum(count for _, count, _ in runs) != values:
                runs = None
        self._runs[key] = runs
        return runs

    def _read_values(self, runs: list[tuple[int, int, int]], begin: int, count: int) -> np.ndarray:
        """Values `begin .. begin + count - 1` of a column chunk, copied out of the mapped file."""
        raw = self._raw
        assert raw is not None  # mapped by `_column_runs`, which found the runs
        out = np.empty(count, np.float16)
        stop = begin + count
        for first, run, offset in runs:
            low, high = max(begin, first), min(stop, first + run)
            if low < high:
                out[low - begin : high - begin] = np.frombuffer(
                    raw, dtype="<f2", count=high - low, offset=offset + _HALF * (low - first)
                )
        return out

    def get(
        self, video_id: str, names: Sequence[str], *, keyframe: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Attribute name -> float16 tensor `[K, L, D]` for one video; with `keyframe`, that keyframe's
        `[L, D]` alone (training feeds one keyframe: its rows are a quarter of the bytes to copy)."""
        unknown = [n for n in names if n not in self.meta.attributes]
        if unknown:
            raise ValueError(f"Unknown attributes {unknown}; {self.path} holds {list(self.meta.attributes)}")
        if keyframe is not None and not 0 <= keyframe < self.meta.keyframes:
            raise IndexError(f"keyframe {keyframe} of a file with {self.meta.keyframes} keyframes per video")
        group, row = self._locate(video_id)
        out = {}
        where = {name: self._column_runs(group, name) for name in names}
        decoded = tuple(name for name, runs in where.items() if runs is None)
        table = self._group(group, decoded) if decoded else None
        for name in names:
            shape: tuple[int, ...] = self.meta.shape(name)
            size = math.prod(shape)  # the row's K*L*D values
            begin = row * size
            if keyframe is not None:  # the keyframe's L*D of them
                shape = shape[1:]
                size = math.prod(shape)
                begin += keyframe * size
            runs = where[name]
            if runs is not None:
                values = self._read_values(runs, begin, size)  # a copy
            else:
                assert table is not None
                column = table.column(name).combine_chunks()  # one chunk per row group: no copy
                values = column.flatten().to_numpy(zero_copy_only=False)[begin : begin + size].copy()
            out[name] = torch.from_numpy(values.reshape(shape))  # [K, L, D] or [L, D]
        return out

    def describe(self, video_id: str) -> dict[str, list]:
        """The human-readable columns (keyframes, labels, scores, captions, mask coverage) of one video;
        with a detector's labels also `label_box`, one [x0, y0, x1, y1] per keyframe."""
        group, row = self._locate(video_id)
        names = (*_TEXT_COLUMNS, BOX_COLUMN) if self.meta.boxes else _TEXT_COLUMNS
        table = self._group(group, names)
        out = {name: table.column(name)[row].as_py() for name in names}
        if BOX_COLUMN in out:
            flat = out[BOX_COLUMN]
            out[BOX_COLUMN] = [flat[i : i + 4] for i in range(0, len(flat), 4)]
        return out
