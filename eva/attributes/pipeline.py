"""The attributes stage's loop: shards -> six attributes per keyframe -> one Parquet file per split.

Work is cut at shard granularity: every shard becomes a part file in a cache folder keyed by a hash
of everything that determines its contents (attribute params, model and vocabulary files, the shard's
own fingerprint). Parts survive DVC deleting the stage outputs, so an interrupted or re-run stage
skips finished shards; ranks (torchrun / SLURM) take disjoint shards and rank 0 merges. Within a
shard, videos are batched so every model forward sees `batch_size` images.

Nothing here reads a sample's label: attributes of an unlabeled video are computed the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from webdataset.tariterators import tarfile_samples

from eva.attributes.caption import Captioner
from eva.attributes.detect import ObjectDetector, with_fallback
from eva.attributes.encode import HierarchicalEncoder
from eva.attributes.label import LabelResult, ZeroShotLabeler, read_vocabulary
from eva.attributes.segment import LABEL_FIELD, SegmentationMasker
from eva.attributes.visual import (
    MASK_METHOD,
    MODEL_MASKS,
    KeyframeImages,
    box_masks,
    choose_keyframes,
    keyframe_images,
)
from eva.config import (
    OPTIONAL_TEXT,
    TEXT,
    check_fields,
    integer,
    invalid,
    number,
    one_of,
    section_values,
    setting,
)
from eva.data.attribute_store import (
    ATTRIBUTES,
    VISUAL_ATTRIBUTES,
    AttributeMeta,
    VideoAttributes,
    attribute_schema,
    concat_parquet,
    read_meta,
    rows_to_table,
    write_table,
)
from eva.data.shards import VideoSample, decode_sample, list_shards
from eva.utils.dist import WorkerSlot, resolve_device, worker_slot
from eva.utils.fingerprint import file_fingerprint, path_fingerprint
from eva.utils.io import atomic_path, write_json
from eva.utils.log import progress
from eva.weights_io import load_open_clip, weights_fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")

SPLITS = ("train", "val")
# Bump when a code change alters what a part file contains, so stale cached parts are not reused.
CACHE_VERSION = 1
PHASES = ("read", "masks", "captioner", "label", "encoding", "writing")
_MODEL_PHASES = ("captioner", "label", "encoding")
LABEL_METHODS = ("clip", "detector")
# Choices added after the demo's outputs were fixed: they enter the cache key, the metrics and the file
# metadata only while they take effect (`AttributeConfig.in_use`), so a run at the defaults keeps its bytes.
MODEL_CHOICES = ("label_method", "detector", "label_threshold", "mask_model", "mask_prompt", "mask_threshold")


@dataclass(frozen=True)
class AttributeConfig:
    """The `attributes` section of params.yaml; a bad value names its key."""

    clip_model: str = setting("clip.model", rule=TEXT)
    captioner: str = setting(rule=TEXT)
    vocabulary: str = setting("label.vocabulary", rule=TEXT)
    clip_pretrained: str = setting("clip.pretrained", default="", rule=OPTIONAL_TEXT)
    keyframes: int = setting(default=4, rule=integer(1))
    max_new_tokens: int = setting("caption.max_new_tokens", default=12, rule=integer(1))
    mask_method: str = setting("mask.method", default="median", rule=MASK_METHOD)
    label_method: str = setting("label.method", default="clip", rule=one_of(*LABEL_METHODS))
    detector: str = setting("label.detector", default="google/owlv2-base-patch16-ensemble", rule=TEXT)
    # detector: a top box scoring below this keeps no box, and the keyframe takes CLIP's zero-shot label
    label_threshold: float = setting("label.threshold", default=0.1, rule=number(0, below=1))
    mask_model: str = setting("mask.model", default="CIDAS/clipseg-rd64-refined", rule=TEXT)
    mask_prompt: str = setting("mask.prompt", default="the main subject", rule=TEXT)
    mask_threshold: float = setting("mask.threshold", default=0.5, rule=number(above=0, below=1))
    batch_size: int = setting(default=32, rule=integer(1))
    device: str = setting(default="auto", rule=TEXT)  # auto | cpu | cuda | cuda:N
    gallery_videos: int = setting(default=6, rule=integer(0))  # videos in the HTML gallery (stage only)

    def __post_init__(self) -> None:
        check_fields(self, "attributes")
        object.__setattr__(self, "clip_pretrained", self.clip_pretrained or "")
        detector = self.label_method == "detector"
        if self.mask_method == "box" and not detector:
            raise invalid(
                "attributes.mask.method", "median, center or model unless `attributes.label.method` is "
                "detector (the box is the detector's)", self.mask_method,
            )  # fmt: skip
        if self.mask_method == "model" and LABEL_FIELD in self.mask_prompt and not detector:
            raise invalid(
                "attributes.mask.prompt", f"a prompt without {LABEL_FIELD} unless `attributes.label.method` "
                "is detector (the label is the detector's)", self.mask_prompt,
            )  # fmt: skip
        for used, key, value in ((detector, "label.detector", self.detector),
                                 (self.mask_method == "model", "mask.model", self.mask_model)):  # fmt: skip
            if used and not value.strip():
                raise invalid(f"attributes.{key}", "a hub name or a local folder", value)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AttributeConfig:
        return cls(**section_values(cls, params, "attributes"))

    def cache_key(self) -> str:
        """Hash of what decides the attribute values (not batch size or device)."""
        content = {
            "version": CACHE_VERSION,
            "clip": [
                self.clip_model,
                self.clip_pretrained,
                *weights_fingerprint(self.clip_model, self.clip_pretrained),
            ],
            "captioner": [self.captioner, path_fingerprint(self.captioner)],
            "vocabulary": path_fingerprint(self.vocabulary),
            "keyframes": self.keyframes,
            "max_new_tokens": self.max_new_tokens,
            "mask_method": self.mask_method,
        }
        for name, value in self.in_use().items():
            content[name] = [value, path_fingerprint(value)] if name in ("detector", "mask_model") else value
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def in_use(self) -> dict[str, Any]:
        """The MODEL_CHOICES that take effect, by field name: none at the defaults (CLIP label, a mask
        without a segmentation model)."""
        used: dict[str, Any] = {}
        if self.label_method != "clip":
            used |= {"label_method": self.label_method, "detector": self.detector,
                     "label_threshold": self.label_threshold}  # fmt: skip
        if self.mask_method == "model":
            used |= {"mask_model": self.mask_model, "mask_prompt": self.mask_prompt,
                     "mask_threshold": self.mask_threshold}  # fmt: skip
        return used

    def recorded(self) -> dict[str, Any]:
        """The config as the metrics record it: MODEL_CHOICES only where they take effect."""
        return {k: v for k, v in asdict(self).items() if k not in MODEL_CHOICES} | self.in_use()


class PhaseTimer:
    """Wall seconds per phase (synchronising CUDA so GPU time lands in the right phase)."""

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda" and phase in _MODEL_PHASES:
                torch.cuda.synchronize(self.device)
            self.seconds[phase] += time.perf_counter() - start


@dataclass
class AttributeModels:
    encoder: HierarchicalEncoder
    labeler: ZeroShotLabeler  # its per-layer vocabulary tensors are the label attribute, whoever labels
    captioner: Captioner
    detector: ObjectDetector | None = None  # attributes.label.method: detector
    masker: SegmentationMasker | None = None  # attributes.mask.method: model

    def meta(self, cfg: AttributeConfig) -> AttributeMeta:
        return AttributeMeta(
            encoder=cfg.clip_model,
            pretrained=cfg.clip_pretrained,
            text_layers=self.encoder.text_layers,
            image_layers=self.encoder.image_layers,
            dim=self.encoder.dim,
            keyframes=cfg.keyframes,
            attributes=ATTRIBUTES,
            captioner=cfg.captioner,
            extra={
                "label_prompt": "This is a photo of a {}.",
                "vocabulary": cfg.vocabulary,
                "vocabulary_size": len(self.labeler.vocabulary),
                "mask_method": cfg.mask_method,
                "max_new_tokens": cfg.max_new_tokens,
                **cfg.in_use(),  # `label_method: detector` adds the label_box column (store.py)
            },
        )


def load_models(cfg: AttributeConfig, device: torch.device) -> AttributeModels:
    """Load every model first, so a missing checkpoint fails before any shard is read."""
    vocabulary = read_vocabulary(cfg.vocabulary)
    bundle = load_open_clip(cfg.clip_model, cfg.clip_pretrained, param="attributes.clip", device=device)
    captioner = Captioner(cfg.captioner, param="attributes.captioner", device=device)
    encoder = HierarchicalEncoder(bundle, device)
    labeler = ZeroShotLabeler(encoder, vocabulary, batch_size=max(cfg.batch_size, 64))
    detector = None
    if cfg.label_method == "detector":
        detector = ObjectDetector(cfg.detector, vocabulary, param="attributes.label.detector", device=device)
    return AttributeModels(
        encoder=encoder,
        labeler=labeler,
        captioner=captioner,
        detector=detector,
        masker=load_masker(cfg, device),
    )


def load_masker(cfg: AttributeConfig, device: torch.device) -> SegmentationMasker | None:
    """The mask model when `attributes.mask.method` is `model`, else None."""
    if cfg.mask_method != "model":
        return None
    return SegmentationMasker(
        cfg.mask_model, cfg.mask_prompt, cfg.mask_threshold, param="attributes.mask.model", device=device
    )


def detect(
    detector: ObjectDetector, images: list[torch.Tensor], batch_size: int, threshold: float
) -> LabelResult:
    """The detector's label and top box for every image, `batch_size` images per forward; a box
    scoring below `threshold` is emptied (all zeros: the masks take the centre prior)."""
    parts = [detector.detect(images[b]) for b in _batches(len(images), batch_size)]
    score = torch.cat([p.score for p in parts])
    boxes = torch.cat([p.boxes for p in parts if p.boxes is not None])
    boxes[score < threshold] = 0.0
    return LabelResult(
        index=torch.cat([p.index for p in parts]),
        score=score,
        texts=[t for p in parts for t in p.texts],
        boxes=boxes,
    )


@dataclass
class PreparedChunk:
    """A few videos' keyframes and their pixel-level attributes, ready for the models."""

    videos: list[tuple[str, list[int]]] = field(default_factory=list)  # (video_id, keyframe positions)
    images: list[list[KeyframeImages]] = field(default_factory=list)
    samples: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    replaced: list[dict[str, Any]] = field(default_factory=list)
    center_prior_keyframes: int = 0
    frames: list[torch.Tensor] = field(default_factory=list)  # per video, until a model makes its masks


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def prepare_chunk(samples: list[VideoSample], cfg: AttributeConfig, timer: PhaseTimer) -> PreparedChunk:
    """CPU part: keyframe choice (bad frames replaced or the video skipped), masks, motion images."""
    out = PreparedChunk(samples=len(samples))
    with timer("masks"):
        for sample in samples:
            video_id = str(sample.meta.get("video_id", sample.key))
            try:
                positions, replaced = choose_keyframes(sample.frames, cfg.keyframes)
            except ValueError as err:
                out.skipped.append({"video_id": video_id, "reason": str(err)})
                continue
            out.replaced += [{"video_id": video_id, "position": p, "reason": r} for p, r in replaced]
            out.videos.append((video_id, positions))
            if cfg.mask_method in MODEL_MASKS:  # the masks come from a model: `model_masked_images`
                out.frames.append(sample.frames)
                continue
            images = keyframe_images(sample.frames, positions, cfg.mask_method)
            out.center_prior_keyframes += sum(im.mask_source == "center" for im in images)
            out.images.append(images)
    return out


def model_masked_images(
    chunk: PreparedChunk, models: AttributeModels, cfg: AttributeConfig, timer: PhaseTimer
) -> LabelResult | None:
    """Fill `chunk.images` with masks from the detector's box or the mask model (batched across the
    chunk); returns the detector's labels when it ran (a `{label}` prompt and the box need them first)."""
    originals = [
        frames[p]
        for frames, (_, positions) in zip(chunk.frames, chunk.videos, strict=True)
        for p in positions
    ]
    detected = None
    if models.detector is not None:
        with timer("label"):
            detected = detect(models.detector, originals, cfg.batch_size, cfg.label_threshold)
    with timer("masks"):
        if cfg.mask_method == "box":
            assert detected is not None and detected.boxes is not None
            masks = [
                box_masks(box[None], *im.shape[-2:])[0]
                for box, im in zip(detected.boxes, originals, strict=True)
            ]
        else:
            assert models.masker is not None
            labels = detected.texts if detected is not None else [""] * len(originals)
            masks = []
            for b in _batches(len(originals), cfg.batch_size):
                masks += models.masker.masks(originals[b], labels[b])
        k = cfg.keyframes
        for i, (frames, (_, positions)) in enumerate(zip(chunk.frames, chunk.videos, strict=True)):
            images = keyframe_images(
                frames, positions, cfg.mask_method, torch.stack(masks[i * k : (i + 1) * k])
            )
            chunk.center_prior_keyframes += sum(im.mask_source == "center" for im in images)
            chunk.images.append(images)
        chunk.frames.clear()
    return detected


def encode_chunk(
    chunk: PreparedChunk, models: AttributeModels, cfg: AttributeConfig, timer: PhaseTimer
) -> list[VideoAttributes]:
    """Model part: every forward batched across the chunk's videos (`batch_size` images each)."""
    n, k = len(chunk.videos), cfg.keyframes
    if n == 0:
        return []
    encoder = models.encoder
    detected = model_masked_images(chunk, models, cfg, timer) if chunk.frames else None
    with timer("encoding"):
        # Visual attributes: attribute-major, then video, then keyframe -> [4*n*K] images.
        flat = [getattr(im, name) for name in VISUAL_ATTRIBUTES for kf in chunk.images for im in kf]
        encoded = [
            encoder.encode_images(encoder.preprocess(flat[b])) for b in _batches(len(flat), cfg.batch_size)
        ]
        visual = torch.cat(encoded).view(
            len(VISUAL_ATTRIBUTES), n, k, encoder.image_layers, -1
        )  # [4, n, K, Lv, D]

    with timer("label"):
        original = visual[VISUAL_ATTRIBUTES.index("original")]  # [n, K, Lv, D], last layer == encode_image
        labels = models.labeler.classify(original[:, :, -1].reshape(n * k, -1))  # CLIP zero-shot
        if models.detector is not None:
            if detected is None:  # not yet run for the masks
                originals = [im.original for kf in chunk.images for im in kf]
                detected = detect(models.detector, originals, cfg.batch_size, cfg.label_threshold)
            labels = with_fallback(detected, labels, cfg.label_threshold)
        label_layers = models.labeler.layers[labels.index.to(models.labeler.layers.device)].view(
            n, k, encoder.text_layers, -1
        )  # [n, K, Lt, D]

    with timer("captioner"):
        originals = [im.original for kf in chunk.images for im in kf]
        captions: list[str] = []
        for b in _batches(len(originals), cfg.batch_size):
            captions += models.captioner.generate(originals[b], cfg.max_new_tokens)

    with timer("encoding"):
        caption_layers = torch.cat(
            [encoder.encode_texts(captions[b]) for b in _batches(len(captions), cfg.batch_size)]
        ).view(n, k, encoder.text_layers, -1)  # [n, K, Lt, D]
        visual16 = visual.to(torch.float16).cpu().numpy()
        label16 = label_layers.to(torch.float16).cpu().numpy()
        caption16 = caption_layers.to(torch.float16).cpu().numpy()

    scores = labels.score.view(n, k).tolist()
    boxes = None if labels.boxes is None else labels.boxes.view(n, k * 4).tolist()  # detector only
    rows = []
    for i, (video_id, positions) in enumerate(chunk.videos):
        embeddings = {"label": label16[i], "caption": caption16[i]}
        embeddings.update({name: visual16[a, i] for a, name in enumerate(VISUAL_ATTRIBUTES)})
        rows.append(
            VideoAttributes(
                video_id=video_id,
                keyframe_indices=positions,
                label_text=labels.texts[i * k : (i + 1) * k],
                label_score=scores[i],
                caption_text=captions[i * k : (i + 1) * k],
                mask_coverage=[im.coverage for im in chunk.images[i]],
                embeddings=embeddings,
                label_box=None if boxes is None else boxes[i],
            )
        )
    return rows


def _chunked(items: Iterator[VideoSample], size: int) -> Iterator[list[VideoSample]]:
    chunk: list[VideoSample] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_DONE = object()


def _prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce the next items in a background thread (torch ops release the GIL), in order."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eva-prefetch") as pool:
        pending = deque(pool.submit(next, items, _DONE) for _ in range(depth))
        while (item := pending.popleft().result()) is not _DONE:
            pending.append(pool.submit(next, items, _DONE))
            yield item


def decoded_samples(
    shards: list[str], skipped: list[dict[str, str]] | None = None, timer: PhaseTimer | None = None
) -> Iterator[VideoSample]:
    """Samples in shard then tar order; an undecodable one (corrupt JPEG, bad json) is recorded in
    `skipped` and passed over instead of stopping the run."""
    raw_samples = iter(tarfile_samples([{"url": shard} for shard in shards]))
    while True:
        with timer("read") if timer is not None else nullcontext():
            raw = next(raw_samples, None)
            if raw is None:
                return
            try:
                sample = decode_sample(raw)
            except (ValueError, RuntimeError, KeyError) as err:
                try:
                    video_id = str(json.loads(raw["json"])["video_id"])
                except (KeyError, ValueError, TypeError):
                    video_id = str(raw.get("__key__"))
                if skipped is not None:
                    skipped.append({"video_id": video_id, "reason": f"undecodable sample: {err}"})
                continue
        yield sample


def process_shard(
    shard: str,
    part: Path,
    models: AttributeModels,
    meta: AttributeMeta,
    cfg: AttributeConfig,
    timer: PhaseTimer,
) -> dict[str, Any]:
    """One shard -> one part file (+ its json summary); returns the summary."""
    videos_per_chunk = max(1, cfg.batch_size // cfg.keyframes)
    decode_skipped: list[dict[str, str]] = []
    samples = progress(decoded_samples([shard], decode_skipped, timer), desc=f"attributes {Path(shard).name}")
    chunks = (prepare_chunk(chunk, cfg, timer) for chunk in _chunked(samples, videos_per_chunk))
    if models.encoder.device.type == "cuda":
        chunks = _prefetch(chunks)  # decoding + masks of the next chunk overlap this chunk's GPU work
    rows: list[VideoAttributes] = []
    skipped, replaced = [], []
    seen = center_prior = 0
    for chunk in chunks:
        rows += encode_chunk(chunk, models, cfg, timer)
        seen += chunk.samples
        skipped += chunk.skipped
        replaced += chunk.replaced
        center_prior += chunk.center_prior_keyframes
    skipped = decode_skipped + skipped
    for item in skipped:
        log.warning("%s: skipped video %s: %s", Path(shard).name, item["video_id"], item["reason"])
    seen += len(decode_skipped)
    summary = {
        "shard": Path(shard).name,
        "videos": seen,
        "written": len(rows),
        "skipped": skipped,
        "replaced_keyframes": replaced,
        "center_prior_keyframes": center_prior,
        "keyframes": len(rows) * cfg.keyframes,
    }
    with timer("writing"):
        write_json(part.with_suffix(".json"), summary)
        with atomic_path(part) as tmp:
            write_table(tmp, rows_to_table(rows, meta))
    return summary


@dataclass
class AttributesRun:
    """What a run produced: final files (rank 0 only), metrics, and this rank's timings."""

    outputs: dict[str, Path]
    metrics: dict[str, Any]
    merged: bool
    models: AttributeModels | None = None  # loaded by this run (none when every shard was cached)


def _part_path(cache: Path, shard: str) -> Path:
    return cache / f"{Path(shard).stem}-{file_fingerprint(Path(shard))}.parquet"  # stem names the split


def _wait_for(parts: list[Path], poll_s: float, timeout_s: float) -> None:
    start = last_log = time.monotonic()
    while missing := [p for p in parts if not p.is_file()]:
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(
                f"rank 0 waited {timeout_s:.0f} s for {len(missing)} part files of other ranks, e.g. {missing[0]}; "
                "re-run the stage (finished parts are kept) once they are done"
            )
        if now - last_log > 60:
            log.info("waiting for %d part files from other ranks", len(missing))
            last_log = now
        time.sleep(poll_s)


def run_attributes(
    shard_root: str | Path,
    out_dir: str | Path,
    cfg: AttributeConfig,
    *,
    cache_dir: str | Path = ".eva_cache/attributes",
    splits: tuple[str, ...] = SPLITS,
    slot: WorkerSlot | None = None,
    poll_s: float = 10.0,
    wait_timeout_s: float = 24 * 3600.0,
) -> AttributesRun:
    """Compute (or reuse) the parts this rank owns; rank 0 then merges `<out_dir>/<split>.parquet`."""
    slot = slot or worker_slot()
    device = resolve_device(cfg.device)
    shards: dict[str, list[str]] = {}
    for split in splits:
        try:
            shards[split] = list_shards(shard_root, split)
        except FileNotFoundError:
            log.warning("no %s shards in %s: that split gets no attribute file", split, shard_root)
    if not shards:
        raise FileNotFoundError(
            f"no shards of any split {splits} in {shard_root} (run the extract stage first)"
        )

    cache = Path(cache_dir) / cfg.cache_key()
    cache.mkdir(parents=True, exist_ok=True)
    work = [(split, shard, _part_path(cache, shard)) for split in shards for shard in shards[split]]
    mine = [w for i, w in enumerate(work) if slot.owns(i)]
    pending = [w for w in mine if not (w[2].is_file() and w[2].with_suffix(".json").is_file())]
    log.info(
        "attributes: %d shards, %d owned by rank %d/%d, %d to compute (cache %s)",
        len(work), len(mine), slot.rank, slot.world_size, len(pending), cache,
    )  # fmt: skip

    timer = PhaseTimer(device)
    meta: AttributeMeta | None = None
    models: AttributeModels | None = None
    computed_videos = 0
    if pending:
        with timer("load_models"):
            models = load_models(cfg, device)
        meta = models.meta(cfg)
        for _, shard, part in pending:
            computed_videos += process_shard(shard, part, models, meta, cfg, timer)["videos"]

    if slot.rank != 0:
        return AttributesRun(
            outputs={}, metrics={"seconds": dict(timer.seconds)}, merged=False, models=models
        )
    _wait_for([w[2] for w in work] + [w[2].with_suffix(".json") for w in work], poll_s, wait_timeout_s)
    if meta is None:  # everything came from the cache: the parts carry the metadata
        meta = read_meta(work[0][2])
    out_dir = Path(out_dir)
    outputs = {}
    with timer("merge"):
        for split in shards:
            outputs[split] = out_dir / f"{split}.parquet"
            with atomic_path(outputs[split]) as tmp:
                concat_parquet([p for s, _, p in work if s == split], tmp, attribute_schema(meta))
    summaries = {
        split: [json.loads(p.with_suffix(".json").read_text()) for s, _, p in work if s == split]
        for split in shards
    }
    metrics = _metrics(
        summaries, meta, cfg, device, timer, reused=len(mine) - len(pending), computed_videos=computed_videos
    )
    return AttributesRun(outputs=outputs, metrics=metrics, merged=True, models=models)


def _metrics(
    summaries: dict[str, list[dict[str, Any]]],
    meta: AttributeMeta,
    cfg: AttributeConfig,
    device: torch.device,
    timer: PhaseTimer,
    reused: int,
    computed_videos: int,
) -> dict[str, Any]:
    splits, skipped, replaced = {}, [], []
    for split, parts in summaries.items():
        for s in parts:
            skipped += [{"split": split, "shard": s["shard"], **item} for item in s["skipped"]]
            replaced += [{"split": split, "shard": s["shard"], **item} for item in s["replaced_keyframes"]]
        keyframes = sum(s["keyframes"] for s in parts)
        splits[split] = {
            "shards": len(parts),
            "videos": sum(s["videos"] for s in parts),
            "written": sum(s["written"] for s in parts),
            "skipped": sum(len(s["skipped"]) for s in parts),
            "replaced_keyframes": sum(len(s["replaced_keyframes"]) for s in parts),
            "center_prior_fraction": round(
                sum(s["center_prior_keyframes"] for s in parts) / max(keyframes, 1), 4
            ),
        }
    seconds = {phase: round(timer.seconds.get(phase, 0.0), 3) for phase in (*PHASES, "load_models", "merge")}
    computed = sum(timer.seconds.get(p, 0.0) for p in PHASES)
    return {
        "splits": splits,
        "skipped": skipped,
        "replaced_keyframes": replaced,
        "encoder": {k: v for k, v in asdict(meta).items() if k != "extra"}
        | {"attributes": list(meta.attributes)},
        "config": cfg.recorded() | {"cache_key": cfg.cache_key()},
        "device": str(device),
        "shards_reused": reused,
        "seconds": seconds,
        "seconds_note": "this run only; shards reused from the cache cost nothing",
        "videos_computed": computed_videos,
        "videos_per_second": round(computed_videos / computed, 2) if computed > 0 else None,
    }
