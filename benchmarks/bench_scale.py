"""Benchmark 4: retrieval at scale, 10k / 100k / 1M chunks of synthetic vectors.

Synthetic vectors look like sentence embeddings of a corpus: each is a random mix of two real all-MiniLM-L6-v2
sentence vectors of the shipped corpus plus Gaussian noise (as large as the signal), L2-normalised; queries are
drawn the same way, separately. Pure random vectors would have no neighbourhood structure (every approximate
index fails on them, and real embeddings are nothing like them).

For each size and index type (flat = exact, hnsw, ivf as `chatbot_model.retrieval.index.build_index` builds it, `auto`
parameters): build time, memory (serialized index size = resident size when loaded, and the RSS growth while
building), single-query p50/p95 (k=10, one query per call) and recall@10 against exact search.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from common import DOCS, main, rss_mb, stats_ms

K = 10


def base_vectors() -> np.ndarray:
    from chatbot_model.retrieval.embedder import get_embedder
    from chatbot_model.retrieval.rag import chunk_documents, load_documents

    chunks = chunk_documents(load_documents(DOCS), 800, 120)
    return get_embedder("").encode([s for c in chunks for s in c.sentences])


def synthetic(n: int, base: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        i, j = rng.integers(0, len(base), m), rng.integers(0, len(base), m)
        w = rng.random((m, 1), dtype=np.float32)
        x = w * base[i] + (1 - w) * base[j] + rng.normal(0, noise, (m, base.shape[1])).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def single_queries(index, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        _, ids = index.search(q[None, :], K)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return times, np.array(found)


def measure(kind: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, timed: int, **params) -> dict:
    import faiss

    from chatbot_model.retrieval.index import build_index, recall_at_k

    before = rss_mb()
    started = time.perf_counter()
    index, info = build_index(data, kind, **params)
    build = time.perf_counter() - started
    grown = rss_mb() - before
    size_mb = faiss.serialize_index(index).nbytes / 2**20
    times, found = single_queries(index, queries[:timed])
    row = {"build_s": round(build, 2), "index_mb": round(size_mb, 1), "rss_growth_mb": round(grown, 1),
           **{f"query_{k}_ms": v for k, v in stats_ms(times).items() if k in ("p50", "p95")},
           "recall_at_10": round(recall_at_k(found, truth[:timed]), 4),
           "params": {k: v for k, v in info.items() if k not in ("class", "build_seconds")}}
    sweep = {}
    if kind == "ivf":
        for nprobe in (4, 8, 16, 32, 64):
            index.nprobe = nprobe
            t, f = single_queries(index, queries[:timed])
            sweep[f"nprobe={nprobe}"] = {"p50_ms": stats_ms(t)["p50"], "recall_at_10": round(recall_at_k(f, truth), 4)}
    elif kind == "hnsw":
        for ef in (32, 64, 128):
            index.hnsw.efSearch = ef
            t, f = single_queries(index, queries[:timed])
            sweep[f"efSearch={ef}"] = {"p50_ms": stats_ms(t)["p50"], "recall_at_10": round(recall_at_k(f, truth), 4)}
    if sweep:
        row["sweep"] = sweep
    del index
    return row


def run(quick: bool) -> dict:
    import faiss

    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    hnsw_1m = "--hnsw-1m" in sys.argv
    base = base_vectors()
    queries = synthetic(200, base, seed=999)
    results = {}
    for n in sizes:
        data = synthetic(n, base, seed=n)
        exact = faiss.IndexFlatIP(data.shape[1])
        exact.add(data)
        _, truth = exact.search(queries, K)  # batched exact search: the reference
        del exact
        kinds = ["flat", "ivf"] + (["hnsw"] if n < 1_000_000 or hnsw_1m else [])
        timed = 50 if n >= 1_000_000 else 200
        for kind in kinds:
            row = measure(kind, data, queries[:timed], truth[:timed], timed)
            results[f"{n:,} {kind}"] = row
            print(f"{n:>9,} {kind:5s} {row}", file=sys.stderr, flush=True)
        del data
    from chatbot_model.retrieval.index import FLAT_MAX, choose_index_type

    return {"k": K, "queries": len(queries), "faiss_threads": faiss.omp_get_max_threads(),
            "auto_choice": {f"{n:,}": choose_index_type(n) for n in (1_000, 10_000, FLAT_MAX, 100_000, 1_000_000)},
            "results": results, "hnsw_at_1m": "measured" if hnsw_1m else "skipped (build takes minutes; --hnsw-1m)"}


if __name__ == "__main__":
    main("scale", run)
