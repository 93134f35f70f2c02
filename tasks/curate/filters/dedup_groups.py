"""Near-duplicate groups across clips through a vector index (report section 3.1, deduplication).

The exact screen (``dedup.similarity_matrix``) correlates every pair of clips' mean signatures: N^2
time and memory. Here each clip's mean signature becomes a unit vector whose inner product with
another's is their Pearson correlation (masked cells filled with the clip's own mean, so they add
nothing), and a FAISS index returns each clip's neighbours above ``screen_min - SCREEN_MARGIN``: exact
(``IndexFlatIP``) up to ``EXACT_MAX`` clips, an inverted multi-index beyond (Babenko & Lempitsky, "The
inverted multi-index", CVPR 2012: two 2^b-centroid codebooks over the vector's halves give 4^b lists for the
cost of assigning to 2 x 2^b centroids, so the lists stay ~LIST_SIZE clips long whatever N and a query scans
NPROBE short lists: near-linear, where a flat-quantized IVF pays N x nlist for the assignment and scans
lists that grow as sqrt N), 8-bit codes (the candidates are re-checked exactly, the margin covers the code
error). On the GPU when ``index_device`` says so: an IVF with a flat quantizer (faiss's GPU IVF has no
multi-index; faiss built with CUDA: this machine has none, so that path is untested here). Candidate pairs are then re-checked with the exact masked correlation
(the margin covers clips whose masks differ), the survivors get the full ``clip_similarity``, and the
groups are the connected components of the pairs at ``similarity_min`` (union-find by vectorised label
propagation). Full embeddings are asked for only for clips in a candidate pair (``load``): they can
stay in the side store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EXACT_MAX = 20_000  # up to this many clips the index is exact (a flat inner-product scan)
SCREEN_MARGIN = 0.15  # index radius below screen_min: masked cells shift a correlation by less than this
NEIGHBOURS = 16  # first k asked of the index; doubled for clips whose k-th neighbour is still in range
NPROBE = 16  # GPU IVF: lists searched
LIST_SIZE = 16  # multi-index: mean clips per list (4^b lists, b from N)
MULTI_PROBE = 32  # multi-index: lists searched per query (all planted copies found at 100k and 1M)
TRAIN_MAX = 65536  # vectors the codebooks and the 8-bit codes are trained on: 256 per centroid at b = 8
RESULTS_MAX = 1 << 22  # neighbours held per search call (queries x k): 48 MB of answers at most


def index_vectors(means: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(N, D) mean signatures (NaN = masked cell) -> unit vectors: inner product = Pearson correlation
    when no cell is masked; a flat or fully masked signature -> zeros (no neighbours). Row by row, in
    chunks: the temporaries stay a chunk's size, not N's."""
    means = np.asarray(means, np.float32)
    out = np.empty(means.shape, np.float32)
    for s in range(0, len(means), chunk):
        x = means[s:s + chunk]
        fill = np.nanmean(np.where(np.isnan(x).all(axis=1, keepdims=True), 0.0, x), axis=1, keepdims=True)
        x = np.where(np.isnan(x), fill, x)
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + chunk] = np.where(norm > 1e-6, x / np.maximum(norm, 1e-6), 0.0)
    return out


GPU_K_MAX = 2048  # FAISS GPU search returns at most this many neighbours per query


def _on_device(index, device: str):
    """``index`` itself for the CPU, a GPU copy for ``gpu`` (a clear error when faiss has no CUDA)."""
    import faiss

    if device == "cpu":
        return index
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        raise RuntimeError("dedup.index_device=gpu needs faiss built with CUDA and a visible GPU; this faiss is "
                           f"{'CPU-only' if not hasattr(faiss, 'StandardGpuResources') else 'without a GPU'}: "
                           "install faiss-gpu or set dedup.index_device=cpu")
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def _index(vectors: np.ndarray, exact: bool, device: str = "cpu"):
    """A FAISS index over unit ``vectors`` (even dimension unless ``exact``); its ``search`` gives inner
    products for the flat and GPU indexes, squared L2 distances for the multi-index (``_similarities``)."""
    import faiss

    d = vectors.shape[1]
    rng = np.random.default_rng(0)
    if exact:
        index = _on_device(faiss.IndexFlatIP(d), device)
    elif device != "cpu":
        nlist = int(max(64, min(4 * np.sqrt(len(vectors)), 8192)))
        index = _on_device(faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT), device)
        index.train(vectors[rng.choice(len(vectors), min(len(vectors), nlist * 40), replace=False)])
        index.nprobe = NPROBE
    else:
        # The multi-index is L2 only; on unit vectors |a - b|^2 = 2 - 2 a.b ranks pairs as the inner product.
        bits = int(np.clip(round(np.log2(max(len(vectors), 1) / LIST_SIZE) / 2), 5, 10))
        index = faiss.index_factory(d, f"IMI2x{bits},SQ8")
        index.train(vectors[rng.choice(len(vectors), min(len(vectors), TRAIN_MAX), replace=False)])
        faiss.extract_index_ivf(index).nprobe = MULTI_PROBE
    index.add(vectors)
    return index


def _similarities(index, answers: np.ndarray) -> np.ndarray:
    """Inner products from an index's search answers (L2 on unit vectors: a.b = 1 - |a - b|^2 / 2)."""
    import faiss

    return 1.0 - answers / 2.0 if index.metric_type == faiss.METRIC_L2 else answers


def candidate_pairs(vectors: np.ndarray, radius: float, exact: bool | None = None,
                    device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(pairs (P, 2) with i < j whose index similarity >= ``radius``, nearest other clip per clip, -1 if
    none). Each clip asks for k neighbours; those whose k-th is still in range ask again with 4k. Queries
    go in chunks, so memory is the index plus one chunk's answers, whatever N."""
    n = len(vectors)
    exact = n <= EXACT_MAX if exact is None else exact
    if vectors.shape[1] % 2:  # the multi-index splits the vector in halves; a zero cell changes no product
        vectors = np.pad(vectors, ((0, 0), (0, 1)))
    index = _index(vectors, exact, device)
    nearest = np.full(n, -1, np.int64)
    found = []
    todo, k = np.arange(n), min(NEIGHBOURS, n)
    while len(todo):
        still = []
        step = max(1, RESULTS_MAX // k)  # queries per search: the (queries, k) answers stay bounded, never N x N
        for part in (todo[s:s + step] for s in range(0, len(todo), step)):
            sims, ids = index.search(vectors[part], k)
            sims = _similarities(index, sims)
            others = (ids != part[:, None]) & (ids >= 0)
            first = np.argmax(others, axis=1)
            has = others[np.arange(len(part)), first]
            nearest[part[has]] = ids[np.arange(len(part)), first][has]
            hit = others & (sims >= radius)
            rows, cols = np.nonzero(hit)
            found.append(np.stack([part[rows], ids[rows, cols]], axis=1))
            if k < n:
                still.append(part[(hit | (ids == part[:, None])).all(axis=1)])
        todo, k = (np.concatenate(still) if still else np.empty(0, np.int64)), min(4 * k, n)
        if device != "cpu" and k > GPU_K_MAX and len(todo):  # the few clips in very large groups: on the CPU
            import faiss

            index, device = faiss.index_gpu_to_cpu(index), "cpu"
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    pairs = np.sort(pairs, axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    return pairs, nearest


def pair_correlations(means: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Pearson correlation of means[a[p]] and means[b[p]] over the cells both have (as ``dedup.correlations``)."""
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), chunk):
        x, y = means[a[s:s + chunk]].astype(np.float64), means[b[s:s + chunk]].astype(np.float64)
        both = ~(np.isnan(x) | np.isnan(y))
        n = np.maximum(both.sum(axis=1), 1)
        x, y = np.where(both, x, 0.0), np.where(both, y, 0.0)
        sx, sy = x.sum(axis=1), y.sum(axis=1)
        cov = (x * y).sum(axis=1) - sx * sy / n
        var = ((x * x).sum(axis=1) - sx * sx / n) * ((y * y).sum(axis=1) - sy * sy / n)
        out[s:s + chunk] = cov / np.sqrt(np.maximum(var, 1e-12))
    return out


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over ``pairs``: the smallest member index of each node's connected component."""
    label = np.arange(n)
    if not len(pairs):
        return label
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # pointer jumping: a chain collapses in log steps
        if np.array_equal(new, label):
            return label
        label = new


def group_by_index(clip_ids: Sequence[str], means: np.ndarray, lengths: Sequence[int], cfg,
                   similarity: Callable[[int, int], float], exact: bool | None = None,
                   load: Callable[[np.ndarray], None] | None = None) -> dict:
    """Groups of the clips whose mean signatures are ``means`` (N, D): arrays ``score_dup``,
    ``group`` (index of the kept clip), ``keep`` and the counts behind them. ``similarity(i, j)`` is the
    full clip similarity; ``load(indices)``, if given, is called once with every clip ``similarity`` will
    be asked about (to read their embeddings in one pass)."""
    n = len(clip_ids)
    vectors = index_vectors(means)
    pairs, nearest = candidate_pairs(vectors, cfg.screen_min - SCREEN_MARGIN, exact,
                                     getattr(cfg, "index_device", "cpu"))
    with_nearest = np.stack([np.arange(n), nearest], axis=1)[nearest >= 0]
    probe = np.unique(np.sort(np.concatenate([pairs, with_nearest]), axis=1), axis=0)
    corr = pair_correlations(means, probe[:, 0], probe[:, 1])
    screened = corr >= cfg.screen_min
    sim = corr.copy()
    if load is not None and screened.any():
        load(np.unique(probe[screened]))
    sim[screened] = [similarity(int(i), int(j)) for i, j in probe[screened]]
    score = np.full(n, -1.0)
    np.maximum.at(score, probe[:, 0], sim)
    np.maximum.at(score, probe[:, 1], sim)
    label = components(n, probe[sim >= cfg.similarity_min])
    # One clip kept per group: the longest, then the smallest clip_id (dedup.group_duplicates' rule).
    order = np.lexsort((np.asarray(clip_ids, dtype=object).astype(str), -np.asarray(lengths), label))
    first = np.ones(n, bool)
    first[1:] = label[order][1:] != label[order][:-1]
    keeper = np.empty(n, np.int64)
    keeper[label[order][first]] = order[first]
    group = keeper[label]
    return {"score_dup": np.maximum(score, 0.0) if n > 1 else np.zeros(n), "group": group,
            "keep": group == np.arange(n), "candidates": len(pairs), "compared": int(screened.sum()),
            "duplicate_pairs": int((sim >= cfg.similarity_min).sum())}
