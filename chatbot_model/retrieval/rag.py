"""RAGPipeline: load documents, chunk them with overlap, embed, search a FAISS inner-product index and a BM25
index of the same chunks, and rank documents by both (`retrieve_vectors`).

Vectors are L2-normalised, so inner product = cosine similarity. The index and the chunk store (chunks and the
sentence vectors the local answerer reuses, memory-mapped: see chunk_store.py) persist in `settings.index_dir`
with a fingerprint of the documents, the embedder, the chunking and the directory format; `load_or_build`
rebuilds only when that fingerprint changes (a directory of an older format is stale, so it is rebuilt).
Index files are written to a temporary directory and swapped in whole, so a failed build leaves the old
index (or nothing) behind, never a half-written one. The lexical index (`lexical.py`) is saved beside the
dense one, in `lexical/` of the same directory, under the same fingerprint.

Hybrid ranking: a document's score is its best chunk's cosine plus `lexical_weight` times its best chunk's BM25
divided by the best document's BM25 for that question (so in [0, lexical_weight]). Candidates are the
documents of the dense search's over-fetch and the best BM25 documents; a document found only by BM25 is ranked
with the lowest cosine seen among the dense candidates (a lower bound), and once chosen its source gets the real
cosine of its best BM25 chunk (read back from the index; the bound when the index cannot). Each `Source` keeps
the cosine as its `score` and carries the sentences of its whole document (`doc_sentences`, with their vectors)
for the local answerer. Weight and candidate counts chosen on the dev part of
artifacts/eval/user_questions.jsonl (docs/answer-quality.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import math
from dataclasses import dataclass, field

import numpy as np

from chatbot_model.config import Settings
from chatbot_model.contract import Chunk, Document, Source
from chatbot_model.retrieval.lexical import TOKENIZER, LexicalIndex, LexicalQuery
from chatbot_model.errors import ConfigError, InvalidInput
from chatbot_model.retrieval.chunk_store import ChunkStore, in_context, write_store
from chatbot_model.retrieval.embedder import EMBEDDED_MODEL, get_embedder
from chatbot_model.retrieval.index import CLASS_TO_TYPE, apply_search_params, build_index, choose_index_type

log = logging.getLogger(__name__)
DOC_SUFFIXES = (".json", ".jsonl", ".md", ".txt")
INDEX_FORMAT = 4  # 4: context vectors; 3: the lexical index; 2: memory-mapped chunk store, float16 sentence vectors
DENSE_CANDIDATES = 10  # documents taken from the dense search per question (at least 4 x k)
LEXICAL_CANDIDATES = 10  # documents taken from BM25 per question
DOC_CHUNKS = 6  # most chunks of one document whose sentences a source carries (those nearest its best chunk)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")


# ---------------------------------------------------------------- documents
def load_documents(path: str | Path) -> list[Document]:
    """Documents from a `.json` (list of {id,title,text,source}), `.jsonl`, `.md`, `.txt` file or a folder of them."""
    docs = list(iter_documents(path))
    if not docs:
        raise ConfigError(f"no documents found in {path}; add {', '.join(DOC_SUFFIXES)} files with some text")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise ConfigError(f"duplicate document id {doc.id!r} in {path}; document ids must be unique")
        seen.add(doc.id)
    return docs


def iter_documents(path: str | Path) -> Iterator[Document]:
    """The documents of `path` one at a time (`.jsonl` line by line), unchecked for duplicates: enough to
    fingerprint a large corpus without holding it in memory. `load_documents` is the checked list."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"knowledge base {str(path)!r} does not exist; pass a file or folder of "
                          f"{', '.join(DOC_SUFFIXES)} files (or set CHATBOT_DOCS_PATH)")
    files = sorted(p for p in path.rglob("*") if p.suffix in DOC_SUFFIXES and p.is_file()) if path.is_dir() else [path]
    if path.is_file() and path.suffix not in DOC_SUFFIXES:
        raise ConfigError(f"{path}: unsupported file type {path.suffix!r}; use one of {list(DOC_SUFFIXES)}")
    for file in files:
        yield from _load_file(file, base=path if path.is_dir() else file.parent)


def _load_jsonl(file: Path, rel: str) -> Iterator[Document]:
    try:
        with open(file, encoding="utf-8") as lines:
            i = 0
            for n, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{file}:{n}: not valid JSON ({exc.msg}); one JSON object per line") from None
                    yield _to_document(record, file, i, rel)
                    i += 1
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}; documents must be UTF-8 text") from None


def _load_file(file: Path, base: Path) -> Iterable[Document]:
    rel = file.relative_to(base).as_posix() if file.is_relative_to(base) else file.name
    if file.suffix == ".jsonl":
        return _load_jsonl(file, rel)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}; documents must be UTF-8 text") from None
    if file.suffix in (".md", ".txt"):
        if not text.strip():
            return []
        title = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.strip()), file.stem)
        return [Document(id=Path(rel).with_suffix("").as_posix(), title=title, text=text.strip(), source=rel)]
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a list of "
                          '{"id", "title", "text", "source"} objects') from None
    if isinstance(records, dict) and isinstance(records.get("documents"), list):
        records = records["documents"]
    if not isinstance(records, list):
        raise ConfigError(f"{file}: expected a JSON list of documents, got {type(records).__name__}")
    return [_to_document(r, file, i, rel) for i, r in enumerate(records)]


def _to_document(record, file: Path, i: int, rel: str) -> Document:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
        raise ConfigError(f"{file}: document #{i} needs a non-empty string field 'text' "
                          '(format: {"id", "title", "text", "source"})')
    doc_id = str(record.get("id") or f"{Path(rel).stem}-{i}")
    return Document(id=doc_id, title=str(record.get("title") or doc_id), text=record["text"].strip(),
                    source=str(record.get("source") or rel))


# ---------------------------------------------------------------- chunking
def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (line breaks and sentence ends), markdown headings and blanks dropped."""
    out = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*> ").strip()
        if not line or line.startswith("#"):
            continue
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def chunk_documents(docs: list[Document], size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most ~`size` characters built from whole sentences; neighbours share ~`overlap` characters."""
    chunks: list[Chunk] = []
    for doc in docs:
        sentences = split_sentences(doc.text) or [doc.text]
        start = 0
        while start < len(sentences):
            end, length = start, 0
            while end < len(sentences) and (end == start or length + len(sentences[end]) <= size):
                length += len(sentences[end]) + 1
                end += 1
            chunk_sents = tuple(sentences[start:end])
            chunks.append(Chunk(chunk_id=len(chunks), doc_id=doc.id, title=doc.title, source=doc.source,
                                text=" ".join(chunk_sents), sentences=chunk_sents))
            if end >= len(sentences):
                break
            back, shared = end, 0  # step back over whole sentences to share ~overlap characters
            while back - 1 > start and shared + len(sentences[back - 1]) <= overlap:
                back -= 1
                shared += len(sentences[back]) + 1
            start = back
    return chunks


def fingerprint(docs: Iterable[Document], embedder_name: str, settings: Settings) -> str:
    """Changes when the documents, the embedder or the chunking change (and only then)."""
    h = hashlib.sha256()
    h.update(json.dumps([INDEX_FORMAT, embedder_name, settings.chunk_size, settings.chunk_overlap, TOKENIZER]).encode())
    for doc in docs:
        h.update(json.dumps(asdict(doc), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def documents_digest(docs: Iterable[Document]) -> str:
    """Changes when the documents change (and only then): tells the shipped knowledge base from another."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(json.dumps(asdict(doc), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


# `documents_digest` of artifacts/docs.json (a test keeps it current): a logged model's copy of the shipped knowledge
# base is recognised wherever the model runs (Spark workers, serving pods), with or without a checkout beside it
SHIPPED_DOCUMENTS_DIGEST = "59f86a90bd86b8b7"


def is_shipped_corpus(manifest: dict) -> bool:
    """Is the index built from the knowledge base shipped in artifacts/docs.json?"""
    return manifest.get("documents_digest") == SHIPPED_DOCUMENTS_DIGEST


def _best_sentence_cosine(source: Source, vector: np.ndarray) -> float:
    """The query's best cosine with a sentence of the source's document near its chunk (its chunk's cosine when the
    sentences carry no vectors): a short question matches one sentence better than a whole chunk."""
    vectors = source.doc_sentence_vectors
    if vectors is None or not len(vectors):
        return float(source.score)
    return float(np.max(np.asarray(vectors, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)))


# ---------------------------------------------------------------- the pipeline
@dataclass
class Retrieval:
    """What one question retrieved: the top-k sources (best first) and the numbers the abstention model reads
    (`abstention.FEATURES`)."""

    sources: list[Source]
    features: dict[str, float] = field(default_factory=dict)

    @property
    def best_score(self) -> float:
        return float(self.features.get("dense_best", self.sources[0].score if self.sources else -1.0))


class RAGPipeline:
    """Retrieval over a persisted FAISS index. Build once, then `retrieve` / `retrieve_many`."""

    def __init__(self, settings: Settings, embedder=None):
        self.settings = settings
        self._embedder = embedder
        self.index = None
        self.chunks: Sequence[Chunk] = []  # a ChunkStore once built or loaded
        self.lexical = None  # a LexicalIndex once built or loaded
        self.manifest: dict = {}
        self._doc_starts: np.ndarray | None = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedding_model, settings=self.settings)
        return self._embedder

    @property
    def embedder_name(self) -> str:
        return self.settings.embedding_model or EMBEDDED_MODEL

    # -- building and loading
    def load_or_build(self, docs_path: str | Path | None = None, *, progress: bool = False) -> "RAGPipeline":
        """Load the persisted index when its fingerprint matches the documents, else build and persist it."""
        path = docs_path or self.settings.docs_path
        fp = fingerprint(iter_documents(path), self.embedder_name, self.settings)  # streamed: nothing held
        if self._load(fp):
            return self
        docs = load_documents(path)
        log.info("building index for %d documents (fingerprint %s)", len(docs), fp)
        return self.build(docs, fp, progress=progress)

    def build(self, docs: list[Document], fp: str | None = None, *, progress: bool = False) -> "RAGPipeline":
        """Chunk, embed (with a progress bar when asked), index and persist atomically."""
        started = time.perf_counter()
        fp = fp or fingerprint(docs, self.embedder_name, self.settings)
        chunks = chunk_documents(docs, self.settings.chunk_size, self.settings.chunk_overlap)
        sentences = [s for c in chunks for s in c.sentences]
        contexts = [in_context(c.title, s) for c in chunks for s in c.sentences]
        vectors = self._encode_batches([c.text for c in chunks] + sentences + contexts, progress)
        n, m = len(chunks), len(sentences)
        chunk_vecs, sent_vecs, context_vecs = vectors[:n], vectors[n:n + m], vectors[n + m:]
        self.index, index_params = self._make_index(chunk_vecs)
        self.lexical = LexicalIndex.build(chunks)
        self.manifest = {"format": INDEX_FORMAT, "fingerprint": fp, "embedder": self.embedder_name,
                         "dim": int(chunk_vecs.shape[1]), "documents": len(docs), "chunks": len(chunks),
                         "sentences": len(sentences), "index_type": index_params["type"],
                         "index_params": index_params, "embedding_backend": getattr(self.embedder, "backend", ""),
                         "chunk_size": self.settings.chunk_size, "chunk_overlap": self.settings.chunk_overlap,
                         "lexical": {"type": "bm25s", "terms": len(self.lexical.idf)},
                         "documents_digest": documents_digest(docs),
                         "build_seconds": round(time.perf_counter() - started, 3)}
        self._persist(chunks, sent_vecs, context_vecs)
        return self

    def _encode_batches(self, texts: list[str], progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        batch = 128
        if progress and texts:  # say what happens before the first batch: loading (or exporting) the embedder
            tqdm.write(f"embedding {len(texts)} texts (chunks and their sentences) in "
                       f"{-(-len(texts) // batch)} batches; loading the embedder {self.embedder_name} "
                       "(a first run exports it to ONNX once, ~30 s) ...", file=sys.stderr)
            started = time.perf_counter()
            self.embedder.encode(texts[:1])
            tqdm.write(f"embedder ready ({getattr(self.embedder, 'backend', '') or 'torch'}) in "
                       f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        parts = [self.embedder.encode(texts[i:i + batch])
                 for i in tqdm(range(0, len(texts), batch), desc="embedding", unit="batch", disable=not progress,
                               miniters=1, mininterval=0)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _make_index(self, vectors: np.ndarray):
        """(index, params) of the type `settings.index_type` asks for (auto: by corpus size, see index.py)."""

        s = self.settings
        return build_index(vectors, s.index_type, hnsw_m=s.hnsw_m, hnsw_ef_search=s.hnsw_ef_search,
                           ivf_nprobe=s.ivf_nprobe)

    def _persist(self, chunks: list[Chunk], sentence_vectors: np.ndarray, context_vectors: np.ndarray) -> None:
        """Write the index directory (atomically), then map its chunk store."""
        import faiss

        target = Path(self.settings.index_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".index-", dir=target.parent))
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            write_store(tmp, chunks, sentence_vectors, context_vectors)
            self.lexical.save(tmp)
            (tmp / "manifest.json").write_text(json.dumps(self.manifest, indent=2))
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.chunks = ChunkStore(target)
        self._doc_starts = None
        self.lexical = LexicalIndex.load(target)  # the memory-mapped copy

    def _load(self, fp: str) -> bool:
        import faiss

        root = Path(self.settings.index_dir)
        try:
            manifest = json.loads((root / "manifest.json").read_text())
            if manifest.get("fingerprint") != fp:
                log.info("index in %s is stale (fingerprint %s != %s): rebuilding", root, manifest.get("fingerprint"), fp)
                return False
            kind = CLASS_TO_TYPE.get(manifest.get("index_type"), manifest.get("index_type"))
            if self.settings.index_type != "auto" and kind != choose_index_type(int(manifest.get("chunks", 0)),
                                                                                self.settings.index_type):
                log.info("index in %s is %s, %s asked (CHATBOT_INDEX_TYPE): rebuilding", root, kind,
                         self.settings.index_type)
                return False
            self.index = faiss.read_index(str(root / "index.faiss"))
            manifest["index_params"] = apply_search_params(
                self.index, manifest.get("index_params"), hnsw_ef_search=self.settings.hnsw_ef_search,
                ivf_nprobe=self.settings.ivf_nprobe)
            manifest["index_type"] = manifest["index_params"]["type"]
            self.chunks = ChunkStore(root)
            self.lexical = LexicalIndex.load(root)
            self._doc_starts = None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if root.exists():
                log.warning("index in %s is unreadable (%s): rebuilding", root, exc)
            return False
        self.manifest = manifest
        return True

    # -- retrieval
    def encode_queries(self, questions: list[str]) -> np.ndarray:
        """All questions embedded in one call."""
        return self.embedder.encode(list(questions))

    def search(self, vectors: np.ndarray, k: int | None = None) -> list[list[Source]]:
        """The k best documents for each query vector, each as its best-matching chunk: one FAISS search for the
        whole matrix (over-fetching chunks, so that a long document's neighbouring chunks do not crowd out others)."""
        if self.index is None:
            raise ConfigError("the index is not built; run `llmops-chatbot build-index` or call load_or_build()")
        k, total = k or self.settings.top_k, len(self.chunks)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        results: list[list[Source]] = [[] for _ in range(len(vectors))]
        pending, fetch = list(range(len(vectors))), min(k * 4, total)
        while pending and fetch:
            scores, ids = self.index.search(vectors[pending], fetch)
            short = []
            for row, row_s, row_i in zip(pending, scores, ids):
                results[row] = self._best_per_document(row_s, row_i, k)
                if len(results[row]) < k and fetch < total:
                    short.append(row)  # rare: one document filled the candidates; look deeper
            pending, fetch = short, min(fetch * 4, total)
        return results

    def _best_per_document(self, scores, ids, k: int) -> list[Source]:
        found, seen, docs = [], set(), self.chunks.chunk_docs  # document numbers: doc ids are unique
        for score, i in zip(scores, ids):
            if i < 0 or int(docs[i]) in seen:
                continue
            seen.add(int(docs[i]))
            found.append(self._source(int(i), float(score)))
            if len(found) == k:
                break
        return found

    def _source(self, i: int, score: float) -> Source:
        return Source(chunk=self.chunks[i], score=score, sentence_vectors=self.chunks.sentence_vectors(i))

    def retrieve(self, question: str, k: int | None = None) -> list[Source]:
        """The top-k documents for one question (each with its best chunk and its cosine score)."""
        return self.retrieve_many([question], k)[0]

    def retrieve_many(self, questions: list[str], k: int | None = None) -> list[list[Source]]:
        """Top-k sources for many questions (hybrid ranking): one embedding call, one dense search."""
        if any(not isinstance(q, str) or not q.strip() for q in questions):
            raise InvalidInput("every question must be a non-empty string")
        return [r.sources for r in self.retrieve_vectors(questions, self.encode_queries(questions), k)]

    def retrieve_vectors(self, questions: list[str], vectors: np.ndarray, k: int | None = None) -> list[Retrieval]:
        """Hybrid retrieval of questions already embedded (`vectors[i]` is `questions[i]`): the top-k documents
        by cosine + weighted BM25 (module doc), with the abstention features of each question."""
        k = k or self.settings.top_k
        if self.index is None:
            raise ConfigError("the index is not built; run `llmops-chatbot build-index` or call load_or_build()")
        n_docs, total = len(self.chunks.documents), len(self.chunks)
        want = min(max(DENSE_CANDIDATES, 4 * k), n_docs)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        scores, ids = self.index.search(vectors, min(want * 4, total)) if len(vectors) else ([], [])
        return [self._fuse(q, self._dense_docs(row_s, row_i, want), k, v)
                for q, row_s, row_i, v in zip(questions, scores, ids, vectors)]

    def _dense_docs(self, scores, ids, want: int) -> dict[int, tuple[int, float]]:
        """{document number: (its best chunk, cosine)} of one query's dense candidates, best first."""
        docs, found = self.chunks.chunk_docs, {}
        for score, i in zip(scores, ids):
            if i >= 0:
                found.setdefault(int(docs[i]), (int(i), float(score)))
                if len(found) == want:
                    break
        return found

    def _cosine(self, chunk: int, vector: np.ndarray, default: float) -> float:
        """The query's cosine with chunk `chunk` (its vector read back from the index), else `default`."""
        try:
            return float(np.dot(self.index.reconstruct(int(chunk)), np.asarray(vector, dtype=np.float32)))
        except (RuntimeError, AttributeError):  # an index without a direct map (ivf): the lower bound
            return default

    def _fuse(self, question: str, by_doc: dict[int, tuple[int, float]], k: int, vector: np.ndarray) -> Retrieval:
        weight = self.settings.lexical_weight if self.lexical is not None else 0.0
        cosine = {d: score for d, (_, score) in by_doc.items()}
        floor = min(cosine.values()) if cosine else -1.0
        query = self.lexical.query(question) if self.lexical is not None else LexicalQuery([], [])
        lexical, chunk_scores = {}, None
        if self.lexical is not None and query.terms:
            chunk_scores = self.lexical.chunk_scores(query)
            doc_scores = self.lexical.document_scores(chunk_scores)
            top = np.argsort(-doc_scores)[:LEXICAL_CANDIDATES]
            lexical = {int(d): float(doc_scores[d]) for d in top if doc_scores[d] > 0}
            for d in by_doc:
                if d not in lexical and d < len(doc_scores):
                    lexical[d] = float(doc_scores[d])
        best_lexical = max(lexical.values(), default=0.0)
        candidates = set(cosine) | ({d for d, v in lexical.items() if v > 0} if weight > 0 else set())

        def fused(d: int) -> float:
            lex = lexical.get(d, 0.0) / best_lexical if best_lexical > 0 else 0.0
            return cosine.get(d, floor) + weight * lex

        ranked = sorted(candidates, key=lambda d: (-fused(d), -cosine.get(d, floor), d))[:k]
        sources = []
        for d in ranked:
            if d in by_doc:
                source = self._source(*by_doc[d])
            else:  # found by BM25 only: its best BM25 chunk and that chunk's cosine
                lo, hi = self._doc_range(d)
                best = lo + int(np.argmax(chunk_scores[lo:hi]))
                source = self._source(best, self._cosine(best, vector, floor))
            sources.append(self._with_document(source, d))
        dense_ranked = sorted(cosine.values(), reverse=True)
        dense_first = max(cosine, key=cosine.get) if cosine else -1
        lexical_first = max(lexical, key=lexical.get) if best_lexical > 0 else -2
        features = {
            "dense_best": dense_ranked[0] if dense_ranked else -1.0,
            "lexical_coverage": self.lexical.coverage(query, best_lexical) if self.lexical is not None else 0.0,
            "dense_margin": dense_ranked[0] - dense_ranked[1] if len(dense_ranked) > 1 else 0.0,
            "agreement": float(dense_first == lexical_first),
            "log_length": math.log1p(len(query.raw)),
            "known_share": self.lexical.known_share(query) if self.lexical is not None else 0.0,
            "sentence_best": max((_best_sentence_cosine(s, vector) for s in sources[:3]), default=-1.0),
        }
        return Retrieval(sources, features)

    def _doc_range(self, doc_no: int) -> tuple[int, int]:
        """[first, last + 1) chunk numbers of document number `doc_no` (its chunks are contiguous)."""
        if self._doc_starts is None:
            docs = np.asarray(self.chunks.chunk_docs)
            self._doc_starts = np.r_[0, np.flatnonzero(np.diff(docs)) + 1, len(docs)].astype(np.int64)
        return int(self._doc_starts[doc_no]), int(self._doc_starts[doc_no + 1])

    def _with_document(self, source: Source, doc_no: int) -> Source:
        """`source` with the sentences (and vectors) of its document's chunks nearest its own, overlaps once."""
        lo, hi = self._doc_range(doc_no)
        own = source.chunk.chunk_id
        nearest = sorted(range(lo, hi), key=lambda i: (abs(i - own), i))[:DOC_CHUNKS]
        seen, sentences, vectors, contexts = set(), [], [], []
        for i in sorted(nearest):
            chunk = source.chunk if i == own else self.chunks[i]
            vecs = source.sentence_vectors if i == own else self.chunks.sentence_vectors(i)
            if vecs is None or len(vecs) != len(chunk.sentences):
                continue
            for text, vec, context in zip(chunk.sentences, vecs, self.chunks.context_vectors(i)):
                if text not in seen:
                    seen.add(text)
                    sentences.append(text)
                    vectors.append(vec)
                    contexts.append(context)
        if sentences:
            source.doc_sentences = tuple(sentences)
            source.doc_sentence_vectors = np.asarray(vectors, dtype=np.float32)
            source.doc_context_vectors = np.asarray(contexts, dtype=np.float32)
        return source

    def info(self) -> dict:
        """What is loaded: the manifest plus the index location."""
        return {**self.manifest, "index_dir": str(self.settings.index_dir)}
