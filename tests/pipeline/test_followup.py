"""Follow-up resolution before retrieval: the offline rule, the condense-question prompt through a remote
provider (the fake server, real SDKs) and its fallback, and what the answer row and the trace show."""

import json

import mlflow
import pytest

from chatbot_model.pipeline import followup
from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.pipeline.service import LLMService
from tests.fake_llm_server import OPENAI_PATH, Reply

TRACED = "How is each chatbot request traced?"
FOLLOW = "Can I turn that off?"


def test_the_offline_rule_flags_follow_ups_and_joins_the_thread_anchor():
    assert followup.is_followup("Can I turn that off?")           # refers back
    assert followup.is_followup("And the other route?")           # continues
    assert followup.is_followup("Postgres too?")                  # short
    assert not followup.is_followup("Which environment variable selects the guardrail backend for toxic input?")
    assert followup.offline_candidates("What is FAISS?", []).method == "none"
    long_standalone = "Which environment variable selects the guardrail backend for toxic input?"
    assert followup.offline_candidates(long_standalone, [{"role": "user", "content": "x"}]).candidates == (
        long_standalone,)
    history = [{"role": "user", "content": TRACED}, {"role": "assistant", "content": "One trace per request."}]
    r = followup.offline_candidates(FOLLOW, history)
    assert r.method == "offline" and r.candidates == (FOLLOW, f"{TRACED} {FOLLOW}")
    # a follow-up of a follow-up: the thread's anchor leads
    three = history + [{"role": "user", "content": FOLLOW}, {"role": "assistant", "content": "Yes."}]
    assert followup.anchor_of(three) == f"{TRACED} {FOLLOW}"


def test_choose_keeps_the_joined_retrieval_unless_the_follow_up_stands_on_its_own():
    assert followup.choose([0.2, 0.5]) == (1, 0.5)
    assert followup.choose([0.3, 0.25]) == (1, 0.3)        # the floor sees the better of the two
    assert followup.choose([followup.SELF_CONTAINED_SCORE, 0.7]) == (0, 0.7)
    assert followup.choose([0.4]) == (0, 0.4)


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
    assert alone.abstained and alone.sources == [] and alone.standalone_question == ""


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
    return dict(openai_api_key="sk-test", openai_base_url=fake_llm.openai_base_url,
                anthropic_api_key="sk-ant-test", anthropic_base_url=fake_llm.anthropic_base_url, **extra)


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
