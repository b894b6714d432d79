"""A self-contained HTML page showing what the attribute stage saw and said for a few videos.

The pictures are recomputed from the shards at the stored keyframe positions (masks are cheap and
deterministic), the label and caption come from the written Parquet file, so the page shows exactly
what was encoded without storing any images in the attribute file. A detector's top box (stored with
its label) is outlined on the original; a mask model's masks are recomputed by the `masker` given
(the run's own, so the page shows that model's masks).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable

import torch
from PIL import Image

from eva.attributes.segment import SegmentationMasker
from eva.attributes.visual import MODEL_MASKS, box_masks, keyframe_images
from eva.data.attribute_store import BOX_COLUMN, AttributeStore
from eva.data.shards import VideoSample

_COLUMNS = ("original", "foreground", "background", "dynamic")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}
img{width:128px;image-rendering:pixelated;display:block}
.note{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;margin-bottom:1em}
"""


def _png(image) -> str:
    """uint8 `[3, H, W]` tensor -> data URI."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def outlined(image: torch.Tensor, box: list[float], width: int = 1) -> torch.Tensor:
    """A copy of uint8 `[3, H, W]` `image` with `box` (x0, y0, x1, y1 in pixels) outlined in yellow."""
    out = image.clone()
    h, w = out.shape[-2:]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
    yellow = torch.tensor([255, 220, 0], dtype=out.dtype)[:, None, None]
    for region in (
        out[:, y0 : y0 + width, x0 : x1 + 1],
        out[:, y1 - width + 1 : y1 + 1, x0 : x1 + 1],
        out[:, y0 : y1 + 1, x0 : x0 + width],
        out[:, y0 : y1 + 1, x1 - width + 1 : x1 + 1],
    ):
        region[:] = yellow
    return out


def render_gallery(
    samples: Iterable[VideoSample],
    store: AttributeStore,
    *,
    videos: int,
    mask_method: str,
    random_models: bool,
    demo_scores: dict | None = None,
    title: str = "EVA attributes",
    masker: SegmentationMasker | None = None,
) -> str:
    """HTML for the first `videos` samples that have attributes in `store`.

    `random_models` puts up the banner that labels and captions are meaningless; `demo_scores`
    (the held-out scores of the demo's pretrained models) says what they are instead. `masker`: the
    mask model, needed (only) for `mask_method` model.
    """
    if mask_method == "model" and masker is None:
        raise ValueError("the gallery of `attributes.mask.method: model` needs the mask model (masker)")
    meta = store.meta
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if random_models:
        parts.append(
            "<p class='note'><b>Demo models: demo captions are meaningless.</b> The CLIP encoder and the "
            "captioner are tiny random-initialised stand-ins, so captions and object labels mean nothing. "
            + (
                "The motion images use no model and are real.</p>"
                if mask_method in MODEL_MASKS
                else "The masks and motion images use no model and are real.</p>"
            )
        )
    elif demo_scores is not None:
        parts.append(
            "<p class='note'><b>Demo models: tiny CLIP and captioner pretrained on synthetic stills.</b> The "
            "`pretrain` stage trained them on still frames of the demo's own renderer, with captions written "
            "from each scene's shape, colour, size, position and angle (never from an action class). On "
            f"{demo_scores.get('held_out_stills', 0)} held-out stills: zero-shot shape label "
            f"{demo_scores.get('zero_shot_shape_top1', 0.0):.0%} right, caption colour and shape words "
            f"{demo_scores.get('caption_word_accuracy', 0.0):.0%} right. They know the demo's shapes and "
            "colours only.</p>"
        )
    parts.append(
        f"<p>Encoder <code>{html.escape(meta.encoder)}</code> ({meta.text_layers} text / {meta.image_layers} "
        f"image layers, dim {meta.dim}); captioner <code>{html.escape(meta.captioner)}</code>; "
        f"{meta.keyframes} keyframes per video; mask method <code>{html.escape(mask_method)}</code>"
        + "".join(
            f"; {what} <code>{html.escape(str(meta.extra[key]))}</code>"
            for key, what in (
                ("detector", "labels and yellow boxes from the detector"),
                ("mask_model", "mask model"),
                ("mask_prompt", "prompt"),
            )  # fmt: skip
            if key in meta.extra
        )
        + ".</p>"
    )
    shown = 0
    for sample in samples:
        if shown >= videos:
            break
        video_id = str(sample.meta.get("video_id", sample.key))
        if video_id not in store:
            continue
        row = store.describe(video_id)
        parts.append(f"<h2>{html.escape(video_id)}</h2><table><tr><th>frame</th>")
        parts += [f"<th>{name}</th>" for name in _COLUMNS]
        parts.append("<th>label (score)</th><th>caption</th><th>mask coverage</th></tr>")
        positions, boxes = row["keyframe_indices"], row.get(BOX_COLUMN)
        masks = None
        if mask_method == "box":
            masks = box_masks(torch.tensor(boxes, dtype=torch.float32), *sample.frames.shape[-2:])
        elif mask_method == "model":
            assert masker is not None
            masks = torch.stack(masker.masks(list(sample.frames[positions]), row["label_text"]))
        images = keyframe_images(sample.frames, positions, mask_method, masks)
        for i, im in enumerate(images):
            pictures = {name: getattr(im, name) for name in _COLUMNS}
            if boxes is not None:
                pictures["original"] = outlined(im.original, boxes[i])
            parts.append(f"<tr><td>{im.position}</td>")
            parts += [f"<td><img src='{_png(pictures[name])}' alt='{name}'></td>" for name in _COLUMNS]
            parts.append(
                f"<td>{html.escape(row['label_text'][i])} ({row['label_score'][i]:.2f})</td>"
                f"<td>{html.escape(row['caption_text'][i])}</td>"
                f"<td>{row['mask_coverage'][i]:.1%}</td></tr>"
            )
        parts.append("</table>")
        shown += 1
    if shown == 0:
        parts.append("<p>No video with attributes to show.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
