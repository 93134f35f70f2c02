"""How every flow runs its stages: each stage one Prefect task, in the one stated order, and one way to stop
after the stage ``--until`` names.

The names ``--until`` accepts, by phase and in the report's order, are stated once, in ``PHASES``; a flow
that ran them out of that order fails loudly instead of stopping at the wrong place.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from infra.config import STAGE_ORDER, UNTIL_CHOICES  # noqa: F401 (UNTIL_CHOICES: the same names, flat)
from infra.config_distill import DISTILL_STAGES
from infra.config_train import POST_STAGES, TRAIN_STAGES
from infra.manifest import Manifest

PHASES = {"curate": STAGE_ORDER, "pretrain": TRAIN_STAGES, "post-train": POST_STAGES, "distill": DISTILL_STAGES}


def stage_task(fn, name: str, run_name: str | None = None):
    """A stage as one Prefect task: retries/caching are ours (resume by _SUCCESS.json). ``run_name`` (a format
    string over the stage function's parameters) names each task run after the stage it runs: ``dpo-1``, not
    Prefect's ``dpo-e12``."""
    return task(fn, name=name, task_run_name=run_name or name, cache_policy=NO_CACHE, retries=0)


class UntilReached(Exception):
    """Raised right after the stage named by ``--until``; carries that stage's manifest."""

    def __init__(self, manifest: Manifest):
        super().__init__(manifest.stage)
        self.manifest = manifest


class Stages:
    """One flow's way through its phase: ``stages.run(name, fn, *args)`` runs one stage (``fn`` is its Prefect
    task, or a few tasks that together make the named stage) and raises :class:`UntilReached` right after
    the ``until`` stage. ``done`` holds every stage's manifest by name, in the order they ran."""

    def __init__(self, phase: str, until: str | None):
        self.phase, self.order, self.until = phase, PHASES[phase], until
        self.done: dict[str, Manifest] = {}

    def run(self, name: str, fn: Callable[..., Manifest], *args, **kwargs) -> Manifest:
        ran = [n for n in self.done if n in self.order]
        if name in self.order and ran and self.order.index(name) < self.order.index(ran[-1]):
            raise RuntimeError(f"the {self.phase} flow ran {name!r} after {ran[-1]!r}, against the stated order "
                               f"{self.order}: --until would stop at the wrong place")
        manifest = self.done[name] = fn(*args, **kwargs)
        if name == self.until:
            raise UntilReached(manifest)
        return manifest


def stops_in(phase: str, until: str | None) -> bool:
    """Whether ``--until`` names a stage of ``phase`` (so later phases do not run)."""
    return until in PHASES[phase]
