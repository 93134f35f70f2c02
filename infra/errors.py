"""Bad input or a faulty environment? The line between a row with ``error`` and a failed stage.

A row's ``error`` is permanent: a published stage is never redone, so a full disk, a flaky
network or an S3 5xx written into a row would lose that row's data for good. Such faults are
*transient*: they are retried with backoff and, when they persist, fail the stage without
publishing, so the same command rerun after the fault is fixed loses nothing. Only faults of the
input itself (corrupt, truncated, not a video) become rows.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger("reelflow.errors")
T = TypeVar("T")
# Four attempts, 0.5 s doubling: rides out a blip (an S3 503, a moment of full disk) in 3.5 s. The
# environment variable (inherited by Ray workers) lets fault tests run without the waits.
ATTEMPTS = int(os.environ.get("REELFLOW_RETRY_ATTEMPTS", "4"))
BASE_DELAY = float(os.environ.get("REELFLOW_RETRY_BASE_DELAY", "0.5"))

# The machine, not the file: disk full / quota, I/O error, permissions, read-only mount, out of
# file handles or memory, and every flavour of network trouble.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC", "EDQUOT", "EIO", "EACCES", "EPERM", "EROFS", "ENFILE", "EMFILE", "ENOMEM", "EAGAIN",
        "EBUSY", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EHOSTUNREACH",
        "ENETUNREACH", "ENETDOWN", "EPIPE", "ESTALE", "ENOLCK",
    )
    if hasattr(errno, name)
)
# botocore / aiohttp / urllib3 class names (matched by name: no import of optional libraries).
_NETWORK_CLASSES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ClientOSError", "ServerDisconnectedError", "ClientPayloadError",
    "ServerTimeoutError", "ProtocolError", "NewConnectionError", "IncompleteReadError",
    "ResponseStreamingError", "NoCredentialsError", "PartialCredentialsError", "HTTPServerError",
})
_S3_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException",
    "RequestTimeTooSkewed", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
})


class TransientError(RuntimeError):
    """An environmental fault that outlived its retries: the stage fails, nothing is published.

    The message says what failed and that rerunning the same command resumes once it is fixed."""


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        meta = response.get("ResponseMetadata") or {}
        return meta.get("HTTPStatusCode")
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or anything in its cause chain) is a fault of the environment.

    An ``OSError`` counts by errno (so PyAV's and s3fs's translations count too); timeouts and
    connection errors always; HTTP/S3 errors when 5xx, throttling or a credentials refusal.
    ``FileNotFoundError`` is not transient: a vanished or dangling input is the input's fault.
    """
    for item in _chain(exc):
        if isinstance(item, TransientError):
            return True
        if isinstance(item, (TimeoutError, ConnectionError)):
            return True
        if isinstance(item, OSError) and item.errno in TRANSIENT_ERRNOS:
            return True
        if type(item).__name__ in _NETWORK_CLASSES:
            return True
        status = _status(item)
        if status is not None and (status >= 500 or status in (401, 403, 408, 429)):
            return True
        if _code(item) in _S3_TRANSIENT_CODES:
            return True
    return False


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def retry(
    fn: Callable[[], T],
    what: str,
    *,
    attempts: int | None = None,
    base_delay: float | None = None,
    max_delay: float = 8.0,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds; transient errors are retried with exponential backoff
    (``base_delay`` doubling up to ``max_delay``), anything else propagates at once. A transient
    error on the last attempt becomes :class:`TransientError` naming ``what``.

    ``before_retry`` cleans up a failed attempt (partial files) before the next one."""
    attempts = attempts or ATTEMPTS
    base_delay = BASE_DELAY if base_delay is None else base_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise TransientError(
                    f"{what}: {describe(exc)} (still failing after {attempts} attempts); this is a fault of the "
                    "machine, disk, network or object store, not of the input: fix it and rerun the same "
                    "command, published stages are kept"
                ) from exc
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            log.warning("%s: %s; retry %d/%d in %.1fs", what, describe(exc), attempt, attempts - 1, delay)
            if before_retry is not None:
                before_retry()
            time.sleep(delay)
    raise AssertionError("unreachable")


def retry_input(fn: Callable[[], T], what: str) -> tuple[T | None, Exception | None]:
    """:func:`retry` for work on one input: ``(result, None)``, or ``(None, error)`` when the input itself
    is bad (that error becomes the input's row); a machine fault that outlives its retries still raises
    :class:`TransientError`, failing the stage unpublished."""
    try:
        return retry(fn, what), None
    except TransientError:
        raise
    except Exception as exc:
        return None, exc


def find_transient(exc: BaseException) -> TransientError | None:
    """The :class:`TransientError` a worker raised, through Ray's wrappers (which chain the cause
    or subclass it), so the driver can report its message rather than a remote traceback."""
    for item in _chain(exc):
        cause = getattr(item, "cause", None)  # ray.exceptions.RayTaskError: the worker's own exception
        if isinstance(cause, BaseException) and cause is not item:
            found = find_transient(cause)
            if found is not None:
                return found
        if isinstance(item, TransientError):
            return item
    return None


@contextmanager
def surface_transient() -> Iterator[None]:
    """Around a Ray Data map: a worker's :class:`TransientError` comes out as itself, with its own
    one-line message, instead of a remote traceback (the stage then fails, unpublished)."""
    try:
        yield
    except Exception as exc:
        found = find_transient(exc)
        if found is None or found is exc:
            raise
        raise TransientError(str(found)) from None
