"""The lexical side of retrieval: BM25 over the chunks (`bm25s`), with the title as a field, tolerant of typos.

Users type commands, flags and setting names ("CHATBOT_TOP_K", "--force", "/invocations") that a sentence
embedder blurs, and they misspell ("promte latest verison to prodution"). BM25 catches the first; a small
vocabulary correction catches the second: a query word that is not in the index vocabulary and is one edit
(insert, delete, substitute, swap) from a frequent indexed word is read as that word (`Vocabulary`, deletion
neighbourhoods as in SymSpell, over the `CORRECTION_TERMS` most frequent words only, so memory stays flat on a
large corpus).

Fields: a chunk is indexed as its document title `TITLE_REPEAT` times, then its text, so a title word counts
more than a body word. Tokens (`tokenize`): lower case words; an identifier such as `chatbot_top_k` or
`/invocations` is kept whole and also split into its parts; English stop words dropped; a trailing plural `s`
of a longer word dropped.

Persisted in the index directory, beside the dense index (`lexical/`: bm25s's CSC matrix, memory-mapped on
load, its vocabulary and parameters, and `doc_starts.npy`). Constants chosen on the dev part of
artifacts/eval/user_questions.jsonl (docs/answer-quality.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chatbot_model.contract import Chunk

K1, B = 1.2, 0.75
TITLE_REPEAT = 2
CORRECTION_TERMS = 20000  # the most frequent words a misspelling may be corrected to
MIN_CORRECTED_LEN = 4  # shorter words are too easily one edit from another word
DIRNAME = "lexical"
_TOKEN = re.compile(r"[a-z0-9]+(?:[_.:/-][a-z0-9]+)*")
_PARTS = re.compile(r"[_.:/-]")
STOP_WORDS = frozenset(
    "a an the of to in on for and or is are be do does did i my me it its it's this that these those how what "
    "which where when who why can could would should will with by from as at was were your you we our if not no "
    "yes about into get got there their them they then than so just like any some again please whats wat "
    "hows im".split())
TOKENIZER = "v2"  # part of the index fingerprint: a change of `tokenize` rebuilds the index


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of `text` (see the module doc)."""
    out = []
    for word in _TOKEN.findall(text.lower()):
        parts = [word, *(p for p in _PARTS.split(word) if p)] if _PARTS.search(word) else [word]
        for p in parts:
            if len(p) > 4 and p.endswith("s") and not p.endswith("ss"):
                p = p[:-1]
            if p not in STOP_WORDS:
                out.append(p)
    return out


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))} | {word}


class Vocabulary:
    """Spelling correction towards indexed words: one edit, the most frequent candidate wins."""

    def __init__(self, frequencies: dict[str, int], limit: int = CORRECTION_TERMS):
        self.known = frequencies
        self._by_delete: dict[str, list[str]] = {}
        common = sorted((w for w in frequencies if len(w) >= MIN_CORRECTED_LEN and not w.isdigit()),
                        key=lambda w: -frequencies[w])[:limit]
        for word in common:
            for d in _deletes(word):
                self._by_delete.setdefault(d, []).append(word)

    def correct(self, word: str) -> str:
        if word in self.known or len(word) < MIN_CORRECTED_LEN or word.isdigit():
            return word
        found = {c for d in _deletes(word) for c in self._by_delete.get(d, ())}
        return max(found, key=lambda c: (self.known[c], c)) if found else word


class LexicalIndex:
    """BM25 over the chunks of the dense index, chunk for chunk. `doc_starts[n]` is the first chunk of document
    number n (chunks of a document are contiguous, as `rag.chunk_documents` makes them)."""

    def __init__(self, bm25, doc_starts: np.ndarray):
        self.bm25, self.doc_starts = bm25, np.asarray(doc_starts, dtype=np.int64)
        indptr = np.asarray(bm25.scores["indptr"])
        df = np.diff(indptr)
        n = int(bm25.scores["num_docs"])
        self.idf = {term: math.log(1 + (n - int(df[i]) + 0.5) / (int(df[i]) + 0.5))
                    for term, i in bm25.vocab_dict.items() if term and i < len(df)}
        self.max_idf = math.log(1 + (n + 0.5) / 0.5)
        self.vocabulary = Vocabulary({term: int(df[i]) for term, i in bm25.vocab_dict.items() if term and i < len(df)})

    @classmethod
    def build(cls, chunks: Sequence[Chunk]) -> "LexicalIndex":
        import bm25s

        corpus = [tokenize(f"{(c.title + ' ') * TITLE_REPEAT}{c.text}") for c in chunks]
        bm25 = bm25s.BM25(k1=K1, b=B)
        bm25.index(corpus, show_progress=False)
        starts, previous = [], None
        for i, chunk in enumerate(chunks):
            if chunk.doc_id != previous:
                starts.append(i)
                previous = chunk.doc_id
        return cls(bm25, np.asarray(starts, dtype=np.int64))

    def save(self, root: Path) -> None:
        target = Path(root) / DIRNAME
        target.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(target), show_progress=False)
        np.save(target / "doc_starts.npy", self.doc_starts)

    @classmethod
    def load(cls, root: Path) -> "LexicalIndex":
        import bm25s

        target = Path(root) / DIRNAME
        if not (target / "doc_starts.npy").exists():
            raise OSError(f"no lexical index in {target}")
        bm25 = bm25s.BM25.load(str(target), mmap=True, show_progress=False, verbosity=0)
        return cls(bm25, np.load(target / "doc_starts.npy"))

    def query(self, question: str) -> "LexicalQuery":
        """The question's tokens, corrected towards the vocabulary."""
        raw = tokenize(question)
        return LexicalQuery(raw, [self.vocabulary.correct(t) for t in raw])

    def chunk_scores(self, query: "LexicalQuery") -> np.ndarray:
        """BM25 of every chunk (zeros when no query word is indexed)."""
        terms = [t for t in query.terms if t in self.idf]
        if not terms:
            return np.zeros(int(self.bm25.scores["num_docs"]), dtype=np.float32)
        return self.bm25.get_scores(terms)

    def document_scores(self, chunk_scores: np.ndarray) -> np.ndarray:
        """BM25 of each document (its best chunk), by document number."""
        return np.maximum.reduceat(chunk_scores, self.doc_starts) if len(chunk_scores) else chunk_scores

    def coverage(self, query: "LexicalQuery", best: float) -> float:
        """`best` (a BM25 score) as a share of what a chunk holding every query word could score: comparable
        between questions and corpora (an unknown word counts as the rarest)."""
        if not query.terms:
            return 0.0
        ceiling = sum(self.idf.get(t, self.max_idf) for t in query.terms) * (K1 + 1)
        return float(best) / ceiling if ceiling > 0 else 0.0

    def known_share(self, query: "LexicalQuery") -> float:
        """Share of the question's words found in the vocabulary (after correction)."""
        return sum(t in self.idf for t in query.terms) / len(query.terms) if query.terms else 0.0


class LexicalQuery:
    """A question's tokens as typed (`raw`) and as searched (`terms`: corrected towards the vocabulary)."""

    __slots__ = ("raw", "terms")

    def __init__(self, raw: list[str], terms: list[str]):
        self.raw, self.terms = raw, terms
