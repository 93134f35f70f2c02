"""Waiting for reviewers, one way for every human audit (the bad-case gates, the manual review and the
pairwise preference labels of report section 3.4.1): poll the audit's store until every sampled item has
a label, say every 30 s how far the reviewers are and where they label, and give up after the
configured timeout with what was given kept, so a re-run resumes the wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from infra.config_datasets import AuditConfig

REPORT_EVERY_S = 30.0


class AuditIncomplete(RuntimeError):
    """Verdicts are missing (file mode) or the wait timed out; re-running resumes."""


class Progress(Protocol):
    complete: bool
    labelled: int
    total: int


P = TypeVar("P", bound=Progress)


def wait_for_labels(poll: Callable[[], P], what: str, items: str, run_id: str, cfg: AuditConfig,
                    log: logging.Logger) -> P:
    """``poll()`` until it says complete; ``what`` names the audit ("audit gate D_256p"), ``items`` what
    is labelled ("clips", "human pairs")."""
    started, next_report = time.time(), 0.0
    while not (state := poll()).complete:
        if time.time() >= next_report:
            log.warning("%s waiting: %d/%d %s labelled; reviewers: reelflow audit serve %s",
                        what, state.labelled, state.total, items, run_id)
            next_report = time.time() + REPORT_EVERY_S
        if cfg.wait_timeout_s is not None and time.time() - started > cfg.wait_timeout_s:
            raise AuditIncomplete(
                f"{what}: {state.total - state.labelled} of {state.total} {items} still unlabelled after "
                f"{cfg.wait_timeout_s:g}s; labels given so far are kept, re-run to keep waiting")
        time.sleep(cfg.poll_s)
    return state
