"""The latent cache on storage: shards of encoded samples, their indexes, and the training reader.

Layout: ``{cache_root}/{encoder_fingerprint}/{height}p/shard-<id>.safetensors`` holding tensors
``{key}.latent`` [C, F, h, w] and ``{key}.text`` [L, D] (float32), and beside it
``shard-<id>.index.json`` naming the keys it holds. The shard is written first and the index last,
each with one atomic step (a rename locally, a single PUT on S3), so an index only ever names a
complete shard; a shard without an index is an interrupted write and is never read. A sample's key
hashes everything its tensors depend on, so any run and any stage at this resolution can reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass

import torch

from infra import storage
from infra.config_train import LatentsConfig, ResolutionConfig
from infra.manifest import Manifest, read_rows

SHARD_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".index.json"
# Bump when preprocessing (resize, crop, frame selection, normalisation) changes: old samples miss.
ENCODING_VERSION = "1"


def cache_root(cfg: LatentsConfig, run_root: str) -> str:
    """``cfg.cache_dir``, else ``latent-cache`` beside the folder holding all runs (shared by runs)."""
    if cfg.cache_dir:
        return storage.normalize(cfg.cache_dir)
    root = storage.normalize(run_root)
    if storage.is_remote(root):
        scheme, path = root.split("://", 1)
        parent = posixpath.dirname(path.rstrip("/"))
        return f"{scheme}://{parent or path}/latent-cache"  # a bare bucket keeps the cache inside it
    return os.path.join(os.path.dirname(root), "latent-cache")


def cache_folder(root: str, fingerprint: str, res: ResolutionConfig) -> str:
    return storage.join(root, fingerprint, f"{res.height}p")


def sample_key(**parts) -> str:
    blob = json.dumps({"version": ENCODING_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_index(folder: str) -> dict[str, str]:
    """key -> shard URI of every committed shard in ``folder`` (empty when there is none yet)."""
    try:
        files = storage.list_files(folder)
    except FileNotFoundError:
        return {}
    present = {posixpath.basename(f) for f in files}
    found: dict[str, str] = {}
    for uri in files:
        if not uri.endswith(INDEX_SUFFIX):
            continue
        index = json.loads(storage.read_text(uri))
        if index["shard"] in present:  # an index outliving its deleted shard is ignored
            found.update(dict.fromkeys(index["keys"], storage.join(folder, index["shard"])))
    return found


def _put_atomic(local_path: str, uri: str) -> None:
    if storage.is_remote(uri):
        storage.upload(local_path, uri)  # one PUT: the object appears whole or not at all
    else:
        part = f"{uri}.part-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(local_path, part)
        os.replace(part, uri)


def write_shard(folder: str, tensors: dict[str, torch.Tensor], samples: dict[str, dict]) -> str:
    """Commit one shard (tensors first, then its index); returns the shard's URI."""
    from safetensors.torch import save_file

    storage.makedirs(folder)
    name = f"shard-{uuid.uuid4().hex}"
    shard_uri = storage.join(folder, name + SHARD_SUFFIX)
    with tempfile.TemporaryDirectory(prefix="reelflow-shard-") as tmp:
        local = os.path.join(tmp, name + SHARD_SUFFIX)
        save_file({k: v.contiguous() for k, v in tensors.items()}, local)
        _put_atomic(local, shard_uri)
        index = os.path.join(tmp, name + INDEX_SUFFIX)
        with open(index, "w") as fh:
            json.dump({"shard": name + SHARD_SUFFIX, "keys": sorted(samples), "samples": samples}, fh)
        _put_atomic(index, storage.join(folder, name + INDEX_SUFFIX))
    return shard_uri


@dataclass
class Sample:
    clip_id: str
    kind: str  # "video" | "image"
    bucket: str
    latent: torch.Tensor  # [C, F, h, w] float32, normalised as the pipelines expect
    text: torch.Tensor  # [L, D] float32, L = the caption's true token count
    fps: int  # normalised frame rate (FPS_RATES)


class LatentCache:
    """The samples of a latents manifest (error rows left out); shards open lazily, once each."""

    def __init__(self, rows: list[dict]):
        self.rows = [r for r in rows if r.get("error") is None]
        self._handles: dict[str, object] = {}
        self._downloads: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def buckets(self) -> dict[str, list[int]]:
        """Bucket name -> sample indices (every sample of a bucket has the same latent shape)."""
        out: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows):
            out.setdefault(row["bucket"], []).append(i)
        return out

    def get(self, i: int) -> Sample:
        row = self.rows[i]
        shard = self._open(row["shard_uri"])
        return Sample(row["clip_id"], row["kind"], row["bucket"], shard.get_tensor(f"{row['key']}.latent"),
                      shard.get_tensor(f"{row['key']}.text"), int(row["fps"]))

    def _open(self, uri: str):
        from safetensors import safe_open

        if uri not in self._handles:
            path = uri
            if storage.is_remote(uri):  # safetensors maps a local file: fetch each shard once
                if self._downloads is None:
                    self._downloads = tempfile.mkdtemp(prefix="reelflow-latents-")
                    weakref.finalize(self, shutil.rmtree, self._downloads, True)
                path = os.path.join(self._downloads, f"{len(self._handles)}{SHARD_SUFFIX}")
                storage.filesystem(uri).get(uri, path)
            self._handles[uri] = safe_open(path, framework="pt")
        return self._handles[uri]

    def __getstate__(self) -> dict:  # data-loader workers / Ray Train ranks reopen their own handles
        return {"rows": self.rows, "_handles": {}, "_downloads": None}


def open_cache(manifest: Manifest) -> LatentCache:
    """The training reader over a ``latents-*`` stage's manifest."""
    return LatentCache(read_rows(manifest))
