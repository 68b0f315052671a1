"""The chunk store of an index directory: chunks and their sentence vectors, memory-mapped, not loaded.

At 1M chunks a Python list of chunks and a float32 matrix of ~5M sentence vectors took ~10 GB; here a process
holds only the pages it reads (the chunks a question retrieves). Files, written once and then read-only:

| file | content |
|---|---|
| `sentences.bin` | every sentence, UTF-8, concatenated in chunk order |
| `sentence_bytes.npy` | int64 byte offset of each sentence in `sentences.bin` (n_sentences + 1) |
| `sentence_offsets.npy` | int64 index of each chunk's first sentence (n_chunks + 1) |
| `sentence_vectors.npy` | float16 (n_sentences, dim): the sentence embeddings (abstention, output guardrail) |
| `context_vectors.npy` | float16 (n_sentences, dim): each sentence embedded after its document's title
(`in_context`), which the local answerer ranks by |
| `chunk_docs.npy` | int32 document number of each chunk |
| `documents.json` | [[id, title, source], ...] by document number |

A chunk's text is its sentences joined by one space (as `rag.chunk_documents` builds it). float16 keeps ~3
significant digits of each (unit-length) vector's components: cosines move by < 1e-3, and the answers of the
golden set did not change (BENCHMARKS.md, "Memory at 1M chunks").
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from chatbot_model.contract import Chunk

STORE_FILES = ("sentences.bin", "sentence_bytes.npy", "sentence_offsets.npy", "sentence_vectors.npy",
               "context_vectors.npy", "chunk_docs.npy", "documents.json")
VECTOR_DTYPE = np.float16
VECTOR_FILES = ("sentence_vectors", "context_vectors")


def in_context(title: str, sentence: str) -> str:
    """The text embedded as a sentence's context vector: "Anthropic provider. ANTHROPIC_BASE_URL points ..." (a
    sentence alone often does not say what it is about)."""
    return f"{title}. {sentence}" if title else sentence


class ChunkStoreWriter:
    """Appends chunks (in `chunk_id` order, with their sentence and context vectors) to a new store in `root`;
    `close()` writes the index files. Blocks keep memory flat when a large corpus is written in parts."""

    def __init__(self, root: Path, dim: int):
        self.root, self.dim = Path(root), dim
        self._text = open(self.root / "sentences.bin", "wb")
        self._raw = {name: open(self.root / f"{name}.raw", "wb") for name in VECTOR_FILES}
        self._bytes, self._offsets, self._docs = [0], [0], []
        self._doc_no: dict[str, int] = {}
        self._documents: list[list[str]] = []

    def add(self, chunks: Iterable[Chunk], sentence_vectors: np.ndarray, context_vectors: np.ndarray) -> None:
        start = self._offsets[-1]
        for chunk in chunks:
            if chunk.chunk_id != len(self._docs):
                raise ValueError(f"chunk ids must be 0, 1, 2, ... in order; got {chunk.chunk_id} at {len(self._docs)}")
            no = self._doc_no.setdefault(chunk.doc_id, len(self._documents))
            if no == len(self._documents):
                self._documents.append([chunk.doc_id, chunk.title, chunk.source])
            self._docs.append(no)
            for sentence in chunk.sentences:
                self._bytes.append(self._bytes[-1] + self._text.write(sentence.encode("utf-8")))
            self._offsets.append(len(self._bytes) - 1)
        count = self._offsets[-1] - start
        for name, vectors in zip(VECTOR_FILES, (sentence_vectors, context_vectors)):
            if len(vectors) != count or (count and np.shape(vectors)[1:] != (self.dim,)):
                raise ValueError(f"{np.shape(vectors)} {name} for {count} sentences of dim {self.dim}")
            if count:
                self._raw[name].write(np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes())

    def close(self) -> None:
        self._text.close()
        for name, handle in self._raw.items():
            handle.close()
            raw = self.root / f"{name}.raw"
            with open(self.root / f"{name}.npy", "wb") as out, open(raw, "rb") as data:
                np.lib.format.write_array_header_1_0(out, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(VECTOR_DTYPE)), "fortran_order": False,
                    "shape": (self._offsets[-1], self.dim)})
                shutil.copyfileobj(data, out, 16 << 20)
            raw.unlink()
        np.save(self.root / "sentence_bytes.npy", np.asarray(self._bytes, dtype=np.int64))
        np.save(self.root / "sentence_offsets.npy", np.asarray(self._offsets, dtype=np.int64))
        np.save(self.root / "chunk_docs.npy", np.asarray(self._docs, dtype=np.int32))
        (self.root / "documents.json").write_text(json.dumps(self._documents, ensure_ascii=False), encoding="utf-8")


def write_store(root: Path, chunks: list[Chunk], sentence_vectors: np.ndarray, context_vectors: np.ndarray) -> None:
    """The store of `chunks` (all in memory) in `root`."""
    writer = ChunkStoreWriter(root, sentence_vectors.shape[1] if sentence_vectors.ndim == 2 else 0)
    writer.add(chunks, sentence_vectors, context_vectors)
    writer.close()


class ChunkStore(Sequence):
    """The chunks of an index directory, read on demand: `store[i]` is a `Chunk`, `store.sentence_vectors(i)` and
    `store.context_vectors(i)` its sentence and context vectors (float32), `store.chunk_docs[i]` its document
    number (for per-document dedup)."""

    def __init__(self, root: Path):
        root = Path(root)
        self.sentence_offsets = np.load(root / "sentence_offsets.npy", mmap_mode="r")
        self.sentence_bytes = np.load(root / "sentence_bytes.npy", mmap_mode="r")
        self.vectors = np.load(root / "sentence_vectors.npy", mmap_mode="r")
        self.contexts = np.load(root / "context_vectors.npy", mmap_mode="r")
        self.chunk_docs = np.load(root / "chunk_docs.npy", mmap_mode="r")
        size = int(self.sentence_bytes[-1])
        self.text = np.memmap(root / "sentences.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self.documents = json.loads((root / "documents.json").read_text(encoding="utf-8"))
        n = len(self.chunk_docs)
        if len(self.sentence_offsets) != n + 1 or len(self.vectors) != int(self.sentence_offsets[-1]) \
                or self.contexts.shape != self.vectors.shape \
                or len(self.sentence_bytes) != len(self.vectors) + 1 or len(self.text) != size:
            raise ValueError(f"the chunk store in {root} is inconsistent (a partial write?)")

    def __len__(self) -> int:
        return len(self.chunk_docs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"chunk {i} out of range (0..{len(self) - 1})")
        lo, hi = int(self.sentence_offsets[i]), int(self.sentence_offsets[i + 1])
        cuts = self.sentence_bytes[lo:hi + 1]
        raw = bytes(self.text[int(cuts[0]):int(cuts[-1])])
        base = int(cuts[0])
        sentences = tuple(raw[int(a) - base:int(b) - base].decode("utf-8") for a, b in zip(cuts[:-1], cuts[1:]))
        doc_id, title, source = self.documents[int(self.chunk_docs[i])]
        return Chunk(chunk_id=i, doc_id=doc_id, title=title, source=source, text=" ".join(sentences),
                     sentences=sentences)

    def sentence_vectors(self, i: int) -> np.ndarray:
        """Chunk i's sentence vectors, float32 (a copy: the mapped pages stay shared and read-only)."""
        return np.asarray(self.vectors[int(self.sentence_offsets[i]):int(self.sentence_offsets[i + 1])],
                          dtype=np.float32)

    def context_vectors(self, i: int) -> np.ndarray:
        """Chunk i's context vectors (`in_context`), float32."""
        return np.asarray(self.contexts[int(self.sentence_offsets[i]):int(self.sentence_offsets[i + 1])],
                          dtype=np.float32)
