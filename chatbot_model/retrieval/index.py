"""FAISS index choice by corpus size, and its search parameters (persisted in the index manifest).

Vectors are L2-normalised, every index uses inner product (= cosine).

| type | when `auto` picks it | search parameter |
|---|---|---|
| `flat` (`IndexFlatIP`, exact) | fewer than `FLAT_MAX` vectors | - |
| `ivf` (`IndexIVFFlat`) | `FLAT_MAX` vectors or more | `nprobe`, calibrated at build time for recall@10 >= 0.95 |
| `hnsw` (`IndexHNSWFlat`) | only when asked (`CHATBOT_INDEX_TYPE=hnsw`) | `efSearch` (`CHATBOT_HNSW_EF_SEARCH`) |

Why (BENCHMARKS.md, "Retrieval at scale"): exact search costs ~0.16 ms per 1k vectors per query on an idle
2-core machine (and much more when it is busy), so it stays exact only up to 20k chunks (~3 ms). IVF (lists
~4 sqrt(n), nprobe calibrated at build time) builds 1M vectors in 1-2 minutes and answers in ~4 ms at
recall@10 >= 0.99 with 1.5 GB; HNSW answers as fast but builds ~5x slower (17 s at 100k, minutes at 1M), needs
more memory and had the lower recall at 100k (0.95 at efSearch 64, 0.98 at 128).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from chatbot_model.config import INDEX_TYPES
from chatbot_model.errors import unknown_name

log = logging.getLogger(__name__)
FLAT_MAX = 20_000
TARGET_RECALL = 0.95
CLASS_TO_TYPE = {"IndexFlatIP": "flat", "IndexHNSWFlat": "hnsw", "IndexIVFFlat": "ivf"}


def choose_index_type(n: int, requested: str = "auto") -> str:
    """`requested` unless `auto`: flat below FLAT_MAX vectors, else ivf. Tiny corpora are always flat."""
    if requested not in INDEX_TYPES:
        raise unknown_name("index type", requested, list(INDEX_TYPES))
    if requested == "auto":
        return "flat" if n < FLAT_MAX else "ivf"
    if requested == "ivf" and n < 1_000:  # k-means needs data: an IVF over a few hundred vectors is pointless
        log.info("index type ivf asked for %d vectors: using flat", n)
        return "flat"
    return requested


def ivf_lists(n: int) -> int:
    """Number of IVF lists: ~4 sqrt(n), a power of two (100k -> 1024, 1M -> 4096)."""
    return int(2 ** round(math.log2(max(16.0, 4 * math.sqrt(n)))))


def build_index(vectors: np.ndarray, kind: str = "auto", *, hnsw_m: int = 32, hnsw_ef_search: int = 128,
                ivf_nprobe: int = 0, seed: int = 0):
    """(index, params): `params` is what the manifest keeps (type, class, build and search parameters)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_index_type(n, kind)
    started = time.perf_counter()
    params: dict = {"type": kind}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.add(vectors)
        index.hnsw.efSearch = hnsw_ef_search
        params.update(m=hnsw_m, ef_construction=index.hnsw.efConstruction, ef_search=hnsw_ef_search)
    else:
        nlist = ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, size=min(n, nlist * 40), replace=False)]
        index.train(sample)
        index.add(vectors)
        nprobe, recall = (ivf_nprobe, None) if ivf_nprobe else calibrate_nprobe(index, vectors, seed=seed)
        index.nprobe = nprobe
        params.update(nlist=nlist, nprobe=nprobe, calibrated_recall_at_10=recall)
    params["class"] = type(index).__name__
    params["build_seconds"] = round(time.perf_counter() - started, 3)
    return index, params


def calibrate_nprobe(index, vectors: np.ndarray, *, k: int = 10, queries: int = 200, target: float = TARGET_RECALL,
                     seed: int = 0) -> tuple[int, float]:
    """Smallest nprobe (powers of two) whose recall@k vs exact search reaches `target`, with a margin.

    Queries are stored vectors mixed pairwise (near the data, not in it); exact neighbours come from a flat scan.
    """
    import faiss

    rng = np.random.default_rng(seed + 1)
    n = len(vectors)
    a, b = vectors[rng.integers(0, n, queries)], vectors[rng.integers(0, n, queries)]
    q = a + 0.5 * b
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q = np.ascontiguousarray(q, dtype=np.float32)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(q, k)
    nprobe, recall = 1, 0.0
    while nprobe < index.nlist:
        index.nprobe = nprobe
        recall = recall_at_k(index.search(q, k)[1], truth)
        if recall >= min(1.0, target + 0.02):  # margin: real queries differ from the calibration ones
            break
        nprobe *= 2
    nprobe = min(nprobe, index.nlist)
    return nprobe, round(float(recall), 4)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-k found by the approximate search."""
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0


def apply_search_params(index, params: dict, *, hnsw_ef_search: int | None = None, ivf_nprobe: int = 0) -> dict:
    """Set the search parameters of a loaded index: persisted ones, overridden by explicit settings."""
    import faiss

    params = dict(params or {})
    params.setdefault("type", CLASS_TO_TYPE.get(type(index).__name__, "flat"))
    params.setdefault("class", type(index).__name__)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(hnsw_ef_search or params.get("ef_search") or 128)
        params["ef_search"] = index.hnsw.efSearch
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = int(ivf_nprobe or params.get("nprobe") or 16)
        params["nprobe"] = index.nprobe
    return params
