"""LLMService end to end with real components: embedded guardrail, real embedder and FAISS, the local answerer,
and the real OpenAI/Anthropic SDKs against the fake HTTP server."""

import re

import mlflow
import pytest

from chatbot_model.errors import ConfigError, InvalidInput
from chatbot_model.guardrail.core import SAFE_REPLY
from chatbot_model.providers.local import split_sentences
from tests.fake_llm_server import ANTHROPIC_PATH, OPENAI_PATH, Reply
from tests.helpers import TOXIC_QUESTION


def test_without_keys_the_local_provider_answers_and_says_why(make_service):
    result = make_service().answer("How do I load a model by alias?")
    assert result.route == "gpt" and result.provider == "local" and result.model == "extractive-v1"
    assert "OPENAI_API_KEY is not set" in result.fallback and "ANTHROPIC_API_KEY is not set" in result.fallback
    assert result.sources[0]["id"] == "aliases"
    assert "[1]" in result.answer and "models:/name@alias" in result.answer
    assert not result.blocked and result.latency_ms > 0


def test_every_step_is_a_span_of_one_trace(make_service):
    result = make_service().answer("How do I load a model by alias?")
    trace = mlflow.get_trace(result.trace_id)
    names = {span.name: span for span in trace.data.spans}
    assert set(names) == {"chat", "embed", "guardrail_input", "retrieval", "routing", "llm", "guardrail_output"}
    assert names["guardrail_input"].span_type == "GUARDRAIL" and names["retrieval"].span_type == "RETRIEVER"
    assert names["chat"].outputs["route"] == "gpt" and names["chat"].attributes["provider"] == "local"
    assert names["retrieval"].outputs[0]["id"] == "aliases"
    assert mlflow.search_runs(search_all_experiments=True).empty, "no MLflow run per request"


def test_the_route_provider_answers_when_it_has_a_key(make_service, with_keys, fake_llm):
    fake_llm.queue("Aliases are named references to model versions [1].")
    result = make_service(**with_keys).answer("What is an alias?")
    assert (result.route, result.provider, result.model, result.fallback) == ("gpt", "openai", "gpt-4o-mini", None)
    assert result.answer == "Aliases are named references to model versions [1]."
    sent = fake_llm.requests_to(OPENAI_PATH)[0].body
    assert sent["messages"][0]["content"] == "Answer in a helpful, concise, and knowledge-sharing way"
    assert "[1] Model aliases" in sent["messages"][1]["content"]


def test_long_reasoning_question_routes_to_claude(make_service, with_keys, fake_llm):
    question = ("Why would I pick HNSW over an exact index, and how do I compare recall and speed trade-offs "
                "step by step for a large corpus? What should I measure first?")
    result = make_service(**with_keys).answer(question)
    assert (result.route, result.provider, result.model) == ("claude", "anthropic", "claude-3-5-sonnet-latest")
    assert fake_llm.requests_to(ANTHROPIC_PATH)[0].body["system"].startswith("Answer in a helpful")


def test_a_failing_route_falls_back_to_the_other_route_then_local(make_service, with_keys, fake_llm):
    service = make_service(**with_keys)
    fake_llm.queue(500)
    result = service.answer("What is an alias?")
    assert (result.route, result.provider) == ("gpt", "anthropic")
    assert result.fallback.startswith("openai:") and "500" in result.fallback
    fake_llm.queue(500, 503)
    result = service.answer("What is an alias?")
    assert result.provider == "local" and "openai" in result.fallback and "anthropic" in result.fallback


def test_toxic_question_is_blocked_without_any_llm_call(make_service, with_keys, fake_llm):
    result = make_service(**with_keys).answer(TOXIC_QUESTION)
    assert result.blocked and result.blocked_by == "input" and result.answer == SAFE_REPLY
    assert result.guardrail["flagged"] and result.guardrail["backend"] == "embedded"
    assert result.sources == [] and fake_llm.requests == []
    spans = {s.name for s in mlflow.get_trace(result.trace_id).data.spans}
    assert spans == {"chat", "embed", "guardrail_input"}


def test_toxic_answer_is_replaced_by_the_safe_reply(make_service, with_keys, fake_llm):
    fake_llm.queue(Reply.answer(TOXIC_QUESTION))
    result = make_service(**with_keys).answer("What is an alias?")
    assert result.blocked and result.blocked_by == "output" and result.answer == SAFE_REPLY
    assert result.provider == "openai" and result.guardrail["flagged"]


def test_batch_is_one_embedding_one_search_and_two_guardrail_calls(make_service, monkeypatch):
    service = make_service()
    questions = ["How do I load a model by alias?", TOXIC_QUESTION, "What does HNSW trade for speed?"]
    single = [service.answer(q) for q in questions]
    calls = {"encode": 0, "check_many": 0, "search": 0}
    for obj, name in ((service.rag, "encode_queries"), (service.guardrail, "check_many"),
                      (service.rag, "retrieve_vectors")):  # one FAISS search (and one BM25 pass per question)
        original = getattr(obj, name)
        key = {"encode_queries": "encode", "retrieve_vectors": "search"}.get(name, name)

        def spy(*a, _original=original, _key=key, **kw):
            calls[_key] += 1
            return _original(*a, **kw)

        monkeypatch.setattr(obj, name, spy)
    batch = service.answer_many(questions)
    assert calls == {"encode": 1, "check_many": 2, "search": 1}
    assert [(r.answer, r.blocked, r.route) for r in batch] == [(r.answer, r.blocked, r.route) for r in single]
    assert len({r.trace_id for r in batch}) == 3


def test_remote_calls_of_a_batch_run_concurrently(make_service, monkeypatch):
    """The 8 provider calls of a batch are in flight together: each waits on one Barrier(8), which serialised
    calls would break (they would then fall back to the local answerer)."""
    from chatbot_model.providers import PROVIDERS
    from tests.fake_providers import rendezvous

    provider = rendezvous(8)
    for name in ("openai", "anthropic"):
        monkeypatch.setitem(PROVIDERS, name, provider)
    results = make_service().answer_many([f"What is alias number {i}?" for i in range(8)])
    assert [(r.provider, r.fallback) for r in results] == [("rendezvous", None)] * 8
    assert [r.answer for r in results] == [f"rendezvous answer to: What is alias number {i}?" for i in range(8)]
    assert not provider.barrier.broken


@pytest.mark.parametrize("bad, message", [
    ("", "question is empty"),
    ("   \n", "question is empty"),
    (42, r"question must be text \(a string\), got int"),
    (None, r"question must be text \(a string\), got nothing"),
    ("\u200b\u200b \ufeff", "question is empty"),  # invisible characters only
    ("\x00\x07", "question is empty"),  # control characters only
    ("x" * 4001, "4001 characters long; the limit is 4000"),
])
def test_bad_questions_get_clear_errors(make_service, bad, message):
    with pytest.raises(InvalidInput, match=message):
        make_service().answer(bad)


def test_bad_row_in_a_batch_is_named(make_service):
    with pytest.raises(InvalidInput, match="question #1 is empty"):
        make_service().answer_many(["fine", ""])


def test_negative_feedback_changes_hint_and_bias_used_by_the_next_answer(make_service, with_keys, fake_llm):
    service = make_service(**with_keys)
    change = service.feedback(positive=False)
    assert change["before"]["bias_towards_35"] == pytest.approx(0.3)
    assert change["after"] == {"hint": "Be more factual, detailed, and knowledge-grounded", "bias_towards_35": pytest.approx(0.4)}
    service.answer("What is an alias?")
    assert fake_llm.requests[-1].body["messages"][0]["content"] == "Be more factual, detailed, and knowledge-grounded"


# ---------------------------------------------------------------- not covered (abstention)
OFF_TOPIC = ["Who won the 1998 football world cup?", "What is the capital of France?", "asdfghjkl"]


def test_off_topic_questions_get_the_not_covered_reply_without_sources(make_service):
    from chatbot_model.providers.local import GENERIC_NOT_COVERED

    service = make_service()
    results = service.answer_many(OFF_TOPIC + ["How do I load a model by alias?"])
    for result in results[:-1]:
        assert result.abstained and not result.blocked, result.question
        # these are not the shipped documents: generic wording, nothing about MLflow
        assert result.answer.startswith(GENERIC_NOT_COVERED) and "MLflow" not in result.answer
        assert result.sources == []
    on_topic = results[-1]
    assert not on_topic.abstained and on_topic.sources[0]["id"] == "aliases" and "[1]" in on_topic.answer
    assert on_topic.sources[0]["score"] >= service.settings.abstain_below
    chat = {s.name: s for s in mlflow.get_trace(results[0].trace_id).data.spans}["chat"]
    assert chat.outputs["abstained"] is True and chat.attributes["abstained"] == "True"


def test_the_abstention_floor_is_a_setting(make_service):
    """Without an abstention model: -1 never abstains (sentences cited for an off-topic question); 1 always does."""
    never = make_service(abstain_below=-1, abstain_model={}).answer(OFF_TOPIC[0])
    assert not never.abstained and never.sources
    always = make_service(abstain_below=1, abstain_model={}).answer("How do I load a model by alias?")
    assert always.abstained and always.sources == []


def test_the_abstention_model_is_a_setting(make_service):
    """A model whose threshold nothing reaches declines everything; one that everything reaches answers all."""
    model = {"features": ["dense_best"], "weights": [1.0], "bias": 0.0}
    assert make_service(abstain_model={**model, "threshold": 0.999}).answer("How do I load a model by alias?").abstained
    assert not make_service(abstain_model={**model, "threshold": 0.0}).answer(OFF_TOPIC[0]).abstained
    with pytest.raises(ConfigError, match="CHATBOT_ABSTAIN_MODEL"):
        make_service(abstain_model={"weights": [1.0]})


def test_remote_providers_are_told_the_knowledge_base_has_nothing(make_service, with_keys, fake_llm):
    fake_llm.queue("The knowledge base does not cover football; it is about MLflow and this chatbot.")
    result = make_service(**with_keys).answer(OFF_TOPIC[0])
    assert result.abstained and result.sources == [] and result.provider == "openai"
    assert result.answer.startswith("The knowledge base does not cover football")
    prompt = fake_llm.requests_to(OPENAI_PATH)[0].body["messages"][1]["content"]
    assert "nothing relevant" in prompt and "does not cover this question" in prompt and "Sources:" not in prompt
    assert "Do not answer it from general knowledge" in prompt and OFF_TOPIC[0] in prompt


def test_a_thumbs_down_changes_the_next_local_answer_offline(make_service):
    """No keys: the local answerer reads the hint. The default hint gives the best sentences; after a
    thumbs-down (through the feedback store) the grounded hint adds supporting sentences, each cited."""
    service = make_service()
    question = "How do aliases let me redeploy a model version?"
    before = service.answer(question)
    change = service.feedback(positive=False, result=before)
    assert change["after"]["hint"] == "Be more factual, detailed, and knowledge-grounded"
    after = service.answer(question)
    assert after.provider == "local" and not after.abstained
    assert after.answer != before.answer
    cites = re.findall(r"\[(\d+)\][.!?]", after.answer)
    assert len(cites) > len(re.findall(r"\[(\d+)\][.!?]", before.answer))
    assert len(cites) == len(split_sentences(after.answer))  # every sentence cited
    assert after.answer.split(" [")[0] == before.answer.split(" [")[0]  # the same answering sentence leads
