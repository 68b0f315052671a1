"""The openai-moderation guardrail backend, driven by the real openai SDK against the fake server's /v1/moderations:
the category mapping, the fallback to the embedded classifier (no key, errors, timeouts) and the circuit breaker."""

from __future__ import annotations

import pytest

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError
from chatbot_model.guardrail.core import CLASSIFIERS, MODERATION_LABELS, Classifier, OpenAIModeration, build_guardrail
from tests.fake_llm_server import MODERATION_PATH, Reply
from tests.fake_llm_server import fake_llm_server as _fake_llm_server

server = pytest.fixture(_fake_llm_server)


class Fallback(Classifier):
    """A real classifier that records its calls and scores every text 0.2 (or 0.9 when it says "bad")."""

    name = "embedded"
    labels = tuple(MODERATION_LABELS)

    def __init__(self):
        self.calls = []

    def scores(self, texts, vectors=None):
        self.calls.append(list(texts))
        return [{label: 0.9 if "bad" in t else 0.2 for label in self.labels} for t in texts]


class Clock:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def wall(self):
        return 1.7e9 + self.now


def moderation(server, fallback=None, clock=None, **overrides):
    settings = load_settings(guardrail_backend="openai-moderation", openai_api_key="sk-test",
                             openai_base_url=server.openai_base_url, breaker_failures=2, breaker_cooldown_s=30,
                             guardrail_moderation_timeout_s=overrides.pop("timeout", 2.0), **overrides)
    return settings, OpenAIModeration(settings, fallback=fallback or Fallback(), clock=clock)


def test_backend_is_in_the_registry_and_the_settings():
    assert "openai-moderation" in CLASSIFIERS
    assert load_settings(guardrail_backend="openai-moderation").guardrail_backend == "openai-moderation"
    with pytest.raises(ConfigError, match="openai-moderation"):
        load_settings(guardrail_backend="openai-moderaton")


def test_categories_map_to_the_policy_labels(server):
    settings, classifier = moderation(server)
    from chatbot_model.guardrail.core import Guardrail

    guardrail = Guardrail(classifier, settings.guardrail_threshold)
    texts = ["[hate] one", "[harassment/threatening] two", "[harassment] three", "[sexual/minors] four",
             "[violence] a history of the war", "[sexual] adult", "a plain question"]
    results = guardrail.check_many(texts)
    assert [sorted(r.flagged) for r in results] == [["hate"], ["threat"], ["insult"], ["sexual_minors"], [], [], []]
    assert {r.backend for r in results} == {"openai-moderation"}
    (request,) = server.requests_to(MODERATION_PATH)
    assert request.body["input"] == texts and request.body["model"] == settings.guardrail_moderation_model
    assert request.headers["authorization"] == "Bearer sk-test"
    assert classifier.fallback.calls == []


@pytest.mark.parametrize("reply", [Reply.error(500), Reply.error(429), Reply.junk(), Reply.reset()])
def test_a_failed_call_falls_back_to_the_embedded_classifier(server, reply):
    settings, classifier = moderation(server)
    server.queue(reply)
    from chatbot_model.guardrail.core import Guardrail

    (result,) = Guardrail(classifier).check_many(["a bad sentence"])
    assert result.backend == "embedded" and not result.safe
    assert classifier.fallback.calls == [["a bad sentence"]]


def test_a_slow_endpoint_is_cut_at_the_deadline(server):
    settings, classifier = moderation(server, timeout=0.3)
    server.queue(Reply.hang())
    scores, backend = classifier.scored(["hello"])
    assert backend == "embedded" and scores == [{label: 0.2 for label in MODERATION_LABELS}]


def test_the_circuit_opens_after_failures_and_skips_the_endpoint(server):
    clock = Clock()
    settings, classifier = moderation(server, clock=clock)
    server.queue(Reply.error(503), Reply.error(503))
    for _ in range(2):
        assert classifier.scored(["x"])[1] == "embedded"
    assert classifier.breaker.state("sk-test") == "open"
    classifier.scored(["x"])
    assert len(server.requests_to(MODERATION_PATH)) == 2  # skipped while open
    clock.now += 31  # half-open: one probe; success closes the circuit
    assert classifier.scored(["[hate] x"]) == ([{"hate": 0.97, "threat": 0.01, "insult": 0.01,
                                                  "sexual_minors": 0.01}], "openai-moderation")
    assert classifier.breaker.state("sk-test") == "closed"


def test_auth_failure_disables_until_the_key_changes(server):
    settings, classifier = moderation(server)
    server.queue(Reply.error(401))
    assert classifier.scored(["x"])[1] == "embedded"
    assert classifier.breaker.state("sk-test") == "unavailable"
    classifier.scored(["x"])
    assert len(server.requests_to(MODERATION_PATH)) == 1


def test_without_a_key_the_embedded_classifier_decides(server):
    settings = load_settings(guardrail_backend="openai-moderation", openai_base_url=server.openai_base_url)
    classifier = OpenAIModeration(settings, fallback=Fallback())
    assert classifier.scored(["a bad one"]) == ([{label: 0.9 for label in MODERATION_LABELS}], "embedded")
    assert server.requests_to(MODERATION_PATH) == []


def test_build_guardrail_uses_the_real_embedded_fallback(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    guardrail = build_guardrail(load_settings(guardrail_backend="openai-moderation"))
    assert guardrail.backend == "openai-moderation"
    assert guardrail.check("[insult] you are [harassment]").flagged == {"insult": 0.97}
    server.queue(Reply.error(500))
    result = guardrail.check("How do I register a model in MLflow?")
    assert result.backend == "embedded" and result.safe
