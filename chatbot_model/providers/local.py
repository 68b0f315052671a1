"""The embedded default answerer: no key, no network. It composes the answer from the retrieved sentences most
similar to the question and cites each as [n], n being the 1-based index of its source in `request.sources`
(the numbering of the prompt)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chatbot_model.providers.base import Provider
from chatbot_model.schema import Completion, CompletionRequest, Source

MODEL_NAME = "extractive-v1"
NO_ANSWER = ("I could not find anything about that in the knowledge base. "
             "Try rephrasing the question or adding documents on this topic.")
MAX_SENTENCES = 3
SOURCE_WEIGHT = 0.1  # how much the retrieval score of a sentence's source adds to its similarity
DUPLICATE_COS = 0.92  # sentences closer than this to a chosen one are skipped
RELATIVE_FLOOR = 0.6  # a further sentence must score at least this fraction of the best one
MIN_SIMILARITY = 0.15  # below this cosine (all-MiniLM-L6-v2 scale) nothing retrieved is about the question
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A simple sentence split, used when a chunk carries no precomputed sentences."""
    return [s.strip() for s in _SPLIT.split(" ".join(text.split())) if s.strip()]


@dataclass
class _Candidate:
    source_no: int  # 1-based, the citation number
    position: int  # index of the sentence in its chunk
    text: str
    vector: np.ndarray
    score: float = 0.0


class LocalProvider(Provider):
    name = "local"
    needs_key = False
    key_env_var = None

    def _complete_once(self, request: CompletionRequest) -> Completion:
        candidates, question = self._candidates(request)
        if not candidates:
            return Completion(text=NO_ANSWER, provider=self.name, model=MODEL_NAME)
        chosen = _select(candidates, question, request.sources)
        if not chosen:
            return Completion(text=NO_ANSWER, provider=self.name, model=MODEL_NAME)
        return Completion(text=_compose(chosen), provider=self.name, model=MODEL_NAME,
                          segments=tuple(c.text for c in chosen), segment_vectors=np.stack([c.vector for c in chosen]))

    def _candidates(self, request: CompletionRequest) -> tuple[list[_Candidate], np.ndarray | None]:
        """Every sentence of every source with its vector; whatever is missing is embedded in one call."""
        pending: list[tuple[int, int, str]] = []  # (source_no, position, text) still needing a vector
        candidates: list[_Candidate] = []
        for no, source in enumerate(request.sources, start=1):
            sentences, vectors = _sentences_of(source)
            for pos, text in enumerate(sentences):
                if vectors is not None:
                    candidates.append(_Candidate(no, pos, text, vectors[pos]))
                else:
                    pending.append((no, pos, text))
        question = request.question_vector
        if not pending and not candidates:
            return [], None
        texts = [text for _, _, text in pending]
        if question is None:
            texts.insert(0, request.question)
        if texts:
            from chatbot_model.embeddings import get_embedder

            encoded = get_embedder(self.settings.embedding_model, settings=self.settings).encode(texts)
            if question is None:
                question, encoded = encoded[0], encoded[1:]
            candidates += [_Candidate(no, pos, text, vec) for (no, pos, text), vec in zip(pending, encoded)]
        candidates.sort(key=lambda c: (c.source_no, c.position))
        return candidates, _unit(np.asarray(question, dtype=np.float32).reshape(-1))


def _sentences_of(source: Source) -> tuple[list[str], np.ndarray | None]:
    """The chunk's sentences and, when they line up with them, its precomputed sentence vectors."""
    sentences = [s.strip() for s in source.chunk.sentences if s and s.strip()]
    if sentences and len(sentences) == len(source.chunk.sentences):
        vectors = source.sentence_vectors
        if vectors is not None and np.ndim(vectors) == 2 and len(vectors) == len(sentences):
            return sentences, np.asarray(vectors, dtype=np.float32)
        return sentences, None
    return sentences or split_sentences(source.chunk.text), None


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _select(candidates: list[_Candidate], question: np.ndarray, sources: list[Source]) -> list[_Candidate]:
    """Up to MAX_SENTENCES best sentences, near-duplicates skipped, weakly relevant ones dropped (all of them
    when no sentence is really about the question)."""
    for c in candidates:
        c.vector = _unit(np.asarray(c.vector, dtype=np.float32).reshape(-1))
        c.score = float(c.vector @ question)
    candidates = [c for c in candidates if c.score >= MIN_SIMILARITY]
    if not candidates:
        return []
    for c in candidates:
        c.score += SOURCE_WEIGHT * float(sources[c.source_no - 1].score)
    ranked = sorted(candidates, key=lambda c: (-round(c.score, 6), c.source_no, c.position))
    best = ranked[0].score
    chosen: list[_Candidate] = []
    for c in ranked:
        if len(chosen) == MAX_SENTENCES:
            break
        if chosen and c.score < RELATIVE_FLOOR * best:
            break
        if any(float(c.vector @ k.vector) >= DUPLICATE_COS or c.text.lower() == k.text.lower() for k in chosen):
            continue
        chosen.append(c)
    return chosen


def _compose(chosen: list[_Candidate]) -> str:
    """Readable order: sources in the order of their best sentence, sentences in chunk order within a source."""
    source_rank = {}
    for c in chosen:
        source_rank.setdefault(c.source_no, len(source_rank))
    ordered = sorted(chosen, key=lambda c: (source_rank[c.source_no], c.position))
    return " ".join(_cite(c.text, c.source_no) for c in ordered)


def _cite(sentence: str, number: int) -> str:
    """"Aliases are mutable." -> "Aliases are mutable [1].\""""
    sentence = sentence.strip()
    match = re.search(r"[.!?]+[\"')\]]*$", sentence)
    if match:
        return f"{sentence[:match.start()].rstrip()} [{number}]{sentence[match.start():]}"
    return f"{sentence} [{number}]."
