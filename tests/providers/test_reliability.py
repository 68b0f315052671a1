"""Provider faults injected on the fake HTTP server and driven through the real SDKs: hang, trickle, 429 with
Retry-After, a 500 storm, 401, connection reset. Bounds are proven by counts (upstream calls, threads, open
connections) and an injected clock, never by measuring elapsed time."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import pytest
from pydantic import SecretStr

from chatbot_model.providers.breaker import BreakerCollector, CircuitBreaker, breaker_totals
from chatbot_model.config import load_settings
from chatbot_model.providers.deadline import Deadline
from chatbot_model.errors import ConfigError, ProviderError
from chatbot_model.providers import PROVIDERS, build_provider
from chatbot_model.providers.base import parse_retry_after
from chatbot_model.providers.openai import OpenAIProvider
from chatbot_model.pipeline.router import ROUTES, Route
from chatbot_model.contract import CompletionRequest
from chatbot_model.pipeline.service import LLMService
from tests.fake_llm_server import ANTHROPIC_PATH, OPENAI_PATH, Reply
from tests.helpers import SERVICE_CORPUS, provider_keys, started_since, threads_now, wait_until

KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
CORPUS = SERVICE_CORPUS[:2]  # aliases and FAISS
QUESTION = "How do I load a model by alias?"  # routed to `gpt` (openai)


class FakeClock:
    """Monotonic time that moves only when told to (or when the code under test sleeps)."""

    def __init__(self) -> None:
        self.now, self.sleeps, self._wall0 = 1000.0, [], time.time()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wall(self) -> float:
        return self._wall0 + self.now - 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))


@pytest.fixture
def clock():
    return FakeClock()


def settings_for(server, **extra):
    values = dict(**provider_keys(server), provider_timeout_s=5.0, provider_max_retries=0)
    values.update(extra)
    return load_settings(**values)


def provider_for(server, name="openai", *, clock=None, **extra):
    provider = build_provider(name, settings_for(server, **extra), clock=clock)
    provider.retry_wait_min, provider.retry_wait_max = 0.01, 0.05
    return provider


def ask(provider, **deadline):
    request = CompletionRequest(system="Answer.", prompt="Question: what is an alias?", question="what is an alias?",
                                sources=[], model="gpt-4o-mini")
    return provider.complete(request, **deadline)


def failure(call) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    return info.value


# deadlines --------------------------------------------------------------------------------------------------

def test_hung_calls_are_cancelled_and_free_their_threads_and_connections(fake_llm):
    provider = provider_for(fake_llm, breaker_failures=100)  # this test is about cancellation, not the breaker
    ask(provider)  # warm up: the SDK client and the provider loop exist from here on
    normal = provider.settings
    provider.settings = normal.model_copy(update={"provider_timeout_s": 0.5})
    wait_until(lambda: fake_llm.open_connections == 0, "warm-up connection")
    before = threads_now()

    fake_llm.queue(*[Reply.hang() for _ in range(30)])
    with ThreadPoolExecutor(30) as pool:
        errors = list(pool.map(lambda _: failure(lambda: ask(provider)), range(30)))
    assert {e.reason for e in errors} == {"timeout"} and all("timed out" in str(e) for e in errors)
    # no abandoned call was retried (a call cancelled before it connected, on a busy machine, never arrives)
    assert len(fake_llm.requests) <= 31

    wait_until(lambda: fake_llm.open_connections == 0, "open connections (the server saw every client hang up)")
    wait_until(lambda: not started_since(before), "the threads the calls started to end")
    fake_llm.reset()  # the hangs no cancelled call took
    provider.settings = normal
    assert ask(provider).text.startswith("fake-openai")  # the provider still works afterwards


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_trickling_reply_is_cut_by_the_total_limit_not_per_read(fake_llm, name):
    # one byte every 0.3 s: each read succeeds well within the 1 s (per-read) timeout, the whole reply would
    # take minutes; only a limit on the whole call stops it
    fake_llm.queue(Reply.trickle(0.3))
    err = failure(lambda: ask(provider_for(fake_llm, name, provider_timeout_s=1.0)))
    assert err.reason == "timeout" and err.retryable
    assert len(fake_llm.requests) == 1
    wait_until(lambda: fake_llm.open_connections == 0, "the trickling connection")


def test_the_budget_is_shared_by_retries_and_fallbacks_and_local_still_answers(make_service, fake_llm, clock):
    service = make_service(fake_llm, clock, provider_max_retries=2)
    fake_llm.queue(500, 500, 500)
    fake_llm.on_request = lambda _: clock.advance(8)  # each upstream call takes 8 s of (fake) time

    result = service.answer(QUESTION)

    # 20 s budget, 1 s kept for local: three 8 s attempts at openai fit (the third starts with 2.4 s left),
    # nothing is left for anthropic, and the local answerer answers anyway
    assert len(fake_llm.requests_to(OPENAI_PATH)) == 3 and fake_llm.requests_to(ANTHROPIC_PATH) == []
    assert result.provider == "local" and "models:/name@alias" in result.answer
    assert result.fallback == "openai: server error (500) x3; anthropic: no time left (request budget 20s)"


def test_the_whole_chain_hanging_still_gets_the_local_answer(make_service, fake_llm):
    service = make_service(fake_llm, None, request_budget_s=2.0, local_reserve_s=0.5, provider_timeout_s=0.6)
    fake_llm.queue(Reply.hang(), Reply.hang())
    result = service.answer(QUESTION)
    assert result.provider == "local" and result.fallback == "openai: timeout; anthropic: timeout"
    wait_until(lambda: fake_llm.open_connections == 0, "open connections")


def test_a_provider_that_hangs_past_the_budget_still_opens_its_circuit(make_service, fake_llm):
    # the budget (1.5 s for remote calls) is shorter than the call limit (30 s): each hang is cut by the budget,
    # having had all of it, and counts; the leftovers a fallback gets would not
    service = make_service(fake_llm, None, request_budget_s=2.0, local_reserve_s=0.5, provider_timeout_s=30,
                           breaker_failures=2)
    fake_llm.queue(Reply.hang(), Reply.hang())
    for _ in range(2):
        result = service.answer(QUESTION)
        assert result.provider == "local"
        assert result.fallback == "openai: timeout; anthropic: no time left (request budget 2s)"
    result = service.answer(QUESTION)  # open: openai is skipped at once and anthropic has the whole budget
    assert result.provider == "anthropic" and result.fallback.startswith("openai: circuit open until ")
    assert "2 failures in 60s, last timeout" in result.fallback
    assert len(fake_llm.requests_to(OPENAI_PATH)) == 2
    wait_until(lambda: fake_llm.open_connections == 0, "open connections")


def test_cancelling_the_request_cancels_the_upstream_call(make_service, fake_llm):
    # a server whose client hung up cancels the request's deadline: the hung call ends at once (its limits are
    # a minute away), no other provider is called, and the connection is closed
    service = make_service(fake_llm, None, request_budget_s=50, provider_timeout_s=45)
    deadline = Deadline.start(50, 1)
    fake_llm.queue(Reply.hang())
    fake_llm.on_request = lambda _: threading.Timer(0.2, deadline.cancel).start()
    request = CompletionRequest(system="", prompt="", question=QUESTION, sources=[], model="")
    completion, fallback = service._complete_with_fallback(request, ["openai", "anthropic", "local"], deadline)
    assert completion.provider == "local" and fallback == "openai: cancelled; anthropic: cancelled"
    assert len(fake_llm.requests) == 1
    wait_until(lambda: fake_llm.open_connections == 0, "the cancelled call's connection")


# Retry-After ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_date", [False, True])
def test_retry_after_is_honoured_exactly_up_to_the_cap(fake_llm, clock, as_date):
    fake_llm.queue(Reply.error(429, retry_after=5, retry_after_date=as_date), "after the wait")
    completion = ask(provider_for(fake_llm, clock=clock, provider_max_retries=2))
    assert completion.text == "after the wait" and len(fake_llm.requests) == 2
    [slept] = clock.sleeps
    if as_date:  # an HTTP date has whole seconds
        assert 3 < slept <= 5
    else:
        assert slept == 5  # not clipped to the 2 s backoff cap


def test_a_longer_retry_after_than_the_cap_skips_the_provider_until_then(fake_llm, clock):
    provider = provider_for(fake_llm, clock=clock, provider_max_retries=2, retry_after_max_s=10)
    fake_llm.queue(Reply.error(429, retry_after=30))
    err = failure(lambda: ask(provider))
    assert err.reason == "rate limited (429)" and clock.sleeps == [] and len(fake_llm.requests) == 1

    err = failure(lambda: ask(provider))
    assert err.skipped and err.reason.startswith("circuit open until ") and "Retry-After 30s" in err.reason
    assert len(fake_llm.requests) == 1  # no upstream call while the provider asked us to wait
    clock.advance(30)
    assert ask(provider).text.startswith("fake-openai") and provider.status() == "ready"


def test_a_retry_after_beyond_the_remaining_budget_is_not_waited(fake_llm, clock):
    provider = provider_for(fake_llm, clock=clock, provider_max_retries=2, request_budget_s=5, local_reserve_s=1)
    fake_llm.queue(Reply.error(429, retry_after=8), "never reached")
    err = failure(lambda: ask(provider, deadline=Deadline.start(5, 1, clock)))
    assert err.reason == "rate limited (429)" and clock.sleeps == [] and len(fake_llm.requests) == 1


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = "Sun, 29 Nov 2026 12:00:10 GMT"
    assert parse_retry_after({"retry-after": date}, now=parsedate_to_datetime(date).timestamp() - 10) == 10
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None


# circuit breaker --------------------------------------------------------------------------------------------

def test_a_500_storm_opens_the_circuit_then_a_probe_closes_it(fake_llm, clock):
    before = breaker_totals()
    provider = provider_for(fake_llm, clock=clock, provider_max_retries=2, breaker_failures=3,
                            breaker_cooldown_s=30)
    fake_llm.queue(500, 500, 500)
    err = failure(lambda: ask(provider))
    assert err.reason == "server error (500) x3" and len(fake_llm.requests) == 3
    assert provider.breaker.state("sk-test") == "open" and provider.breaker.counts["opens"] == 1

    for _ in range(5):  # while open: no upstream call at all
        err = failure(lambda: ask(provider))
        assert err.skipped and err.reason.startswith("circuit open until ")
    assert len(fake_llm.requests) == 3 and provider.breaker.counts["skips"] == 5
    assert provider.status().startswith("circuit open until ")

    clock.advance(30)  # cooldown over: one probe, which fails and opens the circuit again
    assert provider.status() == "ready (circuit half-open: the next request probes)"
    fake_llm.queue(500)
    err = failure(lambda: ask(provider))
    assert len(fake_llm.requests) == 4 and provider.breaker.state("sk-test") == "open"
    clock.advance(30)  # the next probe succeeds and closes it
    assert ask(provider).text.startswith("fake-openai") and provider.status() == "ready"
    assert len(fake_llm.requests) == 5
    assert (provider.breaker.counts["opens"], provider.breaker.counts["probes"]) == (2, 2)

    after = breaker_totals()
    assert {e: after.get(("openai", e), 0) - before.get(("openai", e), 0) for e in ("opens", "probes", "skips")} \
        == {"opens": 2, "probes": 2, "skips": 5}


def test_half_open_lets_exactly_one_probe_through(clock):
    breaker = CircuitBreaker("x", failures=1, cooldown_s=10, clock=clock)
    breaker.failure("timeout")
    clock.advance(10)
    assert breaker.admit() is None  # the probe
    assert breaker.admit() == "circuit half-open, a probe is running"
    breaker.release()  # cut short by the budget: no verdict, the next request probes
    assert breaker.admit() is None
    breaker.success()
    assert breaker.state() == "closed" and breaker.counts["probes"] == 2


def test_failures_outside_the_window_do_not_open_the_circuit(clock):
    breaker = CircuitBreaker("x", failures=3, window_s=60, clock=clock)
    for _ in range(5):
        breaker.failure("server error (500)")
        clock.advance(31)  # at most two failures within any 60 s
    assert breaker.state() == "closed" and breaker.counts["opens"] == 0


def test_a_401_disables_the_provider_until_the_key_changes(fake_llm, clock):
    provider = provider_for(fake_llm, clock=clock, provider_max_retries=2)
    fake_llm.queue(401)
    err = failure(lambda: ask(provider))
    assert err.reason == "auth failed (401), check OPENAI_API_KEY" and not err.retryable
    assert len(fake_llm.requests) == 1
    assert provider.available() == (False, "auth failed (401), check OPENAI_API_KEY; unavailable until the key "
                                           "changes")
    clock.advance(3600)  # not a cooldown: still disabled an hour later
    assert failure(lambda: ask(provider)).skipped and len(fake_llm.requests) == 1

    provider.settings = provider.settings.model_copy(update={"openai_api_key": SecretStr("sk-rotated")})
    assert provider.status() == "ready"
    assert ask(provider).text.startswith("fake-openai")
    assert fake_llm.requests[-1].headers["authorization"] == "Bearer sk-rotated"  # a client with the new key


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_reset_connection_is_retried_and_named_without_upstream_text(fake_llm, name):
    fake_llm.queue(Reply.reset(), "after a reset")
    assert ask(provider_for(fake_llm, name, provider_max_retries=1)).text == "after a reset"
    fake_llm.queue(Reply.reset(), Reply.reset())
    err = failure(lambda: ask(provider_for(fake_llm, name, provider_max_retries=1)))
    assert err.reason == "connection failed x2" and len(fake_llm.requests) == 4
    wait_until(lambda: fake_llm.open_connections == 0, "open connections")


def test_breaker_counters_reach_the_servers_metrics(fake_llm, clock):
    from prometheus_client import CollectorRegistry

    from chatbot_model.server.state import Metrics

    registry = CollectorRegistry()
    registry.register(BreakerCollector())
    before = registry.get_sample_value("chatbot_provider_breaker_opens_total", {"provider": "anthropic"}) or 0
    provider = provider_for(fake_llm, "anthropic", clock=clock, breaker_failures=1)
    fake_llm.queue(503)
    failure(lambda: ask(provider))
    failure(lambda: ask(provider))
    assert registry.get_sample_value("chatbot_provider_breaker_opens_total", {"provider": "anthropic"}) == before + 1
    served = Metrics().registry  # what GET /metrics encodes
    assert served.get_sample_value("chatbot_provider_breaker_skips_total", {"provider": "anthropic"}) >= 1


def test_a_sync_client_is_refused_with_the_fix(fake_llm):
    import openai

    with pytest.raises(ConfigError, match="openai.AsyncOpenAI"):
        build_provider("openai", load_settings(), client=openai.OpenAI(api_key="sk", base_url=fake_llm.openai_base_url))


# the fallback chain -----------------------------------------------------------------------------------------

class MirrorProvider(OpenAIProvider):
    """A third OpenAI-compatible backend (e.g. a vLLM server), registered like any provider."""

    name = "mirror"


def test_fallback_walks_every_route_in_order(make_service, fake_llm, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "mirror", MirrorProvider)
    monkeypatch.setitem(ROUTES, "mirror", "mirror")
    service = make_service(fake_llm, None)
    service._models["mirror"] = "mirror-1"
    route = lambda name: Route(name=name, score=0.0)  # noqa: E731
    assert service._chain(route("gpt")) == ["openai", "anthropic", "mirror", "local"]
    assert service._chain(route("claude")) == ["anthropic", "openai", "mirror", "local"]
    assert service._chain(route("mirror")) == ["mirror", "openai", "anthropic", "local"]

    fake_llm.queue(500, 502)  # openai, then anthropic fail; the third route answers
    result = service.answer(QUESTION)
    assert (result.route, result.provider, result.model) == ("gpt", "mirror", "mirror-1")
    assert result.answer == "fake-openai answer from mirror-1"
    assert result.fallback == "openai: server error (500); anthropic: server error (502)"
    assert [r.path for r in fake_llm.requests] == [OPENAI_PATH, ANTHROPIC_PATH, OPENAI_PATH]


def test_fallback_text_names_each_provider_once_and_hides_upstream_text(make_service, fake_llm, clock):
    service = make_service(fake_llm, clock, breaker_failures=1, breaker_cooldown_s=60)
    fake_llm.queue(500)
    result = service.answer(QUESTION)
    assert result.provider == "anthropic" and result.fallback == "openai: server error (500)"
    assert "fake error" not in result.fallback  # the upstream body stays in the log

    result = service.answer(QUESTION)  # the circuit is open now: skipped without a call
    assert result.provider == "anthropic" and result.fallback.startswith("openai: circuit open until ")
    assert result.fallback.count("openai") == 1 and len(fake_llm.requests_to(OPENAI_PATH)) == 1
    assert service.describe()["providers"]["openai"].startswith("circuit open until ")
    assert service.describe()["providers"]["anthropic"] == "ready"


def test_the_budget_must_stay_below_the_backend_timeout():
    with pytest.raises(ConfigError, match="CHATBOT_REQUEST_BUDGET_S"):
        load_settings(request_budget_s=60, backend_timeout_s=60)
    with pytest.raises(ConfigError, match="CHATBOT_LOCAL_RESERVE_S"):
        load_settings(request_budget_s=2, local_reserve_s=2)


# fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture
def make_service(tmp_path):
    corpus = tmp_path / "docs.json"
    corpus.write_text(json.dumps(CORPUS))

    def make(server, clock, **overrides):
        values = dict(docs_path=corpus, index_dir=tmp_path / "idx", guardrail_backend="embedded", tracing=False,
                      feedback_db_url="")
        values.update(overrides)
        settings = settings_for(server, **values)
        service = LLMService.from_settings(settings)
        service.providers = {name: build_provider(name, settings, clock=clock) for name in PROVIDERS}
        if clock is not None:
            service.clock = clock
        return service

    return make
