"""Follow-up resolution: turn a question that leans on the conversation into what retrieval should search for.

"And how do I undo that?" retrieves nothing useful on its own. Before retrieval, a question with history
becomes a *standalone question*; retrieval and the abstention floor see it, while the provider still gets the
user's own words with the history as messages.

Two ways, one interface (`Resolution`):

- **Offline rule** (no LLM; `offline_candidates`, `choose`): a question is a follow-up when it refers back (a
  pronoun or demonstrative such as "it", "that", "them", "there", "one"), opens like a continuation ("and ...",
  "what about ...", "then ...") or is short (at most `SHORT_WORDS` words). A follow-up is searched twice: alone,
  and joined after the conversation's previous user question (when that one was itself a follow-up, the
  question before it leads too: the anchor of the thread). The joined retrieval is kept unless the follow-up
  alone already retrieves confidently (best score >= `SELF_CONTAINED_SCORE`: it names its own topic, as in a
  change of subject). The abstention floor sees the better of the two best scores: a follow-up of a covered
  conversation is covered when either query finds its documents. A question that is not a follow-up is
  searched as it is. Keeping simply the more confident retrieval (the first idea) measured worse: the joined
  text scores high on the previous question's document even when the follow-up asks about another one.
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

log = logging.getLogger(__name__)

SHORT_WORDS = 6  # a question of at most this many words is treated as a follow-up when it has history
SELF_CONTAINED_SCORE = 0.45  # a follow-up retrieving this well on its own keeps its own retrieval
REFERS_BACK = re.compile(
    r"\b(it|its|it's|itself|that|this|these|those|them|they|their|theirs|there|then|one|ones|same|other|"
    r"former|latter|afterwards|instead|above|previous)\b", re.IGNORECASE)
CONTINUES = re.compile(r"^\W*(and|but|so|also|then|or|what about|how about|same for|ok|okay)\b", re.IGNORECASE)
WORD = re.compile(r"[\w'-]+")

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
    were made (`none`: no history, `standalone`: not a follow-up, `offline`: the rule, `condensed`: the
    provider rewrote it)."""

    question: str
    candidates: tuple[str, ...]
    method: str


def is_followup(question: str) -> bool:
    """The offline rule's test: refers back, continues the previous message, or is short."""
    words = WORD.findall(question)
    return len(words) <= SHORT_WORDS or bool(REFERS_BACK.search(question)) or bool(CONTINUES.match(question))


def _user_questions(history: list[dict]) -> list[str]:
    return [m["content"] for m in history if m.get("role") == "user"]


def anchor_of(history: list[dict]) -> str | None:
    """The previous user question, led by the one before when it was itself a follow-up."""
    users = _user_questions(history)
    if not users:
        return None
    if len(users) >= 2 and is_followup(users[-1]):
        return f"{users[-2]} {users[-1]}"
    return users[-1]


def offline_candidates(question: str, history: list[dict]) -> Resolution:
    """The offline rule: the question alone, plus the anchor joined with it when it is a follow-up."""
    if not history:
        return Resolution(question, (question,), "none")
    anchor = anchor_of(history)
    if anchor is None or not is_followup(question):
        return Resolution(question, (question,), "standalone")
    return Resolution(question, (question, f"{anchor} {question}"), "offline")


def choose(best_scores: list[float]) -> tuple[int, float]:
    """(index of the candidate retrieval to keep, the score the abstention floor sees) from the best score of
    each candidate's retrieval (`offline_candidates` order: the question alone, then the joined query)."""
    if len(best_scores) < 2:
        return 0, best_scores[0] if best_scores else -1.0
    alone, joined = best_scores[0], best_scores[1]
    return (0 if alone >= SELF_CONTAINED_SCORE else 1), max(alone, joined)


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
            "condense_prompt", "is_followup", "offline_candidates"]
