"""Follow-up resolution before retrieval: the offline rule, the condense-question prompt through a remote
provider (the fake server, real SDKs) and its fallback, and what the answer row and the trace show."""

import json

import mlflow
import pytest

from chatbot_model.pipeline import followup
from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.pipeline.service import LLMService
from tests.fake_llm_server import OPENAI_PATH, Reply
from tests.helpers import provider_keys

TRACED = "How is each chatbot request traced?"
FOLLOW = "Can I turn that off?"


def test_the_offline_rule_flags_follow_ups_and_joins_the_last_answered_question():
    assert followup.is_followup("Can I turn that off?")           # refers back
    assert followup.is_followup("And the other route?")           # continues
    assert followup.is_followup("Postgres too?")                  # short
    assert not followup.is_followup("Which environment variable selects the guardrail backend for toxic input?")
    assert followup.offline_candidates("What is FAISS?", []).method == "none"
    long_standalone = "Which environment variable selects the guardrail backend for toxic input?"
    answered = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y [1]."}]
    assert followup.offline_candidates(long_standalone, answered).candidates == (long_standalone,)
    history = [{"role": "user", "content": TRACED}, {"role": "assistant", "content": "One trace per request."}]
    r = followup.offline_candidates(FOLLOW, history)
    assert r.method == "offline" and r.candidates == (FOLLOW, f"{TRACED} {FOLLOW}") and r.refers
    # a follow-up of a follow-up: the last answered question as typed, never an earlier resolution
    three = history + [{"role": "user", "content": FOLLOW}, {"role": "assistant", "content": "Yes."}]
    assert followup.anchor_of(three) == FOLLOW


def test_a_declined_or_blocked_turn_is_never_carried_forward():
    from chatbot_model.guardrail.core import SAFE_REPLY
    from chatbot_model.providers.local import NOT_COVERED, not_covered

    declined = [{"role": "user", "content": "Who won the 1998 football world cup?"},
                {"role": "assistant", "content": NOT_COVERED}]
    r = followup.offline_candidates("what is the capital of france", declined)
    assert r.method == "standalone" and r.candidates == ("what is the capital of france",)
    history = [{"role": "user", "content": "How do I promote a model to Production?"},
               {"role": "assistant", "content": "Run llmops-chatbot promote_model [1]."},
               {"role": "user", "content": "I hate them all."}, {"role": "assistant", "content": SAFE_REPLY},
               {"role": "user", "content": "tell me a joke"},
               {"role": "assistant", "content": not_covered(False, ("Promoting", "Gate"))}]
    assert followup.anchor_of(history) == "How do I promote a model to Production?"
    assert followup.is_declined("The knowledge base does not cover football; it is about MLflow.")
    assert not followup.is_declined("Set CHATBOT_TRACING=false [1].")


def test_choose_keeps_the_joined_retrieval_unless_the_question_stands_on_its_own():
    from chatbot_model.retrieval.rag import Retrieval

    def retrieval(best, known=1.0):
        return Retrieval([], {"dense_best": best, "known_share": known})

    def covered(r):
        return r.best_score >= 0.3

    refers = followup.Resolution("Can I turn that off?", ("a", "b"), "offline", refers=True)
    short = followup.Resolution("use my own docs", ("a", "b"), "offline", refers=False)
    assert followup.choose(refers, [retrieval(0.2), retrieval(0.5)], covered) == 1
    assert followup.choose(refers, [retrieval(followup.SELF_CONTAINED_SCORE), retrieval(0.7)], covered) == 0
    assert followup.choose(short, [retrieval(0.35), retrieval(0.6)], covered) == 0  # covered alone: new topic
    assert followup.choose(short, [retrieval(0.1, known=0.5), retrieval(0.6)], covered) == 0  # unseen words
    assert followup.choose(short, [retrieval(0.1), retrieval(0.6)], covered) == 1  # elliptical: "and the port?"
    assert followup.choose(short, [retrieval(0.4)], covered) == 0


def test_clean_condensed_takes_the_question_and_refuses_prose():
    assert followup.clean_condensed('Standalone question: "How do I disable tracing?"', 100) == \
        "How do I disable tracing?"
    assert followup.clean_condensed("  \n ", 100) is None
    assert followup.clean_condensed("x" * 101, 100) is None
    assert followup.clean_condensed("a\nb\nc\nd", 100) is None


@pytest.fixture
def shipped_service(index_dir):
    def make(**overrides):
        settings = load_settings(index_dir=index_dir, guardrail_backend="embedded", feedback_db_url="",
                                 provider_max_retries=0, **overrides)
        configure_mlflow(settings)
        return LLMService.from_settings(settings)
    return make


def test_a_follow_up_retrieves_with_its_conversation_and_not_without(shipped_service):
    service = shipped_service()
    first = service.answer(TRACED)
    assert first.standalone_question == ""
    history = [{"role": "user", "content": first.question}, {"role": "assistant", "content": first.answer}]
    follow, alone = service.answer_many([FOLLOW, FOLLOW], histories=[history, None])
    assert follow.standalone_question == f"{TRACED} {FOLLOW}"
    assert not follow.abstained and "chatbot-tracing" in [s["id"] for s in follow.sources]
    assert follow.question == FOLLOW  # the user's words are what was answered
    assert alone.standalone_question == ""  # asked alone, nothing is resolved


def test_the_trace_records_both_questions(shipped_service):
    service = shipped_service()
    history = [{"role": "user", "content": TRACED}, {"role": "assistant", "content": "One trace per request."}]
    result = service.answer(FOLLOW, history=history)
    trace = mlflow.get_trace(result.trace_id)
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.inputs == {"question": FOLLOW, "standalone_question": f"{TRACED} {FOLLOW}"}
    spans = {s.name: s for s in trace.data.spans}
    assert spans["condense"].outputs == {"standalone_question": f"{TRACED} {FOLLOW}"}
    assert spans["retrieval"].inputs == {"question": f"{TRACED} {FOLLOW}"}
    plain = mlflow.get_trace(service.answer(TRACED).trace_id)
    assert "condense" not in {s.name for s in plain.data.spans}


def keys(fake_llm, **extra):
    return {**provider_keys(fake_llm), **extra}


def test_with_a_remote_provider_the_condense_prompt_rewrites_the_follow_up(shipped_service, fake_llm):
    service = shipped_service(**keys(fake_llm))
    fake_llm.queue("How do I switch off MLflow tracing of chatbot requests?", "Set CHATBOT_TRACING=false [1].")
    history = [{"role": "user", "content": TRACED}, {"role": "assistant", "content": "One MLflow trace each."}]
    result = service.answer(FOLLOW, history=history)
    assert result.standalone_question == "How do I switch off MLflow tracing of chatbot requests?"
    assert result.answer == "Set CHATBOT_TRACING=false [1]." and not result.abstained
    assert "chatbot-tracing" in [s["id"] for s in result.sources]
    condense, answer = fake_llm.requests
    assert condense.path == OPENAI_PATH
    prompt = condense.body["messages"][-1]["content"]
    assert "rewrite the message to be a standalone question" in prompt
    assert f"User: {TRACED}" in prompt and f"<Follow Up Message>\n{FOLLOW}" in prompt
    # the answering call gets the user's own question after the history, not the rewrite
    body = answer.body
    texts = [m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]) for m in body["messages"]]
    assert any(TRACED == t for t in texts) and FOLLOW in texts[-1]
    assert "switch off MLflow tracing" not in texts[-1]


@pytest.mark.parametrize("failure", [Reply.error(500), Reply.hang(), "   "], ids=["500", "timeout", "empty"])
def test_a_failed_condense_falls_back_to_the_offline_rule(shipped_service, fake_llm, failure):
    service = shipped_service(**keys(fake_llm, condense_timeout_s=1.0))
    fake_llm.queue(failure, "Set CHATBOT_TRACING=false [1].")
    history = [{"role": "user", "content": TRACED}, {"role": "assistant", "content": "One MLflow trace each."}]
    result = service.answer(FOLLOW, history=history)
    assert result.standalone_question == f"{TRACED} {FOLLOW}"
    assert "chatbot-tracing" in [s["id"] for s in result.sources] and not result.abstained


def test_without_history_no_condense_call_is_made(shipped_service, fake_llm):
    service = shipped_service(**keys(fake_llm))
    fake_llm.queue("An answer [1].")
    result = service.answer(TRACED)
    assert result.standalone_question == "" and len(fake_llm.requests) == 1
