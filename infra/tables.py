"""The tables every phase shares: the source, shot and clip schemas, and a dataset's membership column.

They live below the stages so that a stage reading another stage's output (score reads the clip table,
latents/pairs/dpo read a dataset view) depends on the data's shape, not on the stage that wrote it.
The clip table is the one of docs/architecture.md ("The data model").
"""

from __future__ import annotations

import pyarrow as pa

SOURCES_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("media", pa.string()),  # "video" or "image"
        ("size_bytes", pa.int64()),
        ("container", pa.string()),
        ("codec", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("rotation", pa.int32()),  # display rotation applied on decode (degrees counter-clockwise)
        ("error", pa.string()),
    ]
)

SHOTS_SCHEMA = pa.schema(
    [
        ("shot_id", pa.string()),
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("shot_index", pa.int64()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("boundary_in_kind", pa.string()),
        ("boundary_in_score", pa.float64()),
        ("boundary_out_kind", pa.string()),
        ("boundary_out_score", pa.float64()),
        ("detected_by", pa.string()),
        ("error", pa.string()),
    ]
)

CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("media", pa.string()),  # "video", or "image": a 1-frame clip of a still, for image+video stages
        ("shot_id", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int64()),
        ("clip_uri", pa.string()),
        ("error", pa.string()),
    ]
)


# Wide per-clip arrays (thousands of float32 per row) live in a side store beside the clip table, keyed
# by clip_id, read only by the stages that need them: inside the table they would dominate every table
# stage's reads (1M clips x 6,300 floats = 25 GB). Tables of runs made before still carry them: readers
# of the clip table skip them with :func:`narrow`.
WIDE_COLUMNS = ("dedup_embedding",)


def narrow(names: list[str]) -> list[str]:
    """``names`` without the wide per-clip arrays (``WIDE_COLUMNS``): the columns a table stage reads."""
    return [n for n in names if n not in WIDE_COLUMNS]


def read_narrow(manifest) -> pa.Table:
    """A published clip table without its wide per-clip arrays (those columns are never decoded): what a
    table stage reads, whether the run was scored before or after they moved to the side store."""
    import pyarrow.parquet as pq

    from infra import manifest as mf
    from infra import storage

    with storage.open_uri(manifest.data_uri, "rb") as fh:
        names = pq.ParquetFile(fh).schema_arrow.names
    return mf.read_arrow(manifest, narrow(names) if len(narrow(names)) < len(names) else None)


def flag(dataset: str) -> str:
    """The boolean column a dataset view adds to the pool: ``in_<dataset>`` (True = the clip is a member)."""
    return f"in_{dataset}"
