"""Benchmark: the whole serving process at 1M chunks (memory of the index directory as the service loads it).

`python benchmarks/bench_memory.py [--chunks 1000000] [--old-code /path/to/checkout] [--dir DIR]`

1. Build (this process): a synthetic knowledge base of `--chunks` chunks written as a real `docs.jsonl`, each
   document a random run of 4-12 sentences of one shipped document (so questions about the corpus still find
   meaningful chunks). Embedding 5M sentences would take hours here, so vectors are synthetic too: a sentence
   gets its real all-MiniLM-L6-v2 vector plus a little noise, a chunk the normalised mean of its sentences'.
   The index directory is then written by the library (`build_index`, `ChunkStoreWriter`), with the
   fingerprint `load_or_build` expects for the documents.
2. Serve (a fresh process): `LLMService.from_settings` as `serve` runs it (reads and fingerprints the documents,
   loads the index), then answers the golden set one question at a time with the local answerer. Reported:
   RSS after start-up, after answering, and the peak (ru_maxrss).
3. `--old-code DIR`: the same corpus in the previous index format (chunks.json, float32 sentence vectors held
   in memory), served by the checkout in DIR, for the before/after comparison.
`--reuse --dir DIR` serves again what an earlier run built in DIR (its build figures are kept).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import DOCS, RESULTS, ROOT, main

SERVE = r"""
import json, os, sys, time
from pathlib import Path
def rss(field="VmRSS"):  # VmHWM: this process's peak (ru_maxrss would include the parent's, from before exec)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024
started = time.perf_counter()
from chatbot_model.config import load_settings
from chatbot_model.pipeline.service import LLMService
root, docs, questions = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
settings = load_settings(index_dir=root, docs_path=docs, feedback_db_url="", tracing=False,
                         tracking_uri="sqlite:///" + str(root.parent / "mlflow.db"))
def refuse(*args, **kwargs):
    raise SystemExit("the index directory did not match the documents: it would be rebuilt (hours at 1M chunks)")
from chatbot_model.retrieval.rag import RAGPipeline
RAGPipeline.build = refuse
service = LLMService.from_settings(settings)
loaded, rss_loaded = time.perf_counter() - started, rss()
answers = [service.answer(q).answer for q in questions]
print(json.dumps({"chunks": service.rag.manifest["chunks"], "start_s": round(loaded, 1),
                  "rss_after_start_mb": round(rss_loaded), "rss_after_answers_mb": round(rss()),
                  "peak_rss_mb": round(rss("VmHWM")),
                  "answers": answers}))
"""


def option(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def base_pool() -> tuple[list[dict], list[list[int]], list[str], np.ndarray]:
    """The shipped documents, each one's sentence numbers, all sentences, and their real vectors."""
    from chatbot_model.retrieval.embedder import get_embedder
    from chatbot_model.retrieval.rag import split_sentences

    docs = json.loads(DOCS.read_text())
    sentences, per_doc, seen = [], [], {}
    for doc in docs:
        numbers = []
        for s in split_sentences(doc["text"]):
            numbers.append(seen.setdefault(s, len(sentences)))
            if numbers[-1] == len(sentences):
                sentences.append(s)
        per_doc.append(numbers)
    return docs, per_doc, sentences, get_embedder("").encode(sentences)


def build(root: Path, n_chunks: int, old_root: Path | None, seed: int = 0) -> dict:
    """Write docs.jsonl and the index directory (and the old-format one when asked); the timings."""
    from chatbot_model.retrieval.chunk_store import ChunkStore, ChunkStoreWriter
    from chatbot_model.retrieval.lexical import LexicalIndex
    from chatbot_model.config import load_settings
    from chatbot_model.retrieval.index import build_index
    from chatbot_model.retrieval.rag import INDEX_FORMAT, RAGPipeline, chunk_documents, fingerprint, load_documents
    from chatbot_model.contract import Document

    started = time.perf_counter()
    docs, per_doc, sentences, base = base_pool()
    number = {s: i for i, s in enumerate(sentences)}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(index_dir=root / "index", docs_path=root / "docs.jsonl")
    (root / "index").mkdir(exist_ok=True)
    writer = ChunkStoreWriter(root / "index", base.shape[1])
    old = _OldFormat(old_root, base.shape[1]) if old_root else None
    chunk_vectors = np.empty((n_chunks + 64, base.shape[1]), dtype=np.float32)  # the last document may overshoot
    n, n_docs, n_sentences = 0, 0, 0
    with open(root / "docs.jsonl", "w", encoding="utf-8") as out:
        while n < n_chunks:
            block_chunks, ids = [], []
            while n < n_chunks and len(block_chunks) < 20_000:
                d = int(rng.integers(len(docs)))
                picked = rng.choice(per_doc[d], size=int(rng.integers(4, 13)))
                doc = Document(id=f"{docs[d]['id']}-{n_docs}", title=f"{docs[d]['title']} ({n_docs})",
                               text="\n".join(sentences[i] for i in picked), source=f"synthetic/{n_docs}.md")
                out.write(json.dumps({"id": doc.id, "title": doc.title, "text": doc.text, "source": doc.source},
                                     ensure_ascii=False) + "\n")
                n_docs += 1
                for chunk in chunk_documents([doc], settings.chunk_size, settings.chunk_overlap):
                    ids += [number[s] for s in chunk.sentences]
                    block_chunks.append(replace(chunk, chunk_id=n))
                    n += 1
            vecs = base[ids] + rng.normal(0, 0.01, (len(ids), base.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            starts = np.cumsum([0] + [len(c.sentences) for c in block_chunks[:-1]])
            means = np.add.reduceat(vecs, starts, axis=0)
            first = block_chunks[0].chunk_id
            chunk_vectors[first:first + len(block_chunks)] = means / np.linalg.norm(means, axis=1, keepdims=True)
            contexts = vecs + rng.normal(0, 0.01, vecs.shape).astype(np.float32)  # stand-ins, as `vecs` are
            writer.add(block_chunks, vecs, contexts / np.linalg.norm(contexts, axis=1, keepdims=True))
            if old:
                old.add(block_chunks, vecs)
            n_sentences += len(vecs)
            print(f"  {n:,} chunks written", file=sys.stderr, flush=True)
    writer.close()
    generated = time.perf_counter() - started
    started = time.perf_counter()
    index, params = build_index(chunk_vectors[:n], settings.index_type, ivf_nprobe=settings.ivf_nprobe)
    indexed = time.perf_counter() - started
    import faiss

    faiss.write_index(index, str(root / "index" / "index.faiss"))
    started = time.perf_counter()
    lexical = LexicalIndex.build(ChunkStore(root / "index"))  # BM25 over the stored chunks, as a real build
    lexical.save(root / "index")
    lexical_s = time.perf_counter() - started
    name = RAGPipeline(settings).embedder_name
    hashed = load_documents(root / "docs.jsonl")  # the documents exactly as the service reads them
    manifest = {"format": INDEX_FORMAT, "fingerprint": fingerprint(hashed, name, settings), "embedder": name,
                "dim": base.shape[1], "documents": n_docs, "chunks": n, "sentences": n_sentences,
                "index_type": params["type"], "index_params": params, "chunk_size": settings.chunk_size,
                "chunk_overlap": settings.chunk_overlap, "lexical": {"type": "bm25s", "terms": len(lexical.idf)},
                "synthetic": True}
    (root / "index" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if old:
        old.close(root / "index", {**manifest, "format": 1, "fingerprint": _old_fingerprint(hashed, name, settings)})
    return {"documents": n_docs, "chunks": n, "sentences": n_sentences, "generate_and_store_s": round(generated, 1),
            "faiss_build_s": round(indexed, 1), "lexical_build_s": round(lexical_s, 1), "index_params": params,
            "files_mb": {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted((root / "index").iterdir())}}


def _old_fingerprint(docs, name, settings) -> str:
    import chatbot_model.retrieval.rag as rag

    current, rag.INDEX_FORMAT = rag.INDEX_FORMAT, 1
    try:
        return rag.fingerprint(docs, name, settings)
    finally:
        rag.INDEX_FORMAT = current


class _OldFormat:
    """Index format 1 (chunks.json, float32 sentence vectors), written in blocks, for the `before` figures."""

    def __init__(self, root: Path, dim: int):
        self.root = root / "index"
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim, self.offsets, self.first = dim, [0], True
        self.chunks = open(self.root / "chunks.json", "w", encoding="utf-8")
        self.chunks.write("[")
        self.raw = open(self.root / "vectors.raw", "wb")

    def add(self, chunks, vectors) -> None:
        for c in chunks:
            record = {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "source": c.source,
                      "text": c.text, "sentences": list(c.sentences)}
            self.chunks.write(("" if self.first else ",") + json.dumps(record, ensure_ascii=False))
            self.first = False
            self.offsets.append(self.offsets[-1] + len(c.sentences))
        self.raw.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

    def close(self, new_index: Path, manifest: dict) -> None:
        import shutil

        self.chunks.write("]")
        self.chunks.close()
        self.raw.close()
        with open(self.root / "sentence_vectors.npy", "wb") as out, open(self.root / "vectors.raw", "rb") as data:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (self.offsets[-1], self.dim)})
            shutil.copyfileobj(data, out, 16 << 20)
        (self.root / "vectors.raw").unlink()
        np.save(self.root / "sentence_offsets.npy", np.asarray(self.offsets, dtype=np.int64))
        shutil.copy(new_index / "index.faiss", self.root / "index.faiss")
        (self.root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def serve(code: Path, root: Path, docs: Path, questions: list[str]) -> dict:
    """Start the service over `root` in a fresh process running the code in `code`; its figures."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SERVE, str(root), str(docs), json.dumps(questions)],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"serving process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    from common import eval_questions

    n = int(option("--chunks", "10000" if quick else "1000000"))
    work = Path(option("--dir") or tempfile.mkdtemp(prefix="bench-memory-"))
    old_code = option("--old-code")
    questions = [r["question"] for r in eval_questions()]
    if "--reuse" in sys.argv:  # serve what an earlier run built in --dir
        built = json.loads((RESULTS / "memory.json").read_text())["build"]
        n = built["chunks"]
    else:
        print(f"building {n:,} chunks in {work}", file=sys.stderr, flush=True)
        built = build(work / "new", n, work / "old" if old_code else None)
        built["build_process_peak_rss_mb"] = round(_peak_mb())
    result = {"chunks": n, "build": built}
    after = serve(ROOT, work / "new" / "index", work / "new" / "docs.jsonl", questions)
    result["after"] = {k: v for k, v in after.items() if k != "answers"}
    if old_code:
        before = serve(Path(old_code), work / "old" / "index", work / "new" / "docs.jsonl", questions)
        result["before"] = {k: v for k, v in before.items() if k != "answers"}
        same = sum(a == b for a, b in zip(after["answers"], before["answers"]))
        result["answers_identical"] = f"{same}/{len(questions)}"
    result["sample_answer"] = {"question": questions[0], "answer": after["answers"][0]}
    return result


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main("memory", run)
