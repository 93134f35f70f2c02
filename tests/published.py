"""The check every fault test ends with: no ``_SUCCESS.json`` over missing files.

Walks every published stage of a run, reads its table, and verifies that each row's files inside
the run (every ``*_uri`` value, stored relative to the run root or absolute) exist.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from infra import manifest as mf


def verify_published(run_dir: str) -> dict[str, int]:
    """{stage: rows} for every published stage; AssertionError naming the first missing file."""
    stages: dict[str, int] = {}
    for name in sorted(os.listdir(run_dir)):
        stage_dir = os.path.join(run_dir, name)
        record = mf.load_success(stage_dir)
        if record is None or not os.path.isfile(os.path.join(stage_dir, mf.DATA_FILE)):
            continue
        table = pq.read_table(os.path.join(stage_dir, mf.DATA_FILE))
        assert table.num_rows == record.row_count, f"{name}: {table.num_rows} rows, _SUCCESS.json says {record.row_count}"
        for column in (c for c in table.column_names if c.endswith("_uri")):
            for value in table.column(column).to_pylist():
                if not isinstance(value, str) or not value:
                    continue
                path = value if os.path.isabs(value) else os.path.join(run_dir, value.removeprefix("./"))
                if path.startswith(run_dir + os.sep):
                    assert os.path.exists(path), f"{name}: {column} {value} is published but missing"
        stages[name] = table.num_rows
    return stages
