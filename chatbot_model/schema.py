"""Plain data passed between components. No behaviour, no heavy imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Document:
    """One knowledge-base entry, as in `artifacts/docs.json`."""

    id: str
    title: str
    text: str
    source: str = ""


@dataclass(frozen=True)
class Chunk:
    """A piece of a document that is embedded and searched; `sentences` are kept for extractive answers."""

    chunk_id: int
    doc_id: str
    title: str
    source: str
    text: str
    sentences: tuple[str, ...] = ()


@dataclass
class Source:
    """A retrieved chunk with its similarity score (cosine, higher is closer)."""

    chunk: Chunk
    score: float
    # the chunk's sentence embeddings, computed at index time (same embedder as the query); may be None
    sentence_vectors: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.chunk.doc_id, "title": self.chunk.title, "source": self.chunk.source,
                "score": round(float(self.score), 4)}


@dataclass
class CompletionRequest:
    """What a provider gets: the system hint, the rendered prompt, and the raw parts for the local answerer."""

    system: str
    prompt: str
    question: str
    sources: list[Source]
    model: str
    question_vector: np.ndarray | None = None
    # earlier turns of the conversation, oldest first: [{"role": "user"|"assistant", "content": str}]
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Completion:
    """What a provider returns."""

    text: str
    provider: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    # the answer's sentences and their embeddings when the provider already has them (the local answerer
    # reuses index-time vectors): the output guardrail scores these instead of embedding the answer again
    segments: tuple[str, ...] = ()
    segment_vectors: np.ndarray | None = None
    # the output guardrail's verdict when it was given already (a streamed answer is checked as it goes out)
    check: Any = None


@dataclass
class ChatResult:
    """The answer to one question, with everything a user needs to trust or debug it."""

    question: str
    answer: str
    sources: list[dict[str, Any]]
    route: str
    provider: str
    model: str
    blocked: bool = False
    blocked_by: str | None = None  # "input" or "output"
    abstained: bool = False  # the knowledge base does not cover the question (retrieval below the floor)
    guardrail: dict[str, Any] = field(default_factory=dict)  # backend, flagged labels and scores
    fallback: str | None = None  # why the answering provider is not the route's provider
    route_reasons: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    trace_id: str | None = None
    model_version: str | None = None  # the registered version whose service answered (None: not registered)
    error: str | None = None
    # what retrieval searched for a question with history (a follow-up resolved); "" without history
    standalone_question: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
