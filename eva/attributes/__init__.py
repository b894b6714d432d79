"""Video attributes (label, caption, foreground, background, original, dynamic) and their storage.

`eva.attributes.store` is what training needs (the reader); `eva.attributes.pipeline` runs the
frozen models that make the attributes (the `attributes` stage).
"""

from eva.attributes.store import (
    ATTRIBUTES,
    TEXT_ATTRIBUTES,
    VISUAL_ATTRIBUTES,
    AttributeMeta,
    AttributeStore,
    attributes_for_stage,
)

__all__ = [
    "ATTRIBUTES",
    "TEXT_ATTRIBUTES",
    "VISUAL_ATTRIBUTES",
    "AttributeMeta",
    "AttributeStore",
    "attributes_for_stage",
]
