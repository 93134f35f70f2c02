"""Fail before work: everything a run needs from outside is checked before its first stage.

A wrong checkpoint found after hours of curation, or an unreachable tracking server retried for
minutes, wastes the run. Each check here is bounded (a few seconds) and fails with one line that
names the setting and the fix.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator

from pydantic import BaseModel

from infra.config import PipelineConfig

TIMEOUT_S = 4.0


class PreflightError(ValueError):
    """A setting that cannot work, phrased as one line: the setting, what is wrong, the fix."""


def _paths(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted setting, value) of every ``*_path`` setting that names a local file or folder."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _paths(value, dotted + ".")
        elif name.endswith("_path") and isinstance(value, str) and value and "://" not in value:
            yield dotted, value


def check_paths(cfg: PipelineConfig) -> None:
    for dotted, value in _paths(cfg):
        if not os.path.exists(value):
            raise PreflightError(f"{dotted}: {value!r} does not exist; point it at the model file/folder or set it "
                                 "to null for the built-in one")
    if cfg.train.base_checkpoint:
        from models.dit import CheckpointError, check_checkpoint

        try:
            check_checkpoint(cfg.train.base_checkpoint)
        except CheckpointError as exc:
            raise PreflightError(f"train.base_checkpoint: {exc}") from None


def _s3_client(cfg: PipelineConfig):
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"max_attempts": 1, "mode": "standard"})
    endpoint = cfg.storage.s3_endpoint_url or os.environ.get("REELFLOW_S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint, region_name=cfg.storage.s3_region, config=config)


def check_s3(cfg: PipelineConfig, setting: str, uri: str) -> None:
    """The bucket answers with these credentials (one listing request, bounded)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    try:
        _s3_client(cfg).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except NoCredentialsError:
        raise PreflightError(f"{setting}: no S3 credentials for {uri}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                             "(or AWS_PROFILE)") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        fix = {"NoSuchBucket": "create the bucket or fix the name",
               "AccessDenied": "grant these credentials s3:ListBucket/GetObject/PutObject on it",
               "InvalidAccessKeyId": "fix AWS_ACCESS_KEY_ID", "SignatureDoesNotMatch": "fix AWS_SECRET_ACCESS_KEY"}
        raise PreflightError(f"{setting}: {uri} refused ({code}); {fix.get(code, 'check the bucket and credentials')}"
                             ) from None
    except (BotoCoreError, OSError) as exc:
        raise PreflightError(f"{setting}: cannot reach S3 for {uri} ({type(exc).__name__}); check "
                             "storage.s3_endpoint_url and the network") from None


def check_input(cfg: PipelineConfig) -> None:
    if not cfg.input:
        return
    if cfg.input.startswith("s3://"):
        check_s3(cfg, "input", cfg.input)
    elif "://" not in cfg.input or cfg.input.startswith("file://"):
        path = cfg.input[len("file://"):] if cfg.input.startswith("file://") else cfg.input
        if not os.path.lexists(path):
            raise PreflightError(f"input: {cfg.input!r} does not exist; pass --input a folder of videos/images or "
                                 "an s3:// prefix (or leave it out for the synthetic corpus)")
        if not os.access(path, os.R_OK):
            raise PreflightError(f"input: {cfg.input!r} is not readable by this user; fix its permissions")


def check_http(setting: str, url: str, path: str, fix: str) -> None:
    target = url.rstrip("/") + path
    try:
        with urllib.request.urlopen(target, timeout=TIMEOUT_S) as reply:  # noqa: S310 (configured endpoint)
            reply.read(1024)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 404:
            raise PreflightError(f"{setting}: {url} answered {exc.code} at {path}; {fix}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PreflightError(f"{setting}: {url} is unreachable ({reason}); {fix}") from None


def check_endpoints(cfg: PipelineConfig) -> None:
    uri = cfg.tracking.mlflow_uri
    if uri and uri.startswith(("http://", "https://")):
        check_http("tracking.mlflow_uri", uri, "/health", "start the MLflow server or set tracking.mlflow_uri=null "
                   "for the local store")
    if cfg.prefect.api_url:
        check_http("prefect.api_url", cfg.prefect.api_url, "/health", "start the Prefect server (its API URL ends "
                   "in /api) or set prefect.api_url=null for an ephemeral one")
    if cfg.storage.run_root.startswith("s3://"):
        check_s3(cfg, "storage.run_root", cfg.storage.run_root)


def preflight(cfg: PipelineConfig) -> None:
    """Every check, cheapest first; raises :class:`PreflightError` at the first failure."""
    check_input(cfg)
    check_paths(cfg)
    check_endpoints(cfg)
