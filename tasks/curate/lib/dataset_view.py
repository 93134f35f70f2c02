"""A dataset view computed column-wise over Arrow (no per-row Python, no pandas copy of the table).

Why pyarrow compute and not DuckDB or Polars: the pool is already an Arrow table (Parquet in, Parquet
out, the manifest fingerprints Arrow IPC), the work is a handful of vectorised comparisons per rule plus
list building, and pyarrow is already a dependency; an SQL engine would add a dependency and a copy for
what is one boolean matrix. The per-rule comparisons run in numpy over zero-copy column buffers; the
``rejected_by`` / ``rejected_detail`` lists are assembled from offsets and a ``take`` of the failing
(row, rule) entries, so cost is linear in rows + failures.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.config import ConfigError
from infra.tables import WIDE_COLUMNS, flag, read_narrow

VIEW_COLUMNS = ("rejected_by", "rejected_detail", "crop_box")


def numeric(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 (bool -> 0/1, null or non-numeric -> NaN), like ``pd.to_numeric(errors='coerce')``."""
    col = table.column(name)
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type) \
            or pa.types.is_null(col.type) or pa.types.is_decimal(col.type):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(float, copy=False)
    import pandas as pd

    return pd.to_numeric(col.to_pandas(), errors="coerce").to_numpy(dtype=float)


def _fmt(values: np.ndarray) -> pa.Array:
    """``{:.4g}`` of each value, "missing" for NaN (what ``tasks.curate.datasets`` always printed)."""
    text = np.char.mod("%.4g", values).astype(object)
    text[np.isnan(values)] = "missing"
    return pa.array(text, pa.string())


def resolve_column(rule, columns: dict[str, str], names: list[str]) -> str:
    actual = columns.get(rule.column, rule.column)
    if actual not in names:
        scores = sorted(c for c in names if c.startswith("score_"))
        raise ConfigError(
            f"rule {rule.name!r} needs {rule.column!r} (column {actual!r}), which the pool does not have; "
            f"score columns present: {', '.join(scores) or 'none'}. Map the name in configs/filters/columns.yaml "
            "or fix the profile."
        )
    return actual


def failures(table: pa.Table, profile, columns: dict[str, str], pipeline_profile: str, base: str | None,
             ops: dict) -> tuple[list[str], np.ndarray, list[pa.Array]]:
    """(slot names, fail matrix (N, slots) bool, per slot the detail text of its failing rows in row order).
    Slots in the order rules are reported: error, the base dataset, then the profile's rules."""
    n = table.num_rows
    names, fails, details = [], [], []
    if "error" in table.column_names:
        error = pc.cast(table.column("error"), pa.string())
        bad = pc.is_valid(error).to_numpy(zero_copy_only=False)
        names.append("error")
        fails.append(bad)
        details.append(pc.binary_join_element_wise("error row: ", error.filter(pa.array(bad)), ""))
    if base is not None:
        held = np.zeros(n, bool)
        if flag(base) in table.column_names:
            held = pc.fill_null(pc.cast(table.column(flag(base)), pa.bool_()), False).to_numpy(zero_copy_only=False)
        names.append(f"not_in_{base}")
        fails.append(~held)
        details.append(pa.array([f"not in {base}"] * int((~held).sum()), pa.string()))
    reasons = pc.cast(table.column("manual_reason"), pa.string()) if "manual_reason" in table.column_names else None
    image = np.zeros(n, bool)
    if "media" in table.column_names:
        image = pc.fill_null(pc.equal(pc.cast(table.column("media"), pa.string()), "image"), False).to_numpy(
            zero_copy_only=False)
    for rule in (r for r in profile.rules if pipeline_profile not in r.off_in):
        column = resolve_column(rule, columns, table.column_names)
        values = numeric(table, column)
        threshold = rule.threshold(pipeline_profile)
        with np.errstate(invalid="ignore"):
            keep = ops[rule.op](values, threshold) | (np.isnan(values) & (profile.missing == "pass"))
        bad = ~keep & ~image if rule.videos_only else ~keep
        text = pc.binary_join_element_wise(f"{rule.name} ({column}=", _fmt(values[bad]),
                                           f", needs {rule.op} {threshold:g})", "")
        if column == "manual_good" and reasons is not None:  # the reviewer's reason beside the rule that read it
            why = reasons.filter(pa.array(bad))
            has = pc.fill_null(pc.not_equal(why, ""), False)
            text = pc.if_else(has, pc.binary_join_element_wise(text, ", reviewer: ", why, ""), text)
        names.append(rule.name)
        fails.append(bad)
        details.append(text)
    matrix = np.stack(fails, axis=1) if fails else np.zeros((n, 0), bool)
    return names, matrix, details


def rejection_lists(names: list[str], matrix: np.ndarray, details: list[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """``rejected_by`` and ``rejected_detail`` list columns from the fail matrix (row-major: rule order)."""
    counts = matrix.sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    rows, slots = np.nonzero(matrix)
    by = pa.ListArray.from_arrays(offsets, pa.array(names, pa.string()).take(pa.array(slots)))
    if not len(rows):
        return by, pa.ListArray.from_arrays(offsets, pa.array([], pa.string()))
    # details[s] lists slot s's failing rows in row order; entry (r, s) belongs at offsets[r] + (its rank in row r).
    rank = np.cumsum(matrix, axis=1, dtype=np.int32)
    position = np.concatenate([np.cumsum(np.concatenate([[0], counts]))[:-1][m] + rank[m, s] - 1
                               for s, m in ((s, matrix[:, s]) for s in range(matrix.shape[1]))])
    flat = pa.concat_arrays([d.combine_chunks() if isinstance(d, pa.ChunkedArray) else d for d in details])
    detail = pa.ListArray.from_arrays(offsets, flat.take(pa.array(np.argsort(position, kind="stable"))))
    return by, detail


def read_pool(manifest) -> pa.Table:
    """The pool (or base dataset) a view reads: :func:`infra.tables.read_narrow` (no wide per-clip arrays)."""
    return read_narrow(manifest)


def view_table(table: pa.Table, cfg, ops: dict) -> tuple[pa.Table, dict[str, dict[str, int]]]:
    """The dataset table (the input's columns, earlier view columns dropped, + rejected_by / rejected_detail /
    in_<dataset> / crop_box) and per rule: clips it rejects and clips only it rejects."""
    out = table.drop_columns([c for c in (*VIEW_COLUMNS, *WIDE_COLUMNS) if c in table.column_names])
    out = out.drop_columns([flag(cfg.dataset)] if flag(cfg.dataset) in out.column_names else [])
    names, matrix, details = failures(out, cfg.profile, cfg.columns, cfg.pipeline_profile, cfg.base, ops)
    by, detail = rejection_lists(names, matrix, details)
    alone = matrix.sum(axis=1) == 1
    out = out.append_column("rejected_by", by).append_column("rejected_detail", detail)
    out = out.append_column(flag(cfg.dataset), pa.array(matrix.sum(axis=1) == 0))
    if cfg.profile.crop_borders:
        # Border crop (report 3.1, strict profile): clips are re-cut inside the picture box.
        crop = cfg.columns.get("border_crop", "border_crop")
        box = out.column(crop) if crop in out.column_names else pa.nulls(out.num_rows)
        out = out.append_column("crop_box", box)
    counts = {}
    for rule in cfg.profile.rules:
        s = names.index(rule.name) if rule.name in names else None
        counts[rule.name] = {"rejected": int(matrix[:, s].sum()) if s is not None else 0,
                             "only": int((matrix[:, s] & alone).sum()) if s is not None else 0}
    return out, counts


def add_verdicts(table: pa.Table, verdicts: dict) -> pa.Table:
    """``manual_good`` (1 Good, 0 Bad, null = no verdict) and ``manual_reason`` joined by clip id."""
    ids = list(verdicts)
    where = pc.index_in(pc.cast(table.column("clip_id"), pa.string()), value_set=pa.array(ids, pa.string()))
    good = pa.array([float(verdicts[c].verdict == "good") for c in ids], pa.float64())
    reason = pa.array([verdicts[c].reason for c in ids], pa.string())
    table = table.drop_columns([c for c in ("manual_good", "manual_reason") if c in table.column_names])
    return table.append_column("manual_good", good.take(where)).append_column("manual_reason", reason.take(where))
