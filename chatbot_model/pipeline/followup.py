"""Follow-up resolution: turn a question that leans on the conversation into what retrieval should search for.

"And how do I undo that?" retrieves nothing useful on its own. Before retrieval, a question with history
becomes a *standalone question*; retrieval and the abstention floor see it, while the provider still gets the
user's own words with the history as messages.

Two ways, one interface (`Resolution`):

- **Offline rule** (no LLM; `offline_candidates`, `choose`): the question is resolved against the *last
  answered turn* only: the latest user message whose reply was an answer (`is_declined`: not the "not covered"
  reply, not the guardrail's safe reply, not empty). An abstained or blocked turn is never carried forward, and
  an earlier resolution is never chained (the anchor is that user message as typed, not what it was resolved
  to). No answered turn: the question is searched alone. A question *may* continue the conversation when it
  refers back (a pronoun or demonstrative: "it", "that", "there", "one"), opens like a continuation ("and ...",
  "what about ...") or is short (at most `SHORT_WORDS` words); otherwise it is searched alone. A possible
  continuation is searched alone and joined after the anchor, and `choose` decides which retrieval to keep:
  - it refers back: the joined one, unless the question alone already retrieves confidently (best cosine >=
    `SELF_CONTAINED_SCORE`: it names its own topic);
  - it is only short: alone when alone is covered (the abstention decision) or when it has words the knowledge
    base has never seen ("what's the capital of australia" after an answer about Ollama is a new, off-topic
    question, not an elliptical one); else the joined one ("and the port?").
  The abstention decision then looks at the kept retrieval only.
- **Condense prompt** (`condense`) with a remote provider: the history and the follow-up go to the model with
  an instruction modelled on LlamaIndex's `condense_question` chat mode ("Given a conversation and a follow up
  message, rewrite the message to be a standalone question"). Any failure, an empty or over-long reply, or
  no reply within CHATBOT_CONDENSE_TIMEOUT_S falls back to the offline rule.

Measured on artifacts/eval/conversations.jsonl (see docs/conversations.md and `evaluate`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from chatbot_model.contract import CompletionRequest
from chatbot_model.guardrail.core import SAFE_REPLY
from chatbot_model.providers.local import NOT_COVERED

log = logging.getLogger(__name__)

SHORT_WORDS = 6  # a question of at most this many words may continue the conversation
SELF_CONTAINED_SCORE = 0.45  # a question that refers back but retrieves this well alone keeps its own retrieval
REFERS_BACK = re.compile(
    r"\b(it|its|it's|itself|that|this|these|those|them|they|their|theirs|there|then|one|ones|same|other|"
    r"former|latter|afterwards|instead|above|previous)\b", re.IGNORECASE)
CONTINUES = re.compile(r"^\W*(and|but|so|also|then|or|what about|how about|same for|ok|okay)\b", re.IGNORECASE)
WORD = re.compile(r"[\w'-]+")
DECLINED = re.compile(r"\b(does not|doesn't|do not|don't) cover\b|\bnot covered\b|\bcan't help with that request\b|"
                      r"^\(no answer\)$", re.IGNORECASE)

CONDENSE_SYSTEM = ("You rewrite follow-up messages of a conversation about a documentation knowledge base into "
                   "standalone questions for a search engine. Reply with the question only.")
CONDENSE_TEMPLATE = ("Given a conversation (between User and Assistant) and a follow up message from User, "
                     "rewrite the message to be a standalone question that captures all relevant context from "
                     "the conversation. If it is already standalone, repeat it unchanged.\n\n"
                     "<Chat History>\n{history}\n\n<Follow Up Message>\n{question}\n\n<Standalone question>")
CONDENSE_HISTORY_CHARS = 600  # of each earlier message shown to the condenser (answers can be long)


@dataclass(frozen=True)
class Resolution:
    """What retrieval searches for one question: candidate queries (the question itself first) and how they
    were made (`none`: no history, `standalone`: not a follow-up or nothing answered to follow, `offline`: the
    rule, `condensed`: the provider rewrote it); `refers`: the question refers back or continues."""

    question: str
    candidates: tuple[str, ...]
    method: str
    refers: bool = False


def refers_back(question: str) -> bool:
    """A pronoun or demonstrative, or an opening like a continuation."""
    return bool(REFERS_BACK.search(question)) or bool(CONTINUES.match(question))


def is_followup(question: str) -> bool:
    """May continue the conversation: refers back, continues the previous message, or is short."""
    return len(WORD.findall(question)) <= SHORT_WORDS or refers_back(question)


def is_declined(reply: str) -> bool:
    """The reply of an abstained or blocked turn (or none): such a turn is no anchor for a follow-up."""
    text = " ".join((reply or "").split())
    return not text or text in (NOT_COVERED, SAFE_REPLY) or bool(DECLINED.search(text[:300]))


def anchor_of(history: list[dict]) -> str | None:
    """The last answered user message (as typed), or None when no turn of the history was answered."""
    for n in range(len(history) - 1, 0, -1):
        reply, asked = history[n], history[n - 1]
        if reply.get("role") == "assistant" and asked.get("role") == "user" and not is_declined(reply["content"]):
            return asked["content"]
    return None


def offline_candidates(question: str, history: list[dict]) -> Resolution:
    """The offline rule: the question alone, plus the anchor joined with it when it may continue."""
    if not history:
        return Resolution(question, (question,), "none")
    anchor = anchor_of(history)
    if anchor is None or not is_followup(question):
        return Resolution(question, (question,), "standalone")
    return Resolution(question, (question, f"{anchor} {question}"), "offline", refers_back(question))


def choose(resolution: Resolution, retrievals: list, covered) -> int:
    """Index of the candidate retrieval to keep (`offline_candidates` order: the question alone, then the
    joined query). `retrievals[i]` is a `rag.Retrieval`; `covered(retrieval)` the abstention decision."""
    if len(retrievals) < 2:
        return 0
    alone = retrievals[0]
    if resolution.refers:
        return 0 if alone.best_score >= SELF_CONTAINED_SCORE else 1
    if covered(alone) or alone.features.get("known_share", 1.0) < 1.0:
        return 0
    return 1


def condense_prompt(question: str, history: list[dict]) -> str:
    lines = []
    for m in history:
        text = " ".join(m["content"].split())
        if len(text) > CONDENSE_HISTORY_CHARS:
            text = text[:CONDENSE_HISTORY_CHARS] + " ..."
        lines.append(f"{m['role'].capitalize()}: {text}")
    return CONDENSE_TEMPLATE.format(history="\n".join(lines), question=question)


def clean_condensed(text: str, max_chars: int) -> str | None:
    """The model's standalone question, or None when the reply is unusable (empty, several lines of prose,
    too long)."""
    if not isinstance(text, str):
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = re.sub(r"^(standalone question|question)\s*:\s*", "", lines[-1] if len(lines) > 1 else lines[0],
                  flags=re.IGNORECASE).strip().strip('"').strip()
    if not line or len(line) > max_chars or len(lines) > 3:
        return None
    return line


def condense(question: str, history: list[dict], provider, model: str, deadline, max_chars: int) -> str | None:
    """The provider's standalone rewrite of `question`, or None on any failure (the caller falls back to the
    offline rule). Never raises."""
    request = CompletionRequest(system=CONDENSE_SYSTEM, prompt=condense_prompt(question, history),
                                question=question, sources=[], model=model)
    try:
        completion = provider.complete(request, deadline=deadline)
    except Exception as exc:  # noqa: BLE001 - a failed rewrite only costs the offline rule
        log.info("condense-question via %s failed (%s): offline rule", getattr(provider, "name", "?"),
                 getattr(exc, "reason", type(exc).__name__))
        return None
    return clean_condensed(completion.text, max_chars)


__all__ = ["CONDENSE_SYSTEM", "CONDENSE_TEMPLATE", "Resolution", "anchor_of", "choose", "clean_condensed", "condense",
           "condense_prompt", "is_declined", "is_followup", "offline_candidates", "refers_back"]
