"""Segment centres: the one formula for TSN-style sparse sampling (extraction, attribute keyframes).

`[first, stop)` is cut into `count` equal segments; segment i's centre is
`first + floor((2i + 1) * (stop - first) / (2 * count))`, computed in integers so no frame count
rounds differently on another machine or path (a float `step * (i + 0.5)` can land just below an
integer). With fewer frames than segments, centres repeat.
"""

from __future__ import annotations

from eva.config import one_of

# model.sampling: how a clip's frames are picked from the stored ones (eva.data.clips); SAMPLING is
# ModelConfig's rule and ClipSpec's guard
SAMPLINGS = ("segments", "dense")
SAMPLING = one_of(*SAMPLINGS)


def segment_centres(first: int, stop: int, count: int) -> list[int]:
    """Centre frame of each of `count` equal segments of `[first, stop)`."""
    if stop <= first:
        raise ValueError(f"empty frame range [{first}, {stop})")
    if count < 1:
        raise ValueError(f"need at least one segment, got {count}")
    n = stop - first
    return [min(first + (2 * i + 1) * n // (2 * count), stop - 1) for i in range(count)]
