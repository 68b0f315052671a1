"""The embedded default answerer: no key, no network. It answers with sentences of the retrieved documents and cites
each as [n], n being the 1-based index of its source in `request.sources` (the numbering of the prompt).

Which sentence leads: every sentence of the top documents (`Source.doc_sentences`, the whole document near the
retrieved chunk, not only the chunk) is scored against the question (`score_sentences`): its cosine with the
question (of the mean of its own vector and its context vector, the sentence embedded after its document's title,
`CONTEXT_SHARE`, when retrieval carries them), plus `OVERLAP_WEIGHT` times the share of the question's words it
contains, plus `HOW_WEIGHT` when the question asks how / which / where (or names a command, flag, setting, port or
endpoint) and the sentence holds one (`ACTIONABLE`: a command line, a `--flag`, a `SETTING_NAME`, a `snake_case` or
`CamelCase` name, an acronym, an `/endpoint`, a port, a code span), plus `SOURCE_WEIGHT` times its source's
retrieval score. The answer leads with the best-scoring sentence (leading only from source 1 measured no better on
dev, and a caller's numbering need not be by rank); a further sentence is added only when it scores within the
style's `relative_floor` of the lead and brings a fact the answer does not hold yet (a command, setting, name or
number not in it, or a word of the question no chosen sentence has, `_adds_fact`), from any cited source. Weights
chosen on the dev part of artifacts/eval/user_questions.jsonl (docs/answer-quality.md).

The hint (`request.system`) sets how much it says, by the first `ANSWER_STYLES` entry whose word it contains: the
default hint ("... concise ...") gives the lead and at most two more sentences, the grounded hint after negative
feedback ("... detailed, and knowledge-grounded") more, each cited. No sources (the service abstains when the
knowledge base does not cover the question), or none of their sentences about the question: `request.decline`
or `NOT_COVERED`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chatbot_model.contract import Completion, CompletionRequest, Source
from chatbot_model.retrieval.lexical import tokenize
from chatbot_model.providers.base import Provider
from chatbot_model.retrieval.embedder import get_embedder

MODEL_NAME = "extractive-v1"
KB_TOPIC = ("llmops-chatbot and MLflow: tracking and tracing, the model registry, serving and deploying the "
            "chatbot, retrieval, guardrails, providers and feedback")
NOT_COVERED = (f"Sorry, the knowledge base does not cover that question, so I have no answer from it. It is about "
               f"{KB_TOPIC}. Ask about one of those, or add documents on your topic to the knowledge base.")
GENERIC_NOT_COVERED = ("Sorry, the knowledge base does not cover that question, so I have no answer from it. Ask "
                       "about a topic of its documents, or add documents on your topic to the knowledge base.")
CONTEXT_SHARE = 0.5  # weight of the context vector in the vector a sentence is ranked by (0.3-1.0 measured)
SOURCE_WEIGHT = 0.1  # how much the retrieval score of a sentence's source adds to its similarity
FIRST_SOURCE_SHARE = 0.75  # the lead comes from source 1 (the best-ranked document) when its best sentence scores
# at least this share of the best sentence of any source
OVERLAP_WEIGHT = 0.5  # how much the share of the question's words found in a sentence adds
HOW_WEIGHT = 0.15  # added to a sentence holding a command, flag, setting, endpoint or code span, for a how-question
ASKS_HOW = re.compile(r"\b(how|which|where|what (command|flag|setting|port|endpoint|variable|env|url|value|option|"
                      r"format|body|header|file)s?|command|flag|setting|env|variable|port|endpoint|url|config|"
                      r"set|change|turn|use|enable|disable|switch|run|start|stop|install|deploy|serve|register|"
                      r"promote|roll|raise|make|get)\b", re.IGNORECASE)
ACTIONABLE = re.compile(
    r"`[^`]+`|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|(?<![\w-])--?[a-z][\w-]*|(?<![\w.])/[a-z][\w./-]*|:\d{2,5}\b|"
    r"\b(llmops-chatbot|mlflow|kubectl|curl|pip|make|uvicorn|docker|ss|lsof|kill|hf|export|printf)\s+[\w.-]|"
    r"\b\w+\.\w+\(|\b\w+=\S|\b\d+(\.\d+)?\b|\b[a-z][a-z0-9]*_[a-z0-9_]+\b|\b[A-Z][a-z0-9]+[A-Z]\w*\b|"
    r"\b[A-Z]{2,}[0-9]*\b")
_WORD = re.compile(r"[a-z0-9]+(?:[_.:/-][a-z0-9]+)*")
DUPLICATE_COS = 0.92  # sentences closer than this to a chosen one are skipped
MIN_SIMILARITY = 0.15  # below this cosine (all-MiniLM-L6-v2 scale) nothing retrieved is about the question
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def not_covered(shipped: bool = True, suggestions: tuple[str, ...] = ()) -> str:
    """The "not covered" reply: what the shipped knowledge base is about (`NOT_COVERED`), or generic wording for
    other documents; with the titles of the closest documents when the question came near being covered."""
    text = NOT_COVERED if shipped else GENERIC_NOT_COVERED
    if suggestions:
        text += " The closest documents are " + " and ".join(f'"{t}"' for t in suggestions) + "."
    return text


@dataclass(frozen=True)
class AnswerStyle:
    """How much an answer says: at most `max_sentences`; a further sentence must score at least `relative_floor`
    times the best one. `words`: hint words that choose this style."""

    max_sentences: int
    relative_floor: float
    words: tuple[str, ...] = ()
    new_facts_only: bool = True  # a sentence after the lead must bring a fact the answer does not hold yet


ANSWER_STYLES = {  # checked in order; a hint with none of the words gets "standard"
    "detailed": AnswerStyle(5, 0.35, ("detailed", "grounded", "factual", "thorough"), new_facts_only=False),
    "concise": AnswerStyle(3, 0.55, ("concise", "brief", "short")),
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
    vector: np.ndarray  # the sentence's own vector (duplicates, the output guardrail)
    context: np.ndarray | None = None  # its context vector, when retrieval carries them
    score: float = 0.0
    similarity: float = 0.0


class LocalProvider(Provider):
    name = "local"
    needs_key = False
    key_env_var = None

    def _complete_once(self, request: CompletionRequest) -> Completion:
        declined = request.decline or NOT_COVERED
        candidates, question = self._candidates(request)
        if not candidates:
            return Completion(text=declined, provider=self.name, model=MODEL_NAME)
        chosen = _select(candidates, question, request, ANSWER_STYLES[style_of(request.system)])
        if not chosen:
            return Completion(text=declined, provider=self.name, model=MODEL_NAME)
        return Completion(text=_compose(chosen), provider=self.name, model=MODEL_NAME,
                          segments=tuple(c.text for c in chosen), segment_vectors=np.stack([c.vector for c in chosen]))

    def _candidates(self, request: CompletionRequest) -> tuple[list[_Candidate], np.ndarray | None]:
        """Every sentence of every source with its vector; whatever is missing is embedded in one call."""
        pending: list[tuple[int, int, str]] = []  # (source_no, position, text) still needing a vector
        candidates: list[_Candidate] = []
        for no, source in enumerate(request.sources, start=1):
            sentences, vectors, contexts = _sentences_of(source)
            for pos, text in enumerate(sentences):
                if vectors is not None:
                    candidates.append(_Candidate(no, pos, text, vectors[pos],
                                                 None if contexts is None else contexts[pos]))
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


def _sentences_of(source: Source) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
    """(sentences, vectors, context vectors): the sentences of the source's document near its chunk
    (`doc_sentences`) with the vectors retrieval added; else the chunk's sentences and, when they line up with
    them, its precomputed sentence vectors (no context vectors)."""
    if source.doc_sentences and source.doc_sentence_vectors is not None \
            and len(source.doc_sentence_vectors) == len(source.doc_sentences):
        contexts = source.doc_context_vectors
        if contexts is not None and len(contexts) != len(source.doc_sentences):
            contexts = None
        return (list(source.doc_sentences), np.asarray(source.doc_sentence_vectors, dtype=np.float32),
                None if contexts is None else np.asarray(contexts, dtype=np.float32))
    sentences = [s.strip() for s in source.chunk.sentences if s and s.strip()]
    if sentences and len(sentences) == len(source.chunk.sentences):
        vectors = source.sentence_vectors
        if vectors is not None and np.ndim(vectors) == 2 and len(vectors) == len(sentences):
            return sentences, np.asarray(vectors, dtype=np.float32), None
        return sentences, None, None
    return sentences or split_sentences(source.chunk.text), None, None


@lru_cache(maxsize=65536)  # knowledge-base sentences come back question after question
def _words(text: str) -> frozenset[str]:
    return frozenset(tokenize(text))


@lru_cache(maxsize=65536)
def _facts(text: str) -> frozenset[str]:
    """The actionable spans of a sentence, normalised (what `_adds_fact` compares and the how-cue looks for)."""
    return frozenset(m.group(0).strip().lower() for m in ACTIONABLE.finditer(text))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def score_sentences(candidates: list[_Candidate], question: np.ndarray, request: CompletionRequest) -> None:
    """Set each candidate's score (module doc): cosine + word overlap + how-cue + source score."""
    asked = _words(request.question)
    how = bool(ASKS_HOW.search(request.question))
    matrix = _unit_rows(np.stack([np.asarray(c.vector, dtype=np.float32).reshape(-1) for c in candidates]))
    context = matrix.copy()  # a sentence without a context vector is ranked by its own
    for row, c in enumerate(candidates):
        if c.context is not None:
            context[row] = c.context
    similarity = _unit_rows((1 - CONTEXT_SHARE) * matrix + CONTEXT_SHARE * _unit_rows(context)) @ question
    for c, vector, sim in zip(candidates, matrix, similarity):
        c.vector, c.similarity = vector, float(sim)
        overlap = len(asked & _words(c.text)) / len(asked) if asked else 0.0
        cue = HOW_WEIGHT if how and _facts(c.text) else 0.0
        c.score = (c.similarity + OVERLAP_WEIGHT * overlap + cue
                   + SOURCE_WEIGHT * float(request.sources[c.source_no - 1].score))


def _select(candidates: list[_Candidate], question: np.ndarray, request: CompletionRequest,
            style: AnswerStyle) -> list[_Candidate]:
    """The lead (the best sentence about the question) and what adds a fact, as many as
    `style` allows; nothing when no sentence is about the question (cosine below `MIN_SIMILARITY`)."""
    score_sentences(candidates, question, request)
    candidates = [c for c in candidates if c.similarity >= MIN_SIMILARITY]
    if not candidates:
        return []
    ranked = sorted(candidates, key=lambda c: (-round(c.score, 6), c.source_no, c.position))
    lead = ranked[0]
    first = next((c for c in ranked if c.source_no == 1), None)  # the best-ranked document's best sentence
    if first is not None and first.score >= FIRST_SOURCE_SHARE * lead.score:
        lead = first
    chosen = [lead]
    for c in ranked:
        if len(chosen) == style.max_sentences or c.score < style.relative_floor * lead.score:
            break
        if c is lead or any(float(c.vector @ k.vector) >= DUPLICATE_COS or c.text.lower() == k.text.lower()
                            for k in chosen):
            continue
        if not style.new_facts_only or _adds_fact(c, chosen, request.question):
            chosen.append(c)
    return chosen


def _adds_fact(candidate: _Candidate, chosen: list[_Candidate], question: str) -> bool:
    """Does the sentence bring a command, setting, flag, endpoint or number the answer does not hold yet, or a
    word of the question that no chosen sentence has?"""
    if _facts(candidate.text) - set().union(*(_facts(k.text) for k in chosen)):
        return True
    return bool(_words(question) & _words(candidate.text) - set().union(*(_words(k.text) for k in chosen)))


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
