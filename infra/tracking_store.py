"""A local MLflow store that moves with its run root.

MLflow's sqlite store records every local location as an absolute path (``resolve_uri_if_local`` turns a
relative artifact root into one at experiment creation), so a copied or re-mounted ``runs/`` folder would
read and write the artifacts of the OLD folder. The store remembers the folder it lives in (an experiment
tag); opened from another folder, its recorded locations are rewritten from the old folder to the new one
before MLflow reads them. Nothing else about the runs changes.
"""

from __future__ import annotations

import logging
import os
import sqlite3

log = logging.getLogger("reelflow.tracking")
ROOT_TAG = "reelflow.store_root"
# Every column of MLflow 3's schema that holds a location under the store's folder.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("datasets", "dataset_source"),
)


def sqlite_path(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking uri, else None (a server keeps its own locations)."""
    prefix = "sqlite:///"
    return tracking_uri[len(prefix):] if tracking_uri.startswith(prefix) else None


def relocate(db_path: str) -> str | None:
    """Rewrite the locations recorded under another folder to the folder ``db_path`` is in now; returns the
    old folder when something was rewritten. A read-only store is left as it is (reading still works for
    everything but artifacts)."""
    if not os.path.exists(db_path):
        return None
    here = os.path.dirname(os.path.abspath(db_path))
    try:
        with sqlite3.connect(db_path) as con:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            if "experiment_tags" not in tables:
                return None
            olds = {r[0] for r in con.execute("select value from experiment_tags where key = ?", (ROOT_TAG,))}
            olds.discard(here)
            for old in olds:
                for table, column in LOCATION_COLUMNS:
                    if table in tables:
                        con.execute(f"update {table} set {column} = replace({column}, ?, ?) where instr({column}, ?) > 0",
                                    (old + "/", here + "/", old + "/"))
                con.execute("update experiment_tags set value = ? where key = ? and value = ?", (here, ROOT_TAG, old))
    except sqlite3.OperationalError as exc:  # read-only mount: nothing can be rewritten
        log.warning("MLflow store %s was recorded under %s but cannot be updated (%s); artifacts will be looked "
                    "for there", db_path, ", ".join(sorted(olds)) if "olds" in locals() else "another folder", exc)
        return None
    if olds:
        log.warning("MLflow store moved: locations recorded under %s now point under %s", ", ".join(sorted(olds)), here)
        return sorted(olds)[0]
    return None
