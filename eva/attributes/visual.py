"""Weight-free visual attributes of a keyframe: foreground / background masks and a motion image.

The mask is what moves: the keyframe's difference from the temporal median of the video's stored
frames (a background estimate), smoothed, thresholded (Otsu, with a floor), cleaned by morphological
opening and closing. When nothing or everything moves (static shot, camera motion) a centred ellipse
stands in, the usual prior that the subject is framed in the middle.

Two methods take the mask from a model instead (computed with the models, passed in as `masks`):
`box`, the detector's top box (`eva.attributes.detect`), and `model`, a segmentation model's
thresholded map (`eva.attributes.segment`). The centre prior stands in for an empty box, and for a
model mask that is empty or covers almost everything, as for the motion mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eva.config import check, one_of
from eva.data.segments import segment_centres

MASK_METHODS = ("median", "center", "box", "model")
MASK_METHOD = one_of(
    *MASK_METHODS
)  # `attributes.mask.method`: AttributeConfig's rule and this module's guard
MODEL_MASKS = ("box", "model")  # masks made by a model: `keyframe_images(..., masks=...)`
MIN_SIDE = 16  # frames smaller than this cannot be encoded meaningfully
BLACK_LEVEL = 8  # a frame whose brightest pixel is at most this is treated as black
_MIN_DIFF = 15.0  # below this grey-level difference a pixel never counts as moving
_COVERAGE_RANGE = (0.005, 0.85)  # outside it the motion mask is not a subject: use the centre prior


@dataclass
class KeyframeImages:
    """The four visual attributes of one keyframe, uint8 `[3, H, W]`, plus the mask's coverage."""

    position: int
    original: torch.Tensor
    foreground: torch.Tensor
    background: torch.Tensor
    dynamic: torch.Tensor
    coverage: float
    mask_source: str  # "motion" (median), "box", "model", or "center" (the prior stood in)


def keyframe_positions(num_frames: int, keyframes: int) -> list[int]:
    """Centres of `keyframes` equal segments of the stored frames (TSN-style sparse choice)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one stored frame")
    return segment_centres(0, num_frames, keyframes)


def frame_problem(frame: torch.Tensor) -> str | None:
    """Why a uint8 `[3, H, W]` frame cannot serve as a keyframe, or None when it can."""
    if min(frame.shape[-2:]) < MIN_SIDE:
        return f"frame {tuple(frame.shape[-2:])} smaller than {MIN_SIDE} px"
    if int(frame.max()) <= BLACK_LEVEL:
        return "all black"
    return None


def choose_keyframes(frames: torch.Tensor, keyframes: int) -> tuple[list[int], list[tuple[int, str]]]:
    """Evenly spaced keyframes; a bad one is replaced by the nearest usable stored frame.

    Returns (positions, replaced) where `replaced` lists (ideal position, reason). Raises ValueError
    when no stored frame is usable, so the caller can skip and record the video.
    """
    if min(frames.shape[-2:]) < MIN_SIDE:
        problems: list[str | None] = [frame_problem(frames[0])] * len(frames)
    else:  # one reduction for all frames instead of one per frame
        problems = ["all black" if int(m) <= BLACK_LEVEL else None for m in frames.amax(dim=(1, 2, 3))]
    good = [i for i, p in enumerate(problems) if p is None]
    if not good:
        raise ValueError(f"no usable frame ({problems[0]})")
    positions, replaced = [], []
    for ideal in keyframe_positions(len(frames), keyframes):
        if problems[ideal] is None:
            positions.append(ideal)
        else:
            positions.append(min(good, key=lambda i: (abs(i - ideal), i)))
            replaced.append((ideal, str(problems[ideal])))
    return positions, replaced


def center_prior(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool `[H, W]` ellipse over the central 70% of each side."""
    ys = (torch.arange(height, device=device).float() + 0.5) / height - 0.5
    xs = (torch.arange(width, device=device).float() + 0.5) / width - 0.5
    return (ys[:, None] / 0.35) ** 2 + (xs[None, :] / 0.35) ** 2 <= 1.0


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool `[K, H, W]`: the pixels inside each float `[K, 4]` box (x0, y0, x1, y1 in pixels, rounded)."""
    x0, y0, x1, y1 = boxes.round().long().unbind(-1)  # [K] each
    ys, xs = torch.arange(height), torch.arange(width)
    rows = (ys[None] >= y0[:, None]) & (ys[None] < y1[:, None])  # [K, H]
    cols = (xs[None] >= x0[:, None]) & (xs[None] < x1[:, None])  # [K, W]
    return rows[:, :, None] & cols[:, None, :]


def _otsu(values: torch.Tensor, bins: int = 64) -> float:
    """Otsu's threshold of a 1-D float tensor (maximises between-class variance)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        return hi
    hist = torch.histc(values, bins=bins, min=lo, max=hi).double()
    centres = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)[:-1] + (hi - lo) / (2 * bins)
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centres).cumsum(0) / w0.clamp(min=1)
    m1 = ((hist * centres).sum() - (hist * centres).cumsum(0)) / w1.clamp(min=1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(between.argmax())] + (hi - lo) / (2 * bins))


def _dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    return F.max_pool2d(mask, k, stride=1, padding=k // 2)


def _erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    return -F.max_pool2d(-mask, k, stride=1, padding=k // 2)


def motion_masks(keyframes: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What moves in each keyframe: uint8 `[K, 3, H, W]` vs the uint8 `[3, H, W]` temporal median.

    Returns (bool masks `[K, H, W]`, bool `[K]` usable): a mask is unusable when it covers almost
    nothing (static shot) or almost everything (camera motion, cut).
    """
    h, w = keyframes.shape[-2:]
    diff = (keyframes.short() - background.short()).abs().amax(dim=1, keepdim=True).float()  # [K, 1, H, W]
    k = max(3, (min(h, w) // 32) | 1)  # odd kernel, ~3% of the short side
    smooth = F.avg_pool2d(diff, k, stride=1, padding=k // 2, count_include_pad=False)  # [K, 1, H, W]
    thresholds = torch.tensor([max(_MIN_DIFF, _otsu(s.flatten())) for s in smooth]).view(-1, 1, 1, 1)
    mask = (smooth > thresholds).float()
    mask = _dilate(_erode(mask, 3), 3)  # opening: drop speckles
    mask = _erode(_dilate(mask, 2 * k + 1), 2 * k + 1)  # closing: fill holes in the moving region
    mask = mask[:, 0] > 0.5  # [K, H, W]
    coverage = mask.float().mean(dim=(1, 2))  # [K]
    usable = (coverage >= _COVERAGE_RANGE[0]) & (coverage <= _COVERAGE_RANGE[1])
    return mask, usable


def motion_images(frames: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """|frame - next stored frame| (previous one at the end), stretched to 0..255: uint8 `[K, 3, H, W]`."""
    t = frames.shape[0]
    if t == 1:
        return torch.zeros_like(frames[positions])
    neighbours = [p + 1 if p + 1 < t else p - 1 for p in positions]
    diff = (frames[positions].short() - frames[neighbours].short()).abs()  # [K, 3, H, W]
    peak = diff.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1).float()  # [K, 1, 1, 1]
    return (diff.float() * (255.0 / peak)).round().to(torch.uint8)


def keyframe_images(
    frames: torch.Tensor, positions: list[int], method: str = "median", masks: torch.Tensor | None = None
) -> list[KeyframeImages]:
    """Original, foreground, background and dynamic images for each keyframe of uint8 `[T, 3, H, W]`.

    `masks`: bool `[K, H, W]` from the method's model, for the methods in MODEL_MASKS (only).

    Vectorised over the keyframes: a video costs a handful of small tensor ops, not K times as many.
    """
    check("attributes.mask.method", method, MASK_METHOD)
    h, w = frames.shape[-2:]
    keyframes = frames[positions]  # [K, 3, H, W]
    prior = center_prior(h, w, frames.device)  # [H, W]
    if (masks is not None) != (method in MODEL_MASKS):
        raise ValueError(f"mask method {method!r} {'needs' if masks is None else 'takes no'} model masks")
    if method == "median":
        background = frames.median(dim=0).values  # [3, H, W], lower median: exact on uint8
        masks, usable = motion_masks(keyframes, background)
        masks = torch.where(usable[:, None, None], masks, prior)  # [K, H, W]
    elif masks is not None:
        masks = masks.to(prior.device)
        coverage = masks.float().mean(dim=(1, 2))  # [K]
        usable = coverage > 0  # a box is the subject whatever its size; a segmentation map is not:
        if method == "model":
            usable &= (coverage >= _COVERAGE_RANGE[0]) & (coverage <= _COVERAGE_RANGE[1])
        masks = torch.where(usable[:, None, None], masks, prior)
    else:
        usable = torch.zeros(len(positions), dtype=torch.bool)
        masks = prior.expand(len(positions), h, w)
    source = "motion" if method == "median" else method
    keep = masks.to(torch.uint8)[:, None]  # [K, 1, H, W]
    foreground, background_images = keyframes * keep, keyframes * (1 - keep)
    dynamic = motion_images(frames, positions)
    coverage = masks.float().mean(dim=(1, 2)).tolist()
    return [
        KeyframeImages(
            position=pos,
            original=keyframes[i],
            foreground=foreground[i],
            background=background_images[i],
            dynamic=dynamic[i],
            coverage=coverage[i],
            mask_source=source if bool(usable[i]) else "center",
        )
        for i, pos in enumerate(positions)
    ]
