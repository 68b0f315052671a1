"""The one data contract: what a question must be, and the row every answer comes back as.

`validate_question` is the only place a question is checked; it runs at the edge (the HTTP route, the CLI) and
once in the service (`LLMService.answer_many`, which also checks each pyfunc row). `AnswerRow` is the only
definition of an answer row: the pyfunc's output columns and signature (`ChatResult.to_row` writes them), the
serving backends' rows and the HTTP API's `/chat` response are built from it.

`answer` is the first column: `mlflow.pyfunc.spark_udf(..., result_type="string")` returns the first output
column, so a string UDF yields the answers (the struct result type, the default, returns every column).

The plain data passed between components (documents, chunks, sources, completions, the service's result)
lives here too: no behaviour, no heavy imports.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatbot_model.errors import InvalidInput


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
    # every sentence of the chunk's document near it (overlaps once) and their vectors, for answers that quote
    # the best sentence of the document rather than of the chunk; () / None when retrieval did not add them
    doc_sentences: tuple[str, ...] = ()
    doc_sentence_vectors: np.ndarray | None = None
    doc_context_vectors: np.ndarray | None = None  # the same sentences embedded after the document's title

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
    # no sources (not covered): what the reply should say instead ("" = the provider's own wording)
    decline: str = ""


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

    def to_row(self) -> dict[str, Any]:
        """The result as a row of the contract (`AnswerRow`'s columns, in order; text fields "" when empty)."""
        values = asdict(self)
        return {column: "" if values[column] is None else values[column] for column in OUTPUT_COLUMNS}


# the limits of what a client sends, in one place (the HTTP schemas, the stores' columns and checks read them)
MAX_ID_CHARS = 64         # trace and session ids (= the String(64) columns of the stores)
MAX_COMMENT_CHARS = 2000  # a rating's comment
# an MLflow 3 trace id (`tr-` + the 128-bit OpenTelemetry trace id in hex, what tracing/writer.py generates too),
# or an MLflow 2 request id (32 hex): nothing else reaches a tracking-server URL or a log line
TRACE_ID_PATTERN = r"^(tr-)?[0-9a-f]{32}$"

# zero-width and other invisible format characters: a question made only of them is empty
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
# control characters other than tab and newline carry no meaning in a question: they become spaces
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def validate_question(value: Any, max_chars: int, where: str = "question", field: str = "question") -> str:
    """The cleaned question, or InvalidInput naming `where`, the problem and what is expected.

    Text only (not a number, not missing); valid Unicode (no lone surrogates); control characters become
    spaces, invisible characters are dropped, surrounding whitespace is stripped; then non-empty and at most
    `max_chars` characters."""
    if not isinstance(value, str):
        missing = value is None or type(value).__name__ == "NAType" or (isinstance(value, float) and math.isnan(value))
        got = "nothing" if missing else type(value).__name__
        raise InvalidInput(f"{where} must be text (a string), got {got}; send each question as a string",
                           field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where} is not valid Unicode text (it holds a lone surrogate)", field=field) from None
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", value)).strip()
    if not text:
        raise InvalidInput(f"{where} is empty; ask something in words", field=field)
    if len(text) > max_chars:
        raise InvalidInput(f"{where} is {len(text)} characters long; the limit is {max_chars} "
                           "(shorten it, or raise CHATBOT_MAX_QUESTION_CHARS)", field=field)
    return text


ROLES = ("user", "assistant")


def validate_history(value: Any, where: str = "history", *, max_question_chars: int = 4000) -> list[dict[str, str]]:
    """Earlier turns of a conversation as `[{"role": "user"|"assistant", "content": text}]`, oldest first, or
    InvalidInput naming the problem. None (or an empty list) is no history. Each content is cleaned like a
    question; a list over the budget is not an error: `trim_history` keeps its newest part."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if hasattr(value, "tolist"):  # numpy arrays from a DataFrame cell
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"{where} must be a list of {{role, content}} messages, got {type(value).__name__}",
                           field="history")
    out = []
    for n, message in enumerate(value):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise InvalidInput(f"{where}[{n}] must be an object with exactly `role` and `content`, got "
                               f"{message!r:.80}", field="history")
        if message["role"] not in ROLES:
            raise InvalidInput(f"{where}[{n}].role is {message['role']!r}; use one of {', '.join(ROLES)} "
                               "(the system prompt is the model's hint)", field="history")
        content = validate_question(message.get("content"), max_question_chars, f"{where}[{n}].content", "history")
        out.append({"role": message["role"], "content": content})
    return out


def trim_history(history: list[dict[str, str]], max_messages: int, max_chars: int) -> list[dict[str, str]]:
    """The newest messages that fit both budgets (oldest dropped first), starting with a user message."""
    kept, used = [], 0
    for message in reversed(history[-max_messages:] if max_messages else []):
        used += len(message["content"])
        if used > max_chars:
            break
        kept.append(message)
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def check_history(value: Any, settings, where: str = "history") -> list[dict[str, str]]:
    """A history sent by a caller (HTTP, pyfunc rows): `validate_history`, then within the budget
    (CHATBOT_HISTORY_MAX_MESSAGES messages, CHATBOT_HISTORY_MAX_CHARS characters), else InvalidInput saying
    both limits and the fix. (Histories read from the conversation store are trimmed to the budget instead.)"""
    history = validate_history(value, where, max_question_chars=max(settings.max_question_chars,
                                                                     settings.history_max_chars))
    chars = sum(len(m["content"]) for m in history)
    if len(history) > settings.history_max_messages or chars > settings.history_max_chars:
        raise InvalidInput(f"{where} has {len(history)} messages and {chars} characters; the budget is "
                           f"{settings.history_max_messages} messages and {settings.history_max_chars} characters "
                           "(CHATBOT_HISTORY_MAX_MESSAGES, CHATBOT_HISTORY_MAX_CHARS): send only the newest turns, "
                           "or send a session_id and let the server keep the conversation", field="history")
    return history


class SourceRow(BaseModel):
    """A knowledge-base document an answer drew on, with its retrieval score (cosine, higher is closer)."""

    id: str
    title: str
    source: str = ""
    score: float


class AnswerRow(BaseModel):
    """One answered question. Text fields are "" (never None) when empty, so every consumer reads one shape."""

    model_config = ConfigDict(extra="ignore")

    answer: str = Field("", description="the answer, or the guardrail's safe reply when blocked")
    question: str = Field("", description="the question as answered (cleaned)")
    standalone_question: str = Field("", description="what retrieval searched for a question with history: the "
                                     "follow-up resolved with the conversation; empty without history")
    blocked: bool = Field(False, description="true when the guardrail refused the question or the answer")
    abstained: bool = Field(False, description="true when the knowledge base does not cover the question: the "
                            "answer says so and lists no sources")
    route: str = Field("", description="route the router chose (gpt, claude) or `blocked`")
    provider: str = Field("", description="provider that actually answered")
    model: str = Field("", description="model that actually answered")
    fallback: str = Field("", description="why the answering provider is not the route's; empty when it is")
    sources: list[SourceRow] = Field(default_factory=list, description="documents the answer cites, best first")
    latency_ms: float = Field(0.0, description="time the model spent on the question (its batch)")
    trace_id: str = Field("", description="MLflow trace id (empty when tracing is off); send it to /feedback")
    model_version: str = Field("", description="registered model version that answered (ratings are attributed "
                               "to it); empty when the model is not a registered version")
    error: str = Field("", description="why this row was not answered (bad input); empty when it was")

    @field_validator("answer", "question", "standalone_question", "route", "provider", "model", "fallback",
                     "trace_id", "model_version", "error", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return str(value)

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> list:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return []
        return [dict(s) for s in (value.tolist() if hasattr(value, "tolist") else value)]

    @field_validator("blocked", "abstained", "latency_ms", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        return 0.0 if isinstance(value, float) and math.isnan(value) else value

    def to_record(self) -> dict[str, Any]:
        """Plain Python values, in column order."""
        return self.model_dump()


OUTPUT_COLUMNS: tuple[str, ...] = tuple(AnswerRow.model_fields)
