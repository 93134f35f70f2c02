"""Near-duplicate filter (report section 3.1: "deduplication", a copy-detection embedding per clip).

Per clip, the embedding is a set of frame signatures: for each of ``frames`` samples, the picture
inside any letterbox / pillarbox bars reduced to a ``grid`` x ``grid`` grey image (area average:
robust to re-encoding), once per centre crop in ``scales``. Cells under an overlay that the clip's
other filters found in the same decode (OCR text lines: captions, subtitles, logos; the mosaic
region) are left out (NaN): a re-upload differs from its original precisely by such overlays.

Re-edits of a take are cropped a little and cut at other moments, so two clips are compared as

    sim(A, B) = max over crops s, both ways, of  min( mean_i max_j r(A_s,i, B_1,j),  mean_j max_i r(...) )

with r the Pearson correlation of two frame signatures over the cells both have (robust to a
brightness gain and offset): a symmetric Chamfer similarity between the frame sets (every frame of
each clip has a close frame in the other; robust to a temporal offset) with one side re-cropped
(robust to a zoom up to the largest scale). Two clips are near-duplicates when ``sim`` reaches
``similarity_min``; groups are the connected components of that relation, and one clip per group is
kept (the longest, then the smallest clip_id: a stable choice). All pairs are first screened by the
correlation of the clips' mean signatures (one matrix product); only pairs above ``screen_min`` get
the full comparison; :func:`group_duplicates` finds those pairs through a vector index instead of
all pairs (:mod:`tasks.curate.filters.dedup_groups`), :func:`group_duplicates_exact` is the all-pairs reference.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import DedupConfig
from infra.tables import WIDE_COLUMNS  # noqa: F401  (the score stage's schema leaves them out)
from tasks.curate.filters.black import black_frames
from tasks.curate.filters.border import BAR_LUMA, clip_picture_box
from tasks.curate.filters.frames import ClipFrames

MASKED_SHARE = 0.25  # a grid cell at least this much under an overlay is left out
TEXT_PAD = 0.5  # OCR boxes hug the glyphs: grown by this share of the line height on every side


def frame_signature(grey: np.ndarray, grid: int) -> np.ndarray:
    """The frame as a zero-mean, unit-norm ``grid`` x ``grid`` grey image (flattened)."""
    small = cv2.resize(grey, (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def centre_crop(a: np.ndarray, scale: float) -> np.ndarray:
    """The centre 1/scale of an image or mask (scale 1: all of it)."""
    h, w = a.shape[:2]
    ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
    y, x = (h - ch) // 2, (w - cw) // 2
    return a[y:y + ch, x:x + cw]


def overlay_mask(clip: ClipFrames) -> np.ndarray:
    """(H, W) bool over the samples: overlays the other filters of this decode found (module docstring).
    Empty when they did not run (the copy detector alone still works, without the masking)."""
    height, width = clip.samples.shape[1:3]
    mask = np.zeros((height, width), bool)
    for page in clip._cache.get("ocr", []):
        for line in page:
            x, y, w, h = line.box
            pad = TEXT_PAD * h  # the glyph box, grown: captions sit on a plate, outlines spill over
            mask[max(0, int((y - pad) * height)):int(np.ceil((y + h + pad) * height)),
                 max(0, int(x * width - pad * height)):int(np.ceil((x + w) * width + pad * height))] = True
    region = clip._cache.get("mosaic_region")
    if region is not None and region.shape == mask.shape:
        mask |= region
    return mask


def clip_embedding(clip: ClipFrames, cfg: DedupConfig) -> np.ndarray:
    """(len(scales), frames, grid^2) float32: the frame signatures at each centre crop, NaN where masked."""
    grey = clip.grey_samples
    mask = overlay_mask(clip)
    dark = black_frames(grey, BAR_LUMA)
    if not dark.all():
        # bars would make every letterboxed clip look alike: embed the picture only; a black frame
        # has no signature (a flat image) and would match nothing, so it is left out of the set
        x, y, w, h = clip_picture_box(clip, BAR_LUMA)
        grey, mask = grey[~dark][:, y:y + h, x:x + w], mask[y:y + h, x:x + w]
    picks = np.unique(np.linspace(0, len(grey) - 1, min(cfg.frames, len(grey))).round().astype(int))
    out = np.empty((len(cfg.scales), len(picks), cfg.grid * cfg.grid), np.float32)
    for k, scale in enumerate(cfg.scales):
        covered = cv2.resize(centre_crop(mask, scale).astype(np.float32), (cfg.grid, cfg.grid),
                             interpolation=cv2.INTER_AREA).ravel() >= MASKED_SHARE
        if covered.all():  # an overlay over everything: keep the picture as it is
            covered[:] = False
        for j, i in enumerate(picks):
            out[k, j] = frame_signature(centre_crop(grey[i], scale), cfg.grid)
            out[k, j, covered] = np.nan
    return out


def unflatten(flat, cfg: DedupConfig) -> np.ndarray:
    """The stored list back to (scales, frames, grid^2)."""
    arr = np.asarray(flat, np.float32)
    return arr.reshape(len(cfg.scales), -1, cfg.grid * cfg.grid)


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Fa, Fb) Pearson correlation of every frame pair over the cells both have (NaN = left out)."""
    ma, mb = ~np.isnan(a), ~np.isnan(b)
    va, vb = np.where(ma, a, 0.0).astype(np.float64), np.where(mb, b, 0.0).astype(np.float64)
    fa, fb = ma.astype(np.float64), mb.astype(np.float64)
    n = np.maximum(fa @ fb.T, 1.0)
    sa, sb = va @ fb.T, fa @ vb.T
    cov = va @ vb.T - sa * sb / n
    var_a, var_b = (va * va) @ fb.T - sa * sa / n, fa @ (vb * vb).T - sb * sb / n
    return cov / np.sqrt(np.maximum(var_a * var_b, 1e-12))


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer similarity of two frame-signature sets (frames, dim)."""
    m = correlations(a, b)
    return float(min(m.max(axis=1).mean(), m.max(axis=0).mean()))


def clip_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``sim(A, B)`` of the module docstring; a, b: (scales, frames, dim), scale 1 first."""
    return max(max(chamfer(x[s], y[0]) for s in range(len(x))) for x, y in ((a, b), (b, a)))


class DedupFilter:
    """Per clip: the embedding. Across clips: :func:`group_duplicates` (run by the stage body)."""

    name = "dedup"
    columns = {"dedup_embedding": pa.list_(pa.float32())}

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        return {"dedup_embedding": clip_embedding(clip, self.cfg).ravel().tolist()}


GROUP_COLUMNS = {"score_dup": pa.float64(), "dup_group": pa.string(), "dup_keep": pa.bool_()}
# Wide per-clip arrays (infra.tables.WIDE_COLUMNS) live beside the clip table, not in it.
SIDE_STORE = "dedup_embeddings.parquet"
SIDE_SCHEMA = pa.schema([("clip_id", pa.string()), ("dedup_mean", pa.list_(pa.float32())),
                         ("dedup_embedding", pa.list_(pa.float32()))])


def write_side_store(rows: list[dict], folder_uri: str, cfg: DedupConfig, chunk: int = 1024) -> int:
    """``clip_id``, ``dedup_mean`` (the index's vector) and ``dedup_embedding`` of every row that has
    one, as ``{folder}/dedup_embeddings.parquet`` in row groups of ``chunk`` clips. Returns the count."""
    import pyarrow.parquet as pq

    from infra import storage

    count = 0
    with storage.open_uri(storage.join(folder_uri, SIDE_STORE), "wb") as fh, pq.ParquetWriter(fh, SIDE_SCHEMA) as out:
        for start in range(0, len(rows), chunk):
            part = [r for r in rows[start:start + chunk] if r.get("dedup_embedding")]
            if part:
                out.write_table(pa.Table.from_pylist([
                    {"clip_id": r["clip_id"], "dedup_embedding": r["dedup_embedding"],
                     "dedup_mean": mean_signature(unflatten(r["dedup_embedding"], cfg)).tolist()} for r in part],
                    schema=SIDE_SCHEMA))
                count += len(part)
    return count


def read_side_store(stage_uri: str, columns: list[str], clip_ids: list[str] | None = None,
                    cfg: DedupConfig | None = None) -> pa.Table:
    """Columns of a score stage's side store, optionally only the rows of ``clip_ids`` (a filter pushed
    down to the Parquet reader: the other row groups' embeddings are not decoded). A stage scored before
    the side store existed keeps ``dedup_embedding`` in its table: read from there (``cfg`` rebuilds the
    means), or a clear error when neither holds the embeddings."""
    import pyarrow.dataset as ds

    from infra import storage
    from infra.manifest import DATA_FILE

    fs = storage.filesystem(stage_uri) if storage.is_remote(stage_uri) else None
    where = ds.field("clip_id").isin(clip_ids) if clip_ids is not None else None
    wanted = ["clip_id", *[c for c in columns if c != "clip_id"]]
    if storage.exists(storage.join(stage_uri, SIDE_STORE)):
        if clip_ids is not None:
            from tasks.curate.filters.dedup_side import side_rows  # one row group decoded at a time

            return side_rows(storage.join(stage_uri, SIDE_STORE), wanted, clip_ids)
        return ds.dataset(storage.join(stage_uri, SIDE_STORE), format="parquet", filesystem=fs).to_table(wanted)
    table_uri = storage.join(stage_uri, DATA_FILE)
    old = ds.dataset(table_uri, format="parquet", filesystem=fs) if storage.exists(table_uri) else None
    if old is None or "dedup_embedding" not in old.schema.names:
        raise FileNotFoundError(f"{stage_uri} has neither {SIDE_STORE} nor a dedup_embedding column: near-duplicate "
                                "embeddings come from a score stage with dedup enabled; re-run score for this run "
                                "(reelflow run ... --from score)")
    table = old.to_table(columns=["clip_id", "dedup_embedding"],
                         filter=ds.field("dedup_embedding").is_valid() if where is None else where
                         & ds.field("dedup_embedding").is_valid())
    if "dedup_mean" in wanted:
        if cfg is None:
            raise ValueError(f"{stage_uri} predates the side store: pass its DedupConfig to rebuild dedup_mean")
        means = [mean_signature(unflatten(e, cfg)).tolist() for e in table.column("dedup_embedding").to_pylist()]
        table = table.append_column("dedup_mean", pa.array(means, pa.list_(pa.float32())))
    return table.select(wanted)


def group_from_side_store(stage_uri: str, clip_ids: list[str], lengths: list[int], cfg: DedupConfig) -> list[dict]:
    """:func:`group_duplicates` over a side store: only the mean signatures are read for all clips; the
    full embeddings only for the clips of screened pairs (memory: the index + those clips, never N x N
    and never every embedding). Clips absent from the store (errors) get nulls."""
    from tasks.curate.filters.dedup_groups import group_by_index

    store = read_side_store(stage_uri, ["dedup_mean"], cfg=cfg)
    ids = store.column("clip_id").to_pylist()
    dim = cfg.grid * cfg.grid
    means = store.column("dedup_mean").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    means = means.astype(np.float32, copy=False).reshape(len(ids), dim)
    length_of = dict(zip(clip_ids, lengths, strict=True))
    full: dict[int, np.ndarray] = {}

    def load(indices: np.ndarray) -> None:
        got = read_side_store(stage_uri, ["dedup_embedding"], [ids[i] for i in indices], cfg)
        where = {c: k for k, c in enumerate(ids)}
        for cid, emb in zip(got.column("clip_id").to_pylist(), got.column("dedup_embedding"), strict=True):
            full[where[cid]] = unflatten(emb.values.to_numpy(zero_copy_only=False), cfg)

    found = group_by_index(ids, means, [length_of.get(c) or 0 for c in ids], cfg,
                           lambda a, b: clip_similarity(full[a], full[b]), load=load) if ids else None
    by_id = {} if found is None else {c: {"score_dup": float(found["score_dup"][k]), "dup_group": ids[found["group"][k]],
                                          "dup_keep": bool(found["keep"][k])} for k, c in enumerate(ids)}
    empty = {"score_dup": None, "dup_group": None, "dup_keep": None}
    return [by_id.get(c, empty) for c in clip_ids]


def similarity_matrix(embeddings: list[np.ndarray], screen_min: float) -> np.ndarray:
    """Pairwise ``clip_similarity`` (diagonal -1); pairs whose mean signatures' correlation is under
    ``screen_min`` keep that correlation instead (they are far from any threshold worth using)."""
    means = np.asarray([e[0].mean(axis=0) for e in embeddings])  # NaN where a clip masks a cell
    sim = correlations(means, means)
    for a, b in zip(*np.nonzero(np.triu(sim >= screen_min, 1)), strict=True):
        sim[a, b] = sim[b, a] = clip_similarity(embeddings[a], embeddings[b])
    np.fill_diagonal(sim, -1.0)
    return sim


def group_duplicates_exact(clip_ids: list[str], embeddings: list, lengths: list[int], cfg: DedupConfig) -> list[dict]:
    """The all-pairs reference (N x N screen): what :func:`group_duplicates` must agree with."""
    have = [i for i, e in enumerate(embeddings) if e is not None and len(e)]
    out = [{"score_dup": None, "dup_group": None, "dup_keep": None} for _ in clip_ids]
    if not have:
        return out
    sim = similarity_matrix([unflatten(embeddings[i], cfg) for i in have], cfg.screen_min)
    parent = list(range(len(have)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(*np.nonzero(np.triu(sim >= cfg.similarity_min, 1)), strict=True):
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for k in range(len(have)):
        groups.setdefault(root(k), []).append(k)
    for members in groups.values():
        keep = min(members, key=lambda k: (-lengths[have[k]], clip_ids[have[k]]))
        for k in members:
            out[have[k]] = {"score_dup": float(max(sim[k].max(), 0.0)) if len(have) > 1 else 0.0,
                            "dup_group": clip_ids[have[keep]], "dup_keep": k == keep}
    return out


def mean_signature(embedding: np.ndarray) -> np.ndarray:
    """The screen's vector: the mean of the whole-picture frame signatures (NaN where masked)."""
    return embedding[0].mean(axis=0)


def group_duplicates(clip_ids: list[str], embeddings: list, lengths: list[int], cfg: DedupConfig) -> list[dict]:
    """Per clip (same order): ``score_dup`` (highest similarity to another clip), ``dup_group`` (the
    kept clip's id, shared by the group) and ``dup_keep``. Rows without an embedding get nulls.
    Candidates come from a vector index (:mod:`tasks.curate.filters.dedup_groups`), not from all pairs."""
    from tasks.curate.filters.dedup_groups import group_by_index

    have = [i for i, e in enumerate(embeddings) if e is not None and len(e)]
    out = [{"score_dup": None, "dup_group": None, "dup_keep": None} for _ in clip_ids]
    if not have:
        return out
    full = [unflatten(embeddings[i], cfg) for i in have]
    means = np.asarray([mean_signature(e) for e in full])
    ids = [clip_ids[i] for i in have]
    found = group_by_index(ids, means, [lengths[i] for i in have], cfg,
                           lambda a, b: clip_similarity(full[a], full[b]))
    for k, i in enumerate(have):
        out[i] = {"score_dup": float(found["score_dup"][k]), "dup_group": ids[found["group"][k]],
                  "dup_keep": bool(found["keep"][k])}
    return out
