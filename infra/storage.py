"""Storage over fsspec: local paths and ``s3://`` (s3fs) behind one set of helpers.

Stages only see URIs. ``configure_storage`` is called once per process (driver and Ray workers)
so s3fs picks up the configured endpoint (MinIO, moto) without every call passing options.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec

_S3_OPTIONS: dict = {}


def configure_storage(s3_endpoint_url: str | None = None, s3_region: str | None = None) -> None:
    """Remember S3 options for this process; also exported so Ray workers inherit them."""
    _S3_OPTIONS.clear()
    endpoint = s3_endpoint_url or os.environ.get("REELFLOW_S3_ENDPOINT_URL")
    region = s3_region or os.environ.get("REELFLOW_S3_REGION")
    if endpoint:
        _S3_OPTIONS["endpoint_url"] = endpoint
        os.environ["REELFLOW_S3_ENDPOINT_URL"] = endpoint
    if region:
        _S3_OPTIONS["client_kwargs"] = {"region_name": region}
        os.environ["REELFLOW_S3_REGION"] = region


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _strip_file(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def filesystem(uri: str) -> fsspec.AbstractFileSystem:
    if uri.startswith("s3://"):
        if not _S3_OPTIONS:
            configure_storage()
        return fsspec.filesystem("s3", **_S3_OPTIONS)
    if is_remote(uri):
        return fsspec.filesystem(uri.split("://", 1)[0])
    return fsspec.filesystem("file")


def normalize(uri: str) -> str:
    """Absolute local path or unchanged remote URI (so manifests never hold cwd-relative paths)."""
    return uri.rstrip("/") if is_remote(uri) else os.path.abspath(_strip_file(uri))


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(_strip_file(base), *parts)


def _path(uri: str) -> str:
    """The path form fsspec wants for this URI (s3fs accepts the full URI too)."""
    return uri if is_remote(uri) else _strip_file(uri)


def exists(uri: str) -> bool:
    return filesystem(uri).exists(_path(uri))


def makedirs(uri: str) -> None:
    if not is_remote(uri):  # object stores have no directories
        os.makedirs(_strip_file(uri), exist_ok=True)


def open_uri(uri: str, mode: str = "rb") -> IO:
    return filesystem(uri).open(_path(uri), mode)


def read_text(uri: str) -> str:
    with open_uri(uri, "r") as fh:
        return fh.read()


def write_text(uri: str, text: str) -> None:
    with open_uri(uri, "w") as fh:
        fh.write(text)


def list_files(uri: str) -> list[str]:
    """All files below a folder / prefix, sorted, as URIs of the same scheme."""
    fs = filesystem(uri)
    path = _path(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if fs.isfile(path):
        return [uri]
    found = sorted(fs.find(path))
    return [f"s3://{p}" if uri.startswith("s3://") else p for p in found]


def size(uri: str) -> int:
    return int(filesystem(uri).size(_path(uri)))


def remove(uri: str) -> None:
    fs = filesystem(uri)
    if fs.exists(_path(uri)):
        fs.rm(_path(uri), recursive=True)


def rename(src: str, dst: str) -> None:
    """Publish ``src`` as ``dst``: one atomic rename locally; copy+delete on object stores,
    where the ``_SUCCESS.json`` written last is the commit marker instead."""
    if is_remote(src):
        fs = filesystem(src)
        fs.copy(_path(src), _path(dst), recursive=True)
        fs.rm(_path(src), recursive=True)
    else:
        os.replace(_strip_file(src), _strip_file(dst))


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local file path for ``uri``: the file itself when local, a temp download when remote.
    Codecs seek a lot; a local copy beats random range-reads over the network."""
    if not is_remote(uri):
        yield _strip_file(uri)
        return
    suffix = os.path.splitext(uri)[1]
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="reelflow-")
    os.close(fd)
    try:
        filesystem(uri).get(_path(uri), tmp)
        yield tmp
    finally:
        os.unlink(tmp)


def upload(local_path: str, uri: str) -> None:
    """Copy a local file to ``uri`` (same-filesystem copy when ``uri`` is local)."""
    if is_remote(uri):
        filesystem(uri).put(local_path, _path(uri))
    else:
        os.makedirs(os.path.dirname(_strip_file(uri)), exist_ok=True)
        shutil.copyfile(local_path, _strip_file(uri))


# --- folders for libraries that need local paths (diffusers, DeepSpeed, safetensors) ----------------
# Under an S3 run root no node may assume a disk the driver has: a worker fetches what it reads into a
# node-local cache keyed by the URI (completed with a marker, so a half-downloaded folder is never used)
# and writes locally before uploading. For local URIs fetch_folder is the identity.
COMPLETE = ".reelflow-complete"


def node_cache_root() -> str:
    """Node-local scratch for downloaded folders: ``REELFLOW_NODE_CACHE`` or the temp dir."""
    return os.environ.get("REELFLOW_NODE_CACHE") or os.path.join(tempfile.gettempdir(), "reelflow-node-cache")


def fetch_folder(uri: str) -> str:
    """A local path holding the folder ``uri``: the path itself when local, else a cached download.

    The cache key is the URI: run-root folders are immutable once published (stages publish with one
    rename, step checkpoints are written once under their step number)."""
    if not is_remote(uri):
        return normalize(uri)
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:20]
    local = os.path.join(node_cache_root(), f"{os.path.basename(uri.rstrip('/'))}-{key}")
    if os.path.exists(os.path.join(local, COMPLETE)):
        return local
    os.makedirs(node_cache_root(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fetch-", dir=node_cache_root())
    try:
        download_folder(uri, tmp)
        open(os.path.join(tmp, COMPLETE), "w").close()
        try:
            os.replace(tmp, local)
        except OSError:  # another process on this node finished the same download first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return local


def share_folder(local: str, root: str, name: str) -> str:
    """A folder built on this node, as workers on any node can read it: under a remote run root, uploaded
    once to ``<root>/models/<name>`` (marker last; workers ``fetch_folder`` it), else the local path made
    absolute (workers may run in another working directory)."""
    if not is_remote(root):
        return os.path.abspath(local)
    uri = join(normalize(root), "models", name)
    if not exists(join(uri, COMPLETE)):
        upload_folder(local, uri)
        write_text(join(uri, COMPLETE), name)
    return uri


def download_folder(uri: str, local: str) -> None:
    """Every file below ``uri`` into ``local`` (same relative layout)."""
    base = uri.rstrip("/")
    files = list_files(base)
    fs = filesystem(base)
    for file_uri in files:
        target = os.path.join(local, file_uri[len(base):].lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get(file_uri, target)


def upload_folder(local: str, uri: str) -> None:
    """Every file below the local folder ``local`` to ``uri`` (copied when ``uri`` is local)."""
    for root, _, files in os.walk(local):
        for name in sorted(files):
            path = os.path.join(root, name)
            upload(path, join(uri, os.path.relpath(path, local).replace(os.sep, "/")))


def list_folders(uri: str) -> list[str]:
    """Names of the sub-folders directly below ``uri`` (an object store lists them as common prefixes)."""
    if not is_remote(uri):
        path = normalize(uri)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs = filesystem(uri)
    try:
        entries = fs.ls(uri.rstrip("/"), detail=True, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(os.path.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")
