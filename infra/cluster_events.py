"""What the Ray cluster lost while a stage ran, for the stage's record (the report's self-repair, SkyReels-V2
section 3.5: a fault is detected and the work reallocated; here it is also written down).

Ray Data restarts a lost actor and retries its items elsewhere, and Ray Train restarts its worker group, without
telling the stage. The GCS keeps every node it has seen, dead ones marked so: the nodes that died between a
stage's start and end are the faults it survived.
"""

from __future__ import annotations


def dead_nodes() -> set[str]:
    """Ids of the Ray nodes the cluster knows as dead; empty when this process is not connected to Ray
    (never starts one)."""
    import sys

    if "ray" not in sys.modules:
        return set()
    import ray

    if not ray.is_initialized():
        return set()
    try:
        return {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
    except Exception:  # noqa: BLE001 - a record, never a reason for a stage to fail
        return set()
