"""Moved: the clip/attribute input pipeline is `eva.data.clips` (evaluation must not need the trainer).

Re-exported here for code that still imports it from the trainer.
"""

from eva.data.clips import (
    ClipSpec,
    SplitSize,
    VideoAttributeDataset,
    derive_seed,
    make_loader,
    normalize,
    open_attribute_store,
    random_resized_crop_box,
    read_classes,
    sample_frame_indices,
    spatial_crops,
    split_size,
    steps_per_epoch,
    train_clip,
)

__all__ = [
    "ClipSpec",
    "SplitSize",
    "VideoAttributeDataset",
    "derive_seed",
    "make_loader",
    "normalize",
    "open_attribute_store",
    "random_resized_crop_box",
    "read_classes",
    "sample_frame_indices",
    "spatial_crops",
    "split_size",
    "steps_per_epoch",
    "train_clip",
]
