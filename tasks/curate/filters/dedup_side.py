"""Rows of the score stage's near-duplicate side store, read with bounded memory.

The full embeddings (thousands of floats per clip) are wanted only for the clips of screened pairs,
and those are spread over the whole store. ``pyarrow.dataset``'s filtered scan decodes up to 16 row
groups ahead in parallel, so the driver held ~100 MB of embeddings at 1,600 clips, more as the store
grew; here one row group's embeddings are decoded at a time and only the wanted rows are kept.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra.storage import open_uri


def side_rows(uri: str, columns: list[str], clip_ids: list[str]) -> pa.Table:
    """``columns`` (``clip_id`` first) of the rows of ``clip_ids`` in the Parquet file at ``uri``, in
    file order; a row group without any of them is skipped after reading its ``clip_id`` column only."""
    want, parts = pa.array(clip_ids, pa.string()), []
    with open_uri(uri, "rb") as fh:
        pf = pq.ParquetFile(fh)
        for group in range(pf.num_row_groups):
            hit = pc.is_in(pf.read_row_group(group, columns=["clip_id"]).column(0), value_set=want)
            if pc.any(hit).as_py():
                parts.append(pf.read_row_group(group, columns=columns).filter(hit))
        schema = pa.schema([pf.schema_arrow.field(c) for c in columns])
    return pa.concat_tables(parts) if parts else schema.empty_table()
