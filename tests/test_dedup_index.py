"""Near-duplicate groups through the vector index agree with the all-pairs screen."""

from __future__ import annotations

import numpy as np
import pytest

from infra.config_filters import DedupConfig
from tasks.curate.filters.dedup import group_duplicates, group_duplicates_exact
from tasks.curate.filters.dedup_groups import (
    candidate_pairs,
    components,
    group_by_index,
    index_vectors,
    pair_correlations,
)

CFG = DedupConfig(frames=6)


def synthetic_embeddings(n: int, seed: int = 0) -> tuple[list[str], list[list[float]], list[int]]:
    """Clips of ``n`` takes: a third re-uploaded 1-3 times (gain, offset, noise, a masked overlay), a
    share of look-alikes that pass the screen but not the full comparison, the rest unrelated."""
    rng = np.random.default_rng(seed)
    dim, frames, scales = CFG.grid ** 2, CFG.frames, len(CFG.scales)
    ids, embs, lengths = [], [], []

    def add(e):
        ids.append(f"{len(ids):06d}{rng.integers(1 << 30):08x}")
        embs.append(e.astype(np.float32).ravel().tolist())
        lengths.append(int(rng.integers(24, 240)))

    takes = n // 2
    for t in range(takes):
        base = rng.normal(size=(scales, frames, dim))
        add(base)
        if t % 3 == 0:
            for _ in range(int(rng.integers(1, 4))):
                copy = 1.3 * base + 0.2 + rng.normal(scale=0.15, size=base.shape)
                if rng.random() < 0.5:
                    copy[:, :, rng.choice(dim, 20, replace=False)] = np.nan  # a subtitle left out
                add(copy)
        elif t % 3 == 1:  # a look-alike: same mean picture, different frames
            other = rng.normal(size=base.shape)
            other += base.mean(axis=1, keepdims=True) * 2.5
            add(other)
    return ids, embs, lengths


def test_index_groups_equal_the_all_pairs_screen():
    ids, embs, lengths = synthetic_embeddings(300)
    exact = group_duplicates_exact(ids, embs, lengths, CFG)
    indexed = group_duplicates(ids, embs, lengths, CFG)
    assert [(r["dup_group"], r["dup_keep"]) for r in indexed] == [(r["dup_group"], r["dup_keep"]) for r in exact]
    # score_dup: the same wherever a pair passes the screen; below it the index's nearest clip (by the
    # filled vectors) may be a slightly less correlated one than the masked all-pairs maximum.
    got, want = (np.array([r["score_dup"] for r in rows]) for rows in (indexed, exact))
    screened = want >= CFG.screen_min
    assert np.allclose(got[screened], want[screened], atol=1e-6) and screened.sum() > 30
    assert np.abs(got - want).max() < 0.05 and (got <= want + 1e-6).all()
    groups = {r["dup_group"] for r in exact}
    assert len(groups) < len(ids) - 30  # the test has duplicates to find


def test_inverted_file_index_finds_the_same_groups():
    ids, embs, lengths = synthetic_embeddings(600, seed=1)
    full = [np.asarray(e, np.float32).reshape(len(CFG.scales), CFG.frames, -1) for e in embs]
    means = np.asarray([e[0].mean(axis=0) for e in full])
    from tasks.curate.filters.dedup import clip_similarity

    sim = lambda a, b: clip_similarity(full[a], full[b])  # noqa: E731
    flat = group_by_index(ids, means, lengths, CFG, sim, exact=True)
    ivf = group_by_index(ids, means, lengths, CFG, sim, exact=False)
    assert (flat["group"] == ivf["group"]).all() and flat["duplicate_pairs"] == ivf["duplicate_pairs"] > 50


def test_index_vectors_give_pearson_correlation():
    rng = np.random.default_rng(2)
    means = rng.normal(size=(50, 144)).astype(np.float32)
    v = index_vectors(means)
    a, b = np.triu_indices(50, 1)
    assert np.allclose((v[a] * v[b]).sum(axis=1), pair_correlations(means, a, b), atol=1e-5)
    means[3] = 7.0  # flat: no neighbours, no NaN
    assert not index_vectors(means)[3].any()


def test_candidates_grow_k_for_large_groups():
    rng = np.random.default_rng(3)
    base = rng.normal(size=144)
    group = base + rng.normal(scale=0.05, size=(100, 144))  # 100 copies: more than the first k
    v = index_vectors(np.concatenate([group, rng.normal(size=(200, 144))]))
    pairs, nearest = candidate_pairs(v, 0.5, exact=True)
    assert len(pairs) == 100 * 99 // 2 and (nearest[:100] < 100).all()


@pytest.mark.parametrize("edges,expected", [([], [0, 1, 2, 3]), ([(0, 3), (3, 2)], [0, 1, 0, 0]),
                                            ([(2, 3), (1, 2)], [0, 1, 1, 1])])
def test_components(edges, expected):
    assert components(4, np.asarray(edges, np.int64).reshape(-1, 2)).tolist() == expected


def test_side_store_keeps_embeddings_out_of_the_clip_table(tmp_path):
    from tasks.curate.filters.dedup import SIDE_STORE, read_side_store, unflatten, write_side_store
    from tasks.curate.score import SCORED_SCHEMA

    assert "dedup_embedding" not in SCORED_SCHEMA.names and "dup_group" in SCORED_SCHEMA.names
    ids, embs, _ = synthetic_embeddings(40)
    rows = [{"clip_id": c, "dedup_embedding": e} for c, e in zip(ids, embs, strict=True)]
    rows[5]["dedup_embedding"] = None  # an error row has none
    assert write_side_store(rows, str(tmp_path), CFG, chunk=8) == len(rows) - 1
    assert (tmp_path / SIDE_STORE).exists()
    got = read_side_store(str(tmp_path), ["dedup_mean", "dedup_embedding"], [ids[7], ids[30], ids[5]])
    assert got.column("clip_id").to_pylist() == [ids[7], ids[30]]
    want = unflatten(embs[30], CFG)[0].mean(axis=0)
    assert np.allclose(got.column("dedup_mean")[1].as_py(), want, equal_nan=True)


def test_groups_from_the_side_store_equal_the_in_memory_groups(tmp_path):
    """The score stage groups from its side store: means for all clips, embeddings only for screened pairs."""
    from tasks.curate.filters import dedup
    from tasks.curate.filters.dedup import group_from_side_store, write_side_store

    ids, embs, lengths = synthetic_embeddings(200, seed=3)
    embs[4] = None  # an error row: no embedding, null groups
    rows = [{"clip_id": c, "dedup_embedding": e} for c, e in zip(ids, embs, strict=True)]
    write_side_store(rows, str(tmp_path), CFG, chunk=16)
    asked = []
    real = dedup.read_side_store

    def spy(uri, columns, clip_ids=None, cfg=None):
        if "dedup_embedding" in columns:
            asked.extend(clip_ids)
        return real(uri, columns, clip_ids, cfg)

    dedup.read_side_store = spy
    try:
        got = group_from_side_store(str(tmp_path), ids, lengths, CFG)
    finally:
        dedup.read_side_store = real
    assert got == group_duplicates(ids, embs, lengths, CFG)
    assert [(r["dup_group"], r["dup_keep"]) for r in got] == [
        (r["dup_group"], r["dup_keep"]) for r in group_duplicates_exact(ids, embs, lengths, CFG)]
    assert got[4] == {"score_dup": None, "dup_group": None, "dup_keep": None}
    assert sum(r["dup_keep"] is False for r in got) > 20
    # only clips of screened pairs had their embeddings read (a third of the takes here are unrelated)
    assert 0 < len(set(asked)) < len(ids) - 20 and len(asked) == len(set(asked))


def test_a_run_scored_before_the_side_store_still_reads(tmp_path):
    """An old score table holds dedup_embedding: grouping reads it from there, the views never decode it."""
    import time

    import pyarrow as pa

    from infra import manifest as mf
    from tasks.curate.filters.dedup import group_from_side_store
    from tasks.curate.lib.dataset_view import read_pool

    ids, embs, lengths = synthetic_embeddings(60, seed=4)
    embs[2] = None
    old = pa.table({"clip_id": ids, "num_frames": lengths, "dedup_embedding": pa.array(embs, pa.list_(pa.float32()))})
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    manifest = mf.publish(old, str(run / ".score.tmp"), str(run / "score"), stage="score", config_hash="x", inputs=[],
                          code_version="old", started=time.time())
    got = group_from_side_store(str(run / "score"), ids, lengths, CFG)
    assert got == group_duplicates(ids, embs, lengths, CFG)
    assert read_pool(manifest).column_names == ["clip_id", "num_frames"]
    bare = run / "bare"
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match="re-run score"):
        group_from_side_store(str(bare), ids, lengths, CFG)


def test_gpu_index_is_a_config_choice_with_a_clear_error_without_cuda():
    faiss = pytest.importorskip("faiss")
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a CUDA faiss with a GPU is here: the GPU path runs instead of failing")
    ids, embs, lengths = synthetic_embeddings(20)
    with pytest.raises(RuntimeError, match="index_device=cpu"):
        group_duplicates(ids, embs, lengths, CFG.model_copy(update={"index_device": "gpu"}))
    assert DedupConfig().index_device == "cpu"


def test_candidate_search_in_small_chunks_finds_the_same_pairs(monkeypatch):
    """Queries go to the index in chunks (bounded answers); a 200-clip group makes k grow past 16 and 64."""
    from tasks.curate.filters import dedup_groups

    rng = np.random.default_rng(5)
    group = np.repeat(rng.normal(size=(1, 144)), 200, axis=0) + rng.normal(scale=0.05, size=(200, 144))
    vectors = index_vectors(np.vstack([rng.normal(size=(1500, 144)), group]).astype(np.float32))
    whole, nearest = candidate_pairs(vectors, 0.35)
    monkeypatch.setattr(dedup_groups, "RESULTS_MAX", 1000)
    chunked, nearest_chunked = candidate_pairs(vectors, 0.35)
    assert np.array_equal(whole, chunked) and np.array_equal(nearest, nearest_chunked)
    assert len(whole) >= 200 * 199 // 2  # every pair of the group, past the first k

@pytest.mark.parametrize("dim", [144, 25])  # grid 12 (production) and an odd one: the multi-index halves a padded vector
def test_multi_index_finds_every_near_duplicate_pair_the_flat_scan_finds(dim):
    """Unrelated signatures (the hard case for an index: no cluster structure) with 3% planted re-uploads,
    some uploaded 2-4 times: the inverted multi-index returns the same pairs above the screen as the
    exact flat scan, and each re-upload's nearest clip is its original or a sibling copy."""
    import faiss

    from tasks.curate.filters import dedup_groups

    rng = np.random.default_rng(7)
    n, m = 6000, 180
    means = rng.normal(size=(n, dim)).astype(np.float32)
    originals = rng.choice(n - m, m // 3, replace=False)
    source = np.repeat(originals, 3)[:m]
    noise = np.where(np.arange(m) % 2, 0.1, 0.3)[:, None]  # correlation ~0.995 and ~0.96 with the original
    means[n - m:] = means[source] + (noise * rng.normal(size=(m, dim))).astype(np.float32)
    vectors = index_vectors(means)
    flat, _ = candidate_pairs(vectors, 0.35, exact=True)
    multi, nearest = candidate_pairs(vectors, 0.35, exact=False)
    index = dedup_groups._index(vectors if dim % 2 == 0 else np.pad(vectors, ((0, 0), (0, 1))), exact=False)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    assert isinstance(quantizer, faiss.MultiIndexQuantizer)  # the path 1M clips take, not the flat scan
    close = lambda p: {tuple(x) for x in p[pairing_corr(means, p) >= 0.9]}  # noqa: E731
    assert close(multi) == close(flat) and len(close(flat)) >= m
    assert pairing_corr(means, multi).min() > 0.35 - 0.02  # what the index calls in range is (8-bit codes aside)
    copies = np.arange(n - m, n)
    assert all(nearest[c] == source[c - (n - m)] or source[nearest[c] - (n - m)] == source[c - (n - m)]
               if nearest[c] >= n - m else nearest[c] == source[c - (n - m)] for c in copies)


def pairing_corr(means, pairs):
    return pair_correlations(means, pairs[:, 0], pairs[:, 1]) if len(pairs) else np.empty(0)


def test_side_rows_reads_the_wanted_clips_across_row_groups(tmp_path):
    """The bounded reader returns what the dataset filter returns (rows spread over many row groups, one
    id absent), and an empty table with the columns when none is there."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from tasks.curate.filters.dedup_side import side_rows

    ids = [f"c{i:04d}" for i in range(300)]
    table = pa.table({"clip_id": ids, "dedup_embedding": [[float(i)] * 50 for i in range(300)]})
    path = str(tmp_path / "side.parquet")
    pq.write_table(table, path, row_group_size=16)
    wanted = [ids[299], ids[3], ids[150], "absent", ids[17]]
    got = side_rows(path, ["clip_id", "dedup_embedding"], wanted)
    want = ds.dataset(path).to_table(filter=ds.field("clip_id").isin(wanted))
    assert got.equals(want) and got.column("clip_id").to_pylist() == [ids[3], ids[17], ids[150], ids[299]]
    assert got.column("dedup_embedding")[2].as_py() == [150.0] * 50
    none = side_rows(path, ["clip_id", "dedup_embedding"], ["absent"])
    assert none.num_rows == 0 and none.column_names == ["clip_id", "dedup_embedding"]
