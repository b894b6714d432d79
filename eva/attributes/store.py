"""Re-export of `eva.data.attribute_store`, where the attribute store's contract lives.

Data and models import the contract from `eva.data`, so that they do not depend on the attribute
extractors; this name stays for the extractors, the stages and existing callers.
"""

from eva.data.attribute_store import (
    ATTRIBUTES,
    BOX_COLUMN,
    METADATA_KEY,
    ROW_GROUP_ROWS,
    TEXT_ATTRIBUTES,
    VISUAL_ATTRIBUTES,
    AttributeMeta,
    AttributeStore,
    VideoAttributes,
    attribute_schema,
    attributes_for_stage,
    concat_parquet,
    read_meta,
    rows_to_table,
    write_table,
)

__all__ = [
    "ATTRIBUTES",
    "BOX_COLUMN",
    "METADATA_KEY",
    "ROW_GROUP_ROWS",
    "TEXT_ATTRIBUTES",
    "VISUAL_ATTRIBUTES",
    "AttributeMeta",
    "AttributeStore",
    "VideoAttributes",
    "attribute_schema",
    "attributes_for_stage",
    "concat_parquet",
    "read_meta",
    "rows_to_table",
    "write_table",
]
