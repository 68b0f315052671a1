"""The embedded default answerer: no key, no network. It composes the answer from the retrieved sentences most
similar to the question and cites each as [n], n being the 1-based index of its source in `request.sources`
(the numbering of the prompt).

The answer leads with the sentence that answers (the best-scoring one), then the supporting ones. The hint
(`request.system`) sets how much it says, by the first `ANSWER_STYLES` entry whose word it contains: the default
hint ("... concise ...") gives the 1-2 best sentences, the grounded hint after negative feedback ("... detailed,
and knowledge-grounded") more supporting sentences, each cited. No sources (the service abstains when the
knowledge base does not cover the question), or none of their sentences about the question: `NOT_COVERED`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chatbot_model.contract import Completion, CompletionRequest, Source
from chatbot_model.providers.base import Provider
from chatbot_model.retrieval.embedder import get_embedder

MODEL_NAME = "extractive-v1"
KB_TOPIC = ("llmops-chatbot and MLflow: tracking and tracing, the model registry, serving and deploying the "
            "chatbot, retrieval, guardrails, providers and feedback")
NOT_COVERED = (f"Sorry, the knowledge base does not cover that question, so I have no answer from it. It is about "
               f"{KB_TOPIC}. Ask about one of those, or add documents on your topic to the knowledge base.")
SOURCE_WEIGHT = 0.1  # how much the retrieval score of a sentence's source adds to its similarity
DUPLICATE_COS = 0.92  # sentences closer than this to a chosen one are skipped
MIN_SIMILARITY = 0.15  # below this cosine (all-MiniLM-L6-v2 scale) nothing retrieved is about the question
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


@dataclass(frozen=True)
class AnswerStyle:
    """How much an answer says: at most `max_sentences`; a further sentence must score at least `relative_floor`
    times the best one. `words`: hint words that choose this style."""

    max_sentences: int
    relative_floor: float
    words: tuple[str, ...] = ()


ANSWER_STYLES = {  # checked in order; a hint with none of the words gets "standard"
    "detailed": AnswerStyle(5, 0.5, ("detailed", "grounded", "factual", "thorough")),
    "concise": AnswerStyle(2, 0.6, ("concise", "brief", "short")),
    "standard": AnswerStyle(3, 0.6),
}


def style_of(hint: str) -> str:
    """The name of the `ANSWER_STYLES` entry the hint asks for."""
    words = set(re.findall(r"[a-z]+", (hint or "").lower()))
    return next((name for name, style in ANSWER_STYLES.items() if words & set(style.words)), "standard")


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
            return Completion(text=NOT_COVERED, provider=self.name, model=MODEL_NAME)
        chosen = _select(candidates, question, request.sources, ANSWER_STYLES[style_of(request.system)])
        if not chosen:
            return Completion(text=NOT_COVERED, provider=self.name, model=MODEL_NAME)
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


def _select(candidates: list[_Candidate], question: np.ndarray, sources: list[Source],
            style: AnswerStyle) -> list[_Candidate]:
    """The best sentences, best first, as many as `style` allows; near-duplicates skipped, weakly relevant ones
    dropped (all of them when no sentence is really about the question)."""
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
        if len(chosen) == style.max_sentences:
            break
        if chosen and c.score < style.relative_floor * best:
            break
        if any(float(c.vector @ k.vector) >= DUPLICATE_COS or c.text.lower() == k.text.lower() for k in chosen):
            continue
        chosen.append(c)
    return chosen


def _compose(chosen: list[_Candidate]) -> str:
    """The best sentence first (it answers); the supporting ones after it in reading order: sources in the order
    of their best sentence, sentences in chunk order within a source."""
    lead, rest = chosen[0], chosen[1:]
    source_rank = {lead.source_no: 0}
    for c in rest:
        source_rank.setdefault(c.source_no, len(source_rank))
    ordered = [lead] + sorted(rest, key=lambda c: (source_rank[c.source_no], c.position))
    return " ".join(_cite(c.text, c.source_no) for c in ordered)


def _cite(sentence: str, number: int) -> str:
    """"Aliases are mutable." -> "Aliases are mutable [1].\""""
    sentence = sentence.strip()
    match = re.search(r"[.!?]+[\"')\]]*$", sentence)
    if match:
        return f"{sentence[:match.start()].rstrip()} [{number}]{sentence[match.start():]}"
    return f"{sentence} [{number}]."
