"""Videos -> WebDataset shards of T JPEG frames per clip (TSN-style sparse sampling).

Determinism is the point of this module: the shard bytes depend only on the index and the
`extract.*` params, never on the worker count, the rank split or the wall clock. So samples are
written by the parent in index order, tar headers carry a fixed mtime/owner, and shard numbers
come from chunking the sorted index before any decoding (a failed video leaves a shorter shard,
it never shifts the samples of later shards).

Frames are exact: stored frame k is frame `frame_indices[k]` of a sequential decode of the whole
stream, whatever the container (see `decode_video`).

Decoding runs in worker processes that the parent kills and replaces when a video exceeds
`extract.timeout_s` or crashes the decoder, so one bad file costs one recorded failure.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import hashlib
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from av.video.reformatter import Interpolation, VideoReformatter

from eva.config import BOOLEAN, Rule, check_fields, integer, number, section_values, setting
from eva.data.segments import segment_centres
from eva.data.shard_counts import count_file
from eva.utils.dist import WorkerSlot

if TYPE_CHECKING:  # the decode workers import this module: pyarrow, tqdm and torch stay out of them
    import pyarrow as pa

log = logging.getLogger(__name__)

SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<num>\d{6})\.tar$")
TAR_MTIME = 946684800  # 2000-01-01 UTC: fixed so identical samples give identical tar bytes
TAR_OWNER = "eva"
MAX_KEY_CHARS = 80  # member names stay under USTAR's 100-char limit (key + ".NNN.jpg")
WORKER_START_TIMEOUT_S = 120.0
QUEUED_PER_WORKER = 2  # jobs sent ahead to each decode worker: the next one is waiting when it finishes
# swscale flags of the one resize: bilinear, with the rounding of its C reference on every CPU
RESIZE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT


SHARD_READERS = 64  # samples_per_shard=auto: readers (DDP ranks x loader workers) that get a shard each
MAX_SAMPLES_PER_SHARD = 512
SAMPLES_PER_SHARD = Rule("an integer >= 1 or auto", lambda v: v == "auto" or integer(1).ok(v))


def shard_size(videos: int, samples_per_shard: int | str) -> int:
    """Videos per shard of a split of `videos`: the setting, or for `auto` the largest size that still
    gives SHARD_READERS shards (so a reader of an 8 x 8 run has shards of its own), capped at 512."""
    if samples_per_shard != "auto":
        return int(samples_per_shard)
    return max(1, min(MAX_SAMPLES_PER_SHARD, videos // SHARD_READERS))


@dataclass(frozen=True)
class ExtractConfig:
    """The `extract` section of params.yaml; a bad value names its key."""

    frames_per_video: int = setting(default=16, rule=integer(1, 999))
    # 0: `frames_per_video` segment centres over the video | N: every N-th frame (dense sampling),
    # at most `frames_per_video` of them (a longer video keeps its middle run)
    frame_stride: int = setting(default=0, rule=integer(0, 999, "(source frames; 0: segment centres)"))
    short_side: int = setting(default=64, rule=integer(8, 4096, "(pixels)"))
    jpeg_quality: int = setting(default=90, rule=integer(1, 100))
    # an integer, or auto: per split, enough shards that each of SHARD_READERS readers (8 GPUs x 8
    # loader workers) gets one of its own, at most MAX_SAMPLES_PER_SHARD videos each
    samples_per_shard: int | str = setting(default=512, rule=SAMPLES_PER_SHARD)
    workers: int = setting(default=2, rule=integer(1, 1024, "(worker processes)"))
    timeout_s: float = setting(default=120.0, rule=number(above=0))  # seconds per video
    # fewer decodable frames: skipped (T frames from 1 would be 16 copies of it)
    min_frames: int = setting(default=8, rule=integer(1, what="(decodable frames)"))
    keep_truncated: bool = setting(default=True, rule=BOOLEAN)  # a cut file with >= min_frames frames is kept

    def __post_init__(self) -> None:
        check_fields(self, "extract")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ExtractConfig:
        return cls(**section_values(cls, params, "extract"))


@dataclass(frozen=True)
class VideoJob:
    """One index row plus its shard key: everything a worker needs, nothing heavy."""

    key: str
    video_id: str
    path: str
    label: int
    label_name: str
    split: str
    start: float | None = None
    end: float | None = None


@dataclass
class DecodedVideo:
    """What a worker sends back: encoded frames and the facts the json records."""

    jpegs: list[bytes]
    fps: float  # clip frames / clip duration, both from the decoded timestamps
    frame_indices: list[int]  # positions in a sequential decode of the whole stream
    orig_size: tuple[int, int]  # (H, W)
    duration: float  # seconds from the clip's first frame to the end of its last
    timestamps: list[float] = field(default_factory=list)  # s since the stream's first frame, per frame
    decoded_frames: int | None = (
        None  # frames of the whole stream; None for a segment (not decoded to the end)
    )
    header_frames: int = 0  # frames the container claims (0: unknown)
    truncated: bool = False
    decode_errors: int = 0


@dataclass(frozen=True)
class ShardPlan:
    """A fixed chunk of the sorted index; its number never depends on decode outcomes."""

    split: str
    number: int
    ordinal: int  # position among all shards of all splits: the unit of rank ownership
    jobs: tuple[VideoJob, ...]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:06d}.tar"


class VideoError(Exception):
    """A video that cannot be turned into a sample; `reason` goes into metrics/extract.json."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SplitCounts:
    videos: int = 0
    written: int = 0
    failed: int = 0
    shards: int = 0


@dataclass
class ExtractResult:
    """Counts per split and the skipped videos, for metrics/extract.json."""

    splits: dict[str, SplitCounts] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)  # kept cut files (skipped: failures)
    damaged: list[dict[str, Any]] = field(default_factory=list)  # kept files with undecodable packets
    shards: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1

    def metrics(self) -> dict[str, Any]:
        videos = sum(c.videos for c in self.splits.values())
        return {
            "videos": videos,
            "written": sum(c.written for c in self.splits.values()),
            "failed": sum(c.failed for c in self.splits.values()),
            "shards": len(self.shards),
            "splits": {name: vars(c).copy() for name, c in sorted(self.splits.items())},
            "failures": self.failures,
            "truncated": self.truncated,
            "damaged": self.damaged,
            "seconds": round(self.seconds, 3),
            "videos_per_second": round(videos / self.seconds, 3) if self.seconds > 0 else 0.0,
            "rank": self.rank,
            "world_size": self.world_size,
        }


# ----------------------------------------------------------------------------- sampling, keys


def sample_segment_indices(first: int, stop: int, count: int) -> list[int]:
    """Centre frame of each of `count` equal segments of [first, stop) (TSN test-time sampling)."""
    return segment_centres(first, stop, count)


def sample_stride_indices(first: int, stop: int, stride: int, count: int) -> list[int]:
    """Every `stride`-th frame of [first, stop) from `first`; of more than `count`, the middle `count`.

    What dense sampling needs: a clip of T frames `k * stride` apart is then k stored frames apart,
    and a window can start at any stored frame.
    """
    if stop <= first:
        raise ValueError(f"empty frame range [{first}, {stop})")
    grid = range(first, stop, stride)  # lazy: a corrupt header may claim billions of frames
    skip = max(len(grid) - count, 0) // 2
    return list(grid[skip : skip + count])


def stored_frame_indices(first: int, stop: int, cfg: ExtractConfig) -> list[int]:
    """The frames of [first, stop) a shard keeps: segment centres, or a strided run (`extract.frame_stride`)."""
    if cfg.frame_stride:
        return sample_stride_indices(first, stop, cfg.frame_stride, cfg.frames_per_video)
    return sample_segment_indices(first, stop, cfg.frames_per_video)


def shard_key(video_id: str) -> str:
    """A webdataset key: no dots (they separate the extension), no slashes, bounded length."""
    key = re.sub(r"[^A-Za-z0-9_-]", "_", video_id) or "_"
    if len(key) > MAX_KEY_CHARS:
        digest = hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:12]
        key = f"{key[: MAX_KEY_CHARS - 13]}_{digest}"
    return key


def unique_keys(video_ids: Iterable[str]) -> list[str]:
    """`shard_key` of each id, with `_2`, `_3`... appended where two ids map to the same key."""
    seen: set[str] = set()
    keys = []
    for video_id in video_ids:
        base = key = shard_key(video_id)
        n = 1
        while key in seen:
            n += 1
            key = f"{base}_{n}"
        seen.add(key)
        keys.append(key)
    return keys


# ----------------------------------------------------------------------------- decoding (worker side)

# A video is "truncated" when fewer than this fraction of the frames its header claims decode.
# Headers routinely over-count by a frame or two (AVI N-VOPs, edit lists); a cut file loses far more.
TRUNCATED_BELOW = 0.9
_MAX_DECODE_ERRORS = 100  # a stream this broken is not worth decoding to the end


def _clean(message: object, limit: int = 200) -> str:
    """First line of a decoder message, bounded, so reasons in metrics stay short and stable."""
    text = str(message).strip().splitlines()
    first = text[0] if text else ""
    return first[:limit]


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(W, H) with the short side at `short_side` and the aspect ratio kept."""
    scale = short_side / min(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_frame(frame: Any, short_side: int, reformatter: VideoReformatter | None = None) -> Any:
    """Decoded `av.VideoFrame` -> RGB PIL image with the short side at `short_side` (aspect kept).

    One swscale call converts and scales (bilinear), cheaper than converting at full size first.
    Bit-exact flags: swscale's SIMD paths (SSSE3, AVX2, AVX-512) otherwise round differently, so
    machines with other vector units would store other pixels.
    The one resize of the stage; tests and the benchmark apply it to their reference decode too.

    `reformatter`: one kept for the whole video, so swscale sets up its context (filters, tables)
    once instead of once per frame as `frame.reformat` does: 5x cheaper per frame at 64 px, same
    pixels (tests/test_extract.py). One scaling thread: the stage parallelises over videos.
    """
    width, height = short_side_size(frame.height, frame.width, short_side)
    resized = (reformatter or VideoReformatter()).reformat(
        frame, width=width, height=height, format="rgb24", interpolation=RESIZE, threads=1
    )
    return resized.to_image()


@dataclass
class _Pass:
    """One sequential decode: the wanted frames (resized) and the time of every frame decoded."""

    claimed: int  # frames the header claims (packets for containers without a count); 0 unknown
    planned: list[int]  # the indices this pass was asked for
    frames: dict[int, Any]  # frame index -> PIL image, short side already resized
    size: tuple[int, int]  # (H, W) of the decoded frames
    times: list[float]  # seconds since the stream's first frame, one per decoded frame
    last_duration: float  # display duration of the last decoded frame (s); 0 when unknown
    decode_errors: int
    complete: bool  # decoded to the end of the stream (not stopped at a segment end)


def _count_packets(path: str) -> int:
    """Video packets of the file: the frame count of containers whose header has none (Matroska/WebM)."""
    import av

    with contextlib.suppress(av.FFmpegError), av.open(path) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)
    return 0


def _decode_pass(
    path: str, plan: Callable[[int, float], list[int]], end: float | None, short_side: int
) -> _Pass:
    """Decode every frame in order (the reference decode), converting only the frames `plan` picks.

    `plan(claimed_frames, average_rate)` sees the header's facts once the file is open. Packets that
    fail to decode are counted and skipped, as ffmpeg does; the frame numbering is that of the frames
    that do decode. With `end` set the pass stops at the first frame at or past `end` seconds, so a
    short segment of a long video does not pay for the whole file.
    """
    import av

    frames: dict[int, Any] = {}
    size = (0, 0)
    times: list[float] = []
    errors = 0
    last_duration = 0.0
    complete = True
    t0: float | None = None
    previous = -math.inf
    reformatter = VideoReformatter()  # one swscale context for every frame of the video
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        claimed = int(stream.frames or 0) or _count_packets(path)
        planned = plan(claimed, rate)
        wanted = set(planned)
        step = 1.0 / rate if rate > 0 else 0.0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, ValueError):
                errors += 1  # a demux error is the end of what can be read
                break
            try:
                decoded = packet.decode()
            except (av.FFmpegError, ValueError):
                errors += 1
                if errors > _MAX_DECODE_ERRORS:
                    break
                continue
            for frame in decoded:
                t = float(frame.time) if frame.time is not None else previous + step
                if t0 is None:
                    t0 = t
                if end is not None and t - t0 >= end:
                    complete = False
                    break
                previous = t
                if len(times) in wanted:
                    size = (frame.height, frame.width)
                    frames[len(times)] = resize_frame(frame, short_side, reformatter)
                times.append(t - t0)
                if frame.duration:
                    last_duration = float(frame.duration * frame.time_base)
            if not complete:
                break
    if not last_duration and len(times) > 1:
        last_duration = (times[-1] - times[0]) / (len(times) - 1)
    return _Pass(claimed, planned, frames, size, times, last_duration or step, errors, complete)


def _decode_checked(
    path: str, plan: Callable[[int, float], list[int]], end: float | None, short_side: int
) -> _Pass:
    """`_decode_pass` with every decoder failure turned into a VideoError reason."""
    import av

    try:
        attempt = _decode_pass(path, plan, end, short_side)
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise VideoError(f"not a readable video: {_clean(e)}") from None
    if not attempt.times:
        raise VideoError("no decodable frames")
    return attempt


def clip_range_from_times(times: list[float], start: float | None, end: float | None) -> tuple[int, int]:
    """Frame range [first, stop) of the clip from decoded timestamps (the whole video when untrimmed)."""
    if start is None and end is None:
        return 0, len(times)
    first = bisect.bisect_left(times, start or 0.0)
    stop = len(times) if end is None else bisect.bisect_left(times, end)
    if first >= len(times):
        last = times[-1] if times else 0.0
        raise VideoError(f"segment starts at {start} s, after the video's last frame at {last:.2f} s")
    return first, max(stop, first + 1)


def decode_video(
    path: str, cfg: ExtractConfig, start: float | None = None, end: float | None = None
) -> DecodedVideo:
    """Decode the clip's stored frames (`stored_frame_indices`), resize the short side, encode JPEG; frame-exact.

    Stored frame k is frame `frame_indices[k]` of a sequential decode of the whole stream. The
    indices are planned from the header's frame count and rate, the sequential pass then tells the
    truth (decodable frames and their timestamps); when the truth gives other indices (a header
    that over-counts, a cut file, variable frame rate) the pass is repeated with the right ones.
    decord's random access is not used: on MPEG-4 Part 2 AVI with B-frames it returns frames from
    other times, and verifying it per file costs the very sequential decode it would save.

    Raises VideoError with a short, stable reason for every way a file can be unusable.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError("missing file") from None
    except OSError as e:
        raise VideoError(f"cannot stat file: {e.strerror}") from None
    if st.st_size == 0 and os.path.isfile(path):
        raise VideoError("empty file (0 bytes)")

    def header_plan(claimed: int, rate: float) -> list[int]:
        """The indices a constant-rate header implies; the decoded frames confirm or correct them."""
        first, stop = 0, max(claimed, 1)
        if claimed > 0 and rate > 0 and (start is not None or end is not None):
            # frames i / rate < t number ceil(t * rate): clip_range_from_times without a frame list,
            # since a corrupt header may claim billions of frames
            first = min(math.ceil((start or 0.0) * rate), claimed - 1)
            stop = claimed if end is None else max(min(math.ceil(end * rate), claimed), first + 1)
        return stored_frame_indices(first, stop, cfg)

    attempt = _decode_checked(path, header_plan, end, cfg.short_side)
    claimed = attempt.claimed
    first, stop = clip_range_from_times(attempt.times, start, end)
    if stop - first < cfg.min_frames:
        raise VideoError(f"too short: {stop - first} decodable frames < extract.min_frames={cfg.min_frames}")
    indices = stored_frame_indices(first, stop, cfg)
    if indices != attempt.planned:  # the header lied (cut file, over-count, variable rate): decode again
        again = _decode_checked(path, lambda *_: indices, end, cfg.short_side)
        if again.times != attempt.times:
            raise VideoError("decode is not repeatable: two passes disagree on the frames")
        attempt = again
    truncated = attempt.complete and claimed > 0 and len(attempt.times) < TRUNCATED_BELOW * claimed
    if truncated and not cfg.keep_truncated:
        raise VideoError(
            f"truncated: {len(attempt.times)} of {claimed} frames decode (extract.keep_truncated=false)"
        )
    encoded: dict[int, bytes] = {}
    for i in indices:  # repeated indices (clips shorter than T) are encoded once
        if i not in encoded:
            buf = io.BytesIO()
            attempt.frames[i].save(buf, format="JPEG", quality=cfg.jpeg_quality)
            encoded[i] = buf.getvalue()
    times = attempt.times
    stop_time = times[stop] if stop < len(times) else times[stop - 1] + attempt.last_duration
    duration = max(stop_time - times[first], 0.0)
    return DecodedVideo(
        jpegs=[encoded[i] for i in indices],
        fps=(stop - first) / duration if duration > 0 else 0.0,
        frame_indices=[int(i) for i in indices],
        timestamps=[times[i] for i in indices],
        orig_size=(int(attempt.size[0]), int(attempt.size[1])),
        duration=duration,
        decoded_frames=len(times) if attempt.complete else None,
        header_frames=claimed,
        truncated=truncated,
        decode_errors=attempt.decode_errors,
    )


def _worker_main(conn: multiprocessing.connection.Connection, cfg: ExtractConfig) -> None:
    """Worker process: announce readiness, then decode one job at a time until told to stop."""
    import av.logging

    av.logging.set_level(None)  # no ffmpeg lines on stderr: every failure is a reason in the metrics
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        seq, job = message
        try:
            result: DecodedVideo | str = decode_video(job.path, cfg, job.start, job.end)
        except VideoError as e:
            result = e.reason
        except Exception as e:  # a decoder bug must not take the worker down with it
            result = f"unexpected error: {type(e).__name__}: {_clean(e)}"
        conn.send((seq, result))


# ----------------------------------------------------------------------------- worker pool (parent side)


class _Worker:
    """One decode process and the jobs sent to it, oldest first (the first is being decoded)."""

    def __init__(self, ctx: Any, cfg: ExtractConfig) -> None:
        """Start the process; `wait_ready` waits for it (start several, then wait: they boot together)."""
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg), daemon=True)
        self.proc.start()
        child.close()
        self.jobs: collections.deque[int] = collections.deque()
        self.deadline = 0.0  # when the first job's decode times out; set while `jobs` is not empty

    def wait_ready(self) -> None:
        try:
            ready = self.conn.poll(WORKER_START_TIMEOUT_S) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise RuntimeError(
                f"extract worker process did not start (exit code {self.proc.exitcode}); a script that "
                "calls extract_shards needs the `if __name__ == '__main__':` guard"
            )

    def send(self, seq: int, job: VideoJob, timeout_s: float) -> None:
        self.conn.send((seq, job))
        if not self.jobs:
            self.deadline = time.monotonic() + timeout_s
        self.jobs.append(seq)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(5)
        self.kill()


def _start_workers(ctx: Any, cfg: ExtractConfig, count: int) -> list[_Worker]:
    workers = [_Worker(ctx, cfg) for _ in range(count)]
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


def decode_in_order(
    jobs: Iterable[VideoJob], cfg: ExtractConfig
) -> Iterator[tuple[VideoJob, DecodedVideo | str]]:
    """Decode `jobs` in `cfg.workers` processes; yield (job, result or failure reason) in input order.

    Each worker holds up to QUEUED_PER_WORKER jobs, so it starts the next video the moment it sends
    a result, while the caller writes shards. Jobs are pulled lazily and at most 4 x workers results
    wait for reordering, so memory stays bounded by a few videos whatever the dataset size. A worker
    past `cfg.timeout_s` on one video, or one that dies, is killed and replaced: that video is
    reported as failed and the jobs queued behind it go to the other workers.
    """
    ctx = multiprocessing.get_context("forkserver")
    # Workers fork from a server that has imported the decoder once; the parent itself stays light.
    ctx.set_forkserver_preload(["eva.data.extract", "PIL.Image", "PIL.JpegImagePlugin", "av"])
    source = iter(jobs)
    window = 4 * cfg.workers
    pool: list[_Worker] = []
    waiting: dict[int, VideoJob] = {}  # seq -> job, until yielded
    done: dict[int, DecodedVideo | str] = {}
    # pulled but not sent: the first jobs while the workers boot, and jobs taken back from a killed worker
    pending: collections.deque[int] = collections.deque()
    next_in = next_out = 0
    exhausted = False

    def next_seq() -> int | None:
        nonlocal next_in, exhausted
        if pending:
            return pending.popleft()
        if exhausted or next_in >= next_out + window:
            return None
        job = next(source, None)
        if job is None:
            exhausted = True
            return None
        waiting[next_in] = job
        next_in += 1
        return next_in - 1

    def replace(i: int, reason: str | None) -> None:
        """Kill worker i; its current job fails with `reason` (None: it had none), the rest are resent."""
        worker = pool[i]
        worker.kill()
        if worker.jobs and reason is not None:
            seq = worker.jobs.popleft()
            log.warning("%s: %s; restarting the worker", waiting[seq].path, reason)
            done[seq] = reason
        pending.extendleft(reversed(worker.jobs))
        pool[i] = _start_workers(ctx, cfg, 1)[0]

    try:
        first = [seq for seq in (next_seq() for _ in range(cfg.workers)) if seq is not None]
        pending.extend(first)  # sent below, once the workers are up
        pool = _start_workers(ctx, cfg, len(first))  # no more processes than videos
        while True:
            for i in range(len(pool)):
                while len(pool[i].jobs) < QUEUED_PER_WORKER and (seq := next_seq()) is not None:
                    try:
                        pool[i].send(seq, waiting[seq], cfg.timeout_s)
                    except OSError:  # the worker died since its last result: replace it, send again
                        pending.appendleft(seq)
                        replace(i, "decoder process died")
            while next_out in done:
                yield waiting.pop(next_out), done.pop(next_out)
                next_out += 1
            busy = [w for w in pool if w.jobs]
            if not busy:
                if exhausted and not pending:
                    return
                continue
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            multiprocessing.connection.wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
            for i, worker in enumerate(pool):
                reason = None
                try:
                    while worker.jobs and worker.conn.poll():
                        got, result = worker.conn.recv()
                        if got != worker.jobs[0]:
                            raise RuntimeError(
                                f"extract worker answered job {got}, expected {worker.jobs[0]}"
                            )
                        done[worker.jobs.popleft()] = result
                        worker.deadline = time.monotonic() + cfg.timeout_s
                except (EOFError, OSError):
                    reason = "decoder process died"
                if not worker.jobs:
                    continue
                if reason is None and not worker.proc.is_alive():
                    reason = f"decoder process died (exit code {worker.proc.exitcode})"
                elif reason is None and time.monotonic() >= worker.deadline:
                    reason = f"timeout: no result within extract.timeout_s={cfg.timeout_s} s"
                if reason is not None:
                    replace(i, reason)
    finally:
        for worker in pool:
            if worker.jobs:
                worker.kill()
            else:
                worker.stop()


# ----------------------------------------------------------------------------- shard planning and writing


def plan_shards(index: pa.Table, samples_per_shard: int | str) -> list[ShardPlan]:
    """Chunk the sorted index into shards of `shard_size` rows per split, numbered per split."""
    from collections import Counter

    from eva.data.index import INDEX_SCHEMA  # imports pyarrow: kept out of the decode workers

    index = index.sort_by([("split", "ascending"), ("video_id", "ascending")])
    cols = {c: index.column(c).to_pylist() for c in INDEX_SCHEMA.names}
    keys = unique_keys(cols["video_id"])
    size = {split: shard_size(n, samples_per_shard) for split, n in Counter(cols["split"]).items()}
    plans: list[ShardPlan] = []
    chunk: list[VideoJob] = []
    for i, key in enumerate(keys):
        split = cols["split"][i]
        if chunk and (chunk[0].split != split or len(chunk) == size[chunk[0].split]):
            plans.append(_plan(chunk, plans))
            chunk = []
        start, end = cols["start"][i], cols["end"][i]
        chunk.append(
            VideoJob(
                key=key,
                video_id=str(cols["video_id"][i]),
                path=str(cols["path"][i]),
                label=int(cols["label"][i]),
                label_name=str(cols["label_name"][i]),
                split=str(split),
                start=None if start is None else float(start),
                end=None if end is None else float(end),
            )
        )
    if chunk:
        plans.append(_plan(chunk, plans))
    return plans


def _plan(chunk: list[VideoJob], previous: list[ShardPlan]) -> ShardPlan:
    split = chunk[0].split
    if not SHARD_NAME.match(f"{split}-000000.tar"):
        raise ValueError(f"split name {split!r} is not usable in a shard file name")
    number = sum(1 for p in previous if p.split == split)  # previous shards of this split
    return ShardPlan(split=split, number=number, ordinal=len(previous), jobs=tuple(chunk))


def sample_record(job: VideoJob, video: DecodedVideo) -> dict[str, Any]:
    """The webdataset sample: `NNN.jpg` frames and the json of the contract, all as bytes."""
    meta = {
        "video_id": job.video_id,
        "label": job.label,
        "label_name": job.label_name,
        "split": job.split,
        "fps": round(video.fps, 6),
        "frame_indices": video.frame_indices,
        "timestamps": [round(t, 6) for t in video.timestamps],
        "orig_size": list(video.orig_size),
        "duration": round(video.duration, 6),
        "num_frames": len(video.jpegs),
    }
    record: dict[str, Any] = {"__key__": job.key}
    for t, jpeg in enumerate(video.jpegs):
        record[f"{t:03d}.jpg"] = jpeg
    record["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return record


def _note_damage(result: ExtractResult, job: VideoJob, video: DecodedVideo) -> None:
    """List a kept video that is cut short or has undecodable packets: usable, but worth a look."""
    where = {"video_id": job.video_id, "path": job.path, "split": job.split}
    if video.truncated:
        result.truncated.append(
            {**where, "decoded_frames": video.decoded_frames, "header_frames": video.header_frames}
        )
    if video.decode_errors:
        result.damaged.append({**where, "decode_errors": video.decode_errors})


def _temp_name(shard_name: str) -> str:
    return f".{shard_name}.tmp"


class TarSampleWriter:
    """Samples -> tar members `<key>.<ext>`, byte for byte what `webdataset.TarWriter(fileobj,
    encoder=False, mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER)` writes (tests/test_extract.py),
    without importing webdataset, which imports torch: seconds of the stage's start-up on a small CPU.
    """

    def __init__(self, fileobj: Any) -> None:
        self.tarstream = tarfile.open(fileobj=fileobj, mode="w|")  # noqa: SIM115 - closed in close()

    def write(self, record: Mapping[str, Any]) -> None:
        key = record["__key__"]
        for name in sorted(record):
            if name.startswith("_"):
                continue
            value = record[name]
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"{name} doesn't map to bytes ({type(value)})")
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(value)
            info.mtime = TAR_MTIME
            info.mode = 0o0444
            info.uname = info.gname = TAR_OWNER
            self.tarstream.addfile(info, io.BytesIO(value))

    def close(self) -> None:
        self.tarstream.close()


class _ShardFile:
    """One shard written under a temp name and renamed into place only when complete."""

    def __init__(self, out_dir: Path, plan: ShardPlan) -> None:
        self.final = out_dir / plan.name
        self.temp = out_dir / _temp_name(plan.name)
        self.file = open(self.temp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self.writer = TarSampleWriter(self.file)
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.writer.write(record)
        self.count += 1

    def close(self) -> bool:
        """Publish the shard if it holds samples; an all-failed chunk leaves no file. True if published."""
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.count == 0:
            self.temp.unlink(missing_ok=True)
            self.final.unlink(missing_ok=True)
            return False
        os.replace(self.temp, self.final)
        # the sample count beside it, so a loader counts a split without reading tar headers
        sidecar = count_file(self.final)
        temp = sidecar.with_name(f".{sidecar.name}.tmp")
        temp.write_text(json.dumps({"samples": self.count, "bytes": self.final.stat().st_size}))
        os.replace(temp, sidecar)
        return True

    def abort(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


def _clean_stale(out_dir: Path, plans: list[ShardPlan], slot: WorkerSlot) -> None:
    """Remove leftovers of earlier runs: our own temp files, and (rank 0) shards no plan names.

    Ranks only touch files they own, so several machines can share one output directory.
    """
    expected = {p.name for p in plans}
    owned = {p.name for p in plans if slot.owns(p.ordinal)}
    for entry in out_dir.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith((".tar.tmp", ".json.tmp")):
            shard = name[1:-4].removesuffix(".json") + (".tar" if name.endswith(".json.tmp") else "")
            if shard in owned or (slot.rank == 0 and shard not in expected):
                entry.unlink(missing_ok=True)
        elif SHARD_NAME.match(name) and name not in expected and slot.rank == 0:
            log.info("removing stale shard %s (not produced by this index)", entry)
            entry.unlink(missing_ok=True)
            count_file(entry).unlink(missing_ok=True)


def extract_shards(
    index: pa.Table, out_dir: str | Path, cfg: ExtractConfig, slot: WorkerSlot | None = None
) -> ExtractResult:
    """Write the shards of `index` that `slot` owns into `out_dir`; return counts and failures.

    Shard `split-NNNNNN.tar` always holds the same chunk of the sorted index, and rank r writes the
    shards whose position among all shards is r mod world size: ranks together produce exactly the
    files a single process would.
    """
    from eva.utils.log import progress  # imports tqdm: kept out of the decode workers

    slot = slot or WorkerSlot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    plans = plan_shards(index, cfg.samples_per_shard)
    _clean_stale(out, plans, slot)
    mine = [p for p in plans if slot.owns(p.ordinal)]
    result = ExtractResult(rank=slot.rank, world_size=slot.world_size)
    for plan in mine:
        result.splits.setdefault(plan.split, SplitCounts()).videos += len(plan.jobs)
    total = sum(len(p.jobs) for p in mine)
    log.info(
        "extract: %d videos in %d of %d shards (rank %d/%d, %d workers) -> %s",
        total, len(mine), len(plans), slot.rank, slot.world_size, cfg.workers, out,
    )  # fmt: skip
    shard_of = {job.key: plan for plan in mine for job in plan.jobs}
    jobs = (job for plan in mine for job in plan.jobs)
    current: _ShardFile | None = None
    remaining = 0
    try:
        for job, decoded in progress(decode_in_order(jobs, cfg), desc="extract", total=total):
            if current is None:
                plan = shard_of[job.key]
                current, remaining = _ShardFile(out, plan), len(plan.jobs)
            counts = result.splits[job.split]
            if isinstance(decoded, str):
                counts.failed += 1
                result.failures.append(
                    {"video_id": job.video_id, "path": job.path, "split": job.split, "reason": decoded}
                )
            else:
                current.write(sample_record(job, decoded))
                counts.written += 1
                _note_damage(result, job, decoded)
            remaining -= 1
            if remaining == 0:
                if current.close():
                    result.shards.append(current.final.name)
                    counts.shards += 1
                current = None
    finally:
        if current is not None:
            current.abort()
    result.seconds = time.monotonic() - started
    if result.failures:
        log.warning("extract: %d videos skipped (see metrics)", len(result.failures))
    return result
