"""Providers against the real openai/anthropic SDKs talking to a local fake server (no SDK patching),
the extractive local answerer with the real embedder, and the registry."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import re
import subprocess
import sys
import threading
import numpy as np
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError, ProviderError
from chatbot_model.providers import PROVIDERS, build_provider
from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT
from chatbot_model.providers.local import ANSWER_STYLES, NOT_COVERED, split_sentences, style_of
from chatbot_model.contract import Chunk, CompletionRequest, Source
from tests.fake_llm_server import Reply
from tests.helpers import REMOTE, ROOT, free_port, remote, request_for

def auth_ok(headers, key):
    return headers.get("authorization") == f"Bearer {key}" or headers.get("x-api-key") == key


# remote providers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REMOTE)
def test_normal_answer_sends_the_expected_request(server, name):
    case = REMOTE[name]
    request = request_for(name)
    completion = remote(name, server).complete(request)

    assert completion.text == f"fake-{name} answer from {case['model']}"
    assert (completion.provider, completion.model) == (name, case["model"])
    assert completion.usage == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    [sent] = server.requests
    assert sent.path == case["path"]
    assert auth_ok(sent.headers, case["key"])
    body = sent.body
    assert body["model"] == case["model"]
    assert body["max_tokens"] == 512
    if name == "openai":
        assert body["messages"] == [{"role": "system", "content": request.system},
                                    {"role": "user", "content": request.prompt}]
    else:
        assert body["system"] == request.system
        assert body["messages"] == [{"role": "user", "content": request.prompt}]
        assert sent.headers.get("anthropic-version")


@pytest.mark.parametrize("name", REMOTE)
def test_history_goes_as_real_messages_with_the_hint_as_system(server, name):
    history = [{"role": "user", "content": "How do I roll back a model version?"},
               {"role": "assistant", "content": "Move the production alias back [1]."}]
    request = request_for(name, history=history)
    remote(name, server).complete(request)
    body = server.requests[-1].body
    turns = [*history, {"role": "user", "content": request.prompt}]
    if name == "openai":
        assert body["messages"] == [{"role": "system", "content": request.system}, *turns]
    else:
        assert (body["system"], body["messages"]) == (request.system, turns)


@pytest.mark.parametrize("name", REMOTE)
def test_rate_limit_then_success_is_retried(server, name):
    server.queue(Reply.error(429, retry_after=0.01), "second time lucky")
    completion = remote(name, server).complete(request_for(name))
    assert completion.text == "second time lucky"
    assert len(server.requests) == 2


@pytest.mark.parametrize("name", REMOTE)
def test_server_errors_exhaust_the_retries(server, name):
    server.queue(500, 500, 500, "never reached")
    with pytest.raises(ProviderError) as info:
        remote(name, server, retries=2).complete(request_for(name))
    assert info.value.retryable
    assert name in str(info.value) and "500" in str(info.value)
    assert len(server.requests) == 3


@pytest.mark.parametrize("name", REMOTE)
def test_bad_key_fails_at_once_naming_the_variable(server, name):
    server.queue(401, "never reached")
    with pytest.raises(ProviderError) as info:
        remote(name, server).complete(request_for(name))
    assert not info.value.retryable
    assert "401" in str(info.value) and REMOTE[name]["env"] in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", REMOTE)
def test_bad_request_is_not_retried(server, name):
    server.queue(400)
    with pytest.raises(ProviderError) as info:
        remote(name, server).complete(request_for(name))
    assert not info.value.retryable and "400" in str(info.value) and REMOTE[name]["model"] in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", REMOTE)
def test_timeout_becomes_a_provider_error(server, name):
    server.queue(Reply.slow(2.0))
    with pytest.raises(ProviderError) as info:
        remote(name, server, retries=0, timeout=0.3).complete(request_for(name))
    assert info.value.retryable and "timed out" in str(info.value) and info.value.reason == "timeout"
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", REMOTE)
def test_timeout_then_success_is_retried(server, name):
    server.queue(Reply.slow(2.0), "after a timeout")
    completion = remote(name, server, retries=1, timeout=0.3).complete(request_for(name))
    assert completion.text == "after a timeout"
    assert len(server.requests) == 2


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize("name", REMOTE)
def test_garbage_reply_fails_at_once(server, name, content_type):
    server.queue(Reply.junk(content_type=content_type), "never reached")
    with pytest.raises(ProviderError) as info:
        remote(name, server).complete(request_for(name))
    assert not info.value.retryable and "unreadable reply" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", REMOTE)
def test_empty_reply_is_an_error(server, name):
    server.queue(Reply.answer(""))
    with pytest.raises(ProviderError, match="empty reply"):
        remote(name, server).complete(request_for(name))


@pytest.mark.parametrize("name", REMOTE)
def test_concurrent_calls_are_served_in_parallel(server, name):
    # a rendezvous on the server: no request is answered until all four are in flight at once. Calls made one
    # after another would break the barrier (its timeout is only a bound on a hang) and fail.
    together = threading.Barrier(4, timeout=120)
    server.on_request = lambda _: together.wait()
    provider = remote(name, server, retries=0, timeout=300)
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: provider.complete(request_for(name)).text, range(4)))
    assert texts == [f"fake-{name} answer from {REMOTE[name]['model']}"] * 4
    assert len(server.requests) == 4 and not together.broken


@pytest.mark.parametrize("name", REMOTE)
def test_connection_refused_is_retryable(name):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    settings = load_settings(openai_api_key="sk-test", openai_base_url=url + "/v1", anthropic_api_key="sk-ant",
                             anthropic_base_url=url, provider_max_retries=1)
    provider = build_provider(name, settings)
    provider.retry_wait_min, provider.retry_wait_max = 0.01, 0.05
    with pytest.raises(ProviderError) as info:
        provider.complete(request_for(name))
    assert info.value.retryable and "cannot connect" in str(info.value)
    assert REMOTE[name]["env"].replace("API_KEY", "BASE_URL") in str(info.value)


@pytest.mark.parametrize("name", REMOTE)
def test_unavailable_without_a_key(server, name):
    settings = load_settings(provider_max_retries=0)
    provider = build_provider(name, settings)
    ok, reason = provider.available()
    assert not ok and reason == f"{REMOTE[name]['env']} is not set"
    with pytest.raises(ProviderError, match=REMOTE[name]["env"]):
        provider.complete(request_for(name))
    assert provider._client is None  # no SDK client was made


@pytest.mark.parametrize("name", REMOTE)
def test_key_from_the_usual_environment_variable(server, name, monkeypatch):
    monkeypatch.setenv(REMOTE[name]["env"], "sk-from-env")
    assert build_provider(name, load_settings()).available() == (True, "")


def test_client_is_made_lazily_and_can_be_injected(server):
    import openai

    provider = remote("openai", server)
    assert provider._client is None
    provider.complete(request_for("openai"))
    assert provider._client is not None and provider.client.max_retries == 0

    injected = openai.AsyncOpenAI(api_key="sk-injected", base_url=server.openai_base_url, max_retries=0)
    provider = build_provider("openai", load_settings(), client=injected)  # no key in the settings
    assert provider.available() == (True, "")
    assert provider.complete(request_for("openai")).text.startswith("fake-openai")
    assert server.requests[-1].headers["authorization"] == "Bearer sk-injected"


def test_missing_sdk_names_the_install_command(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    with pytest.raises(ProviderError, match="pip install openai"):
        remote("openai", server).complete(request_for("openai"))


def test_importing_providers_imports_no_sdk():
    code = "import sys, chatbot_model.providers; print(sorted({'openai', 'anthropic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"


# registry ---------------------------------------------------------------------------------------------------

def test_registry_builds_every_provider():
    settings = load_settings()
    assert set(PROVIDERS) == {"openai", "anthropic", "local"}
    for name, cls in PROVIDERS.items():
        provider = build_provider(name, settings)
        assert isinstance(provider, cls) and provider.name == name


def test_unknown_provider_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        build_provider("gemini", load_settings())
    message = str(info.value)
    assert "unknown provider 'gemini'" in message
    assert all(name in message for name in PROVIDERS)


# local extractive answerer ----------------------------------------------------------------------------------

ALIASES = ("MLflow's model registry keeps each registered model as a list of numbered versions. "
           "An alias is a mutable, named reference to one model version, such as champion. "
           "Moving an alias to a new version changes what `models:/name@champion` loads without changing code.")
SERVING = ("The mlflow models serve command starts a local REST server for a model. "
           "Predictions are answered on the /invocations endpoint. "
           "The server accepts JSON in the dataframe_split or dataframe_records format.")
TRACING = ("Tracing records the inputs, outputs and latency of each step of a request. "
           "Traces are stored in the tracking server and shown in the MLflow UI.")


def make_source(chunk_id, title, text, score, *, sentences=True, vectors=False):
    parts = tuple(split_sentences(text)) if sentences else ()
    chunk = Chunk(chunk_id=chunk_id, doc_id=f"doc-{chunk_id}", title=title, source=f"{title}.md", text=text,
                  sentences=parts)
    source = Source(chunk=chunk, score=score)
    if vectors:
        from chatbot_model.retrieval.embedder import get_embedder

        source.sentence_vectors = get_embedder("").encode(list(parts))
    return source


def local_request(question, sources, *, question_vector=False, hint=""):
    vector = None
    if question_vector:
        from chatbot_model.retrieval.embedder import get_embedder

        vector = get_embedder("").encode([question])[0]
    return CompletionRequest(system=hint, prompt="", question=question, sources=sources, model="extractive-v1",
                             question_vector=vector)


def cited(answer):
    """[(sentence without its citation, source number)] of an answer."""
    return [(text.strip() + end, int(no)) for text, no, end in re.findall(r"(.+?) \[(\d+)\]([.!?]+)", answer)]


@pytest.fixture(scope="module")
def local():
    return build_provider("local", load_settings())


def test_local_cites_existing_sources_with_their_sentences(local):
    sources = [make_source(1, "aliases", ALIASES, 0.62), make_source(2, "serving", SERVING, 0.41),
               make_source(3, "tracing", TRACING, 0.20)]
    completion = local.complete(local_request("What is a model alias in MLflow?", sources))

    assert (completion.provider, completion.model) == ("local", "extractive-v1")
    pieces = cited(completion.text)
    assert 1 <= len(pieces) <= 3
    for sentence, number in pieces:
        assert 1 <= number <= len(sources)
        assert sentence in sources[number - 1].chunk.sentences
    assert ("An alias is a mutable, named reference to one model version, such as champion.", 1) in pieces
    assert pieces[0][1] == 1  # the best source leads


def test_local_numbers_sources_as_in_the_request(local):
    sources = [make_source(3, "tracing", TRACING, 0.30), make_source(2, "serving", SERVING, 0.55)]
    completion = local.complete(local_request("Which endpoint answers predictions?", sources))
    assert cited(completion.text)[0] == ("Predictions are answered on the /invocations endpoint.", 2)
    assert "[2]" in completion.text


def test_local_gives_the_same_answer_with_or_without_precomputed_vectors(local):
    question = "How do I change which model version an alias points to?"
    texts = [(1, "aliases", ALIASES, 0.6), (2, "serving", SERVING, 0.3), (3, "tracing", TRACING, 0.1)]
    plain = [make_source(*t) for t in texts]
    precomputed = [make_source(*t, vectors=True) for t in texts]
    mixed = [make_source(*texts[0], vectors=True), make_source(*texts[1]), make_source(*texts[2], sentences=False)]

    answers = {
        local.complete(local_request(question, plain)).text,
        local.complete(local_request(question, plain)).text,  # deterministic
        local.complete(local_request(question, precomputed, question_vector=True)).text,
        local.complete(local_request(question, precomputed)).text,
        local.complete(local_request(question, mixed, question_vector=True)).text,
    }
    assert len(answers) == 1
    assert "[1]" in answers.pop()


def test_local_ranks_sentences_read_in_their_document_context(local):
    """A sentence whose context vector (the sentence after its document's title) is about the question leads,
    though its own words are not; without context vectors the sentence's own vector decides."""
    from chatbot_model.retrieval.embedder import get_embedder

    question = "Which formats does the server accept?"
    source = make_source(1, "serving", SERVING, 0.5, vectors=True)
    source.doc_sentences, source.doc_sentence_vectors = source.chunk.sentences, source.sentence_vectors
    alone = cited(local.complete(local_request(question, [source])).text)[0][0]
    target = next(s for s in source.chunk.sentences if s != alone)
    contexts = np.array(source.sentence_vectors)
    contexts[source.chunk.sentences.index(target)] = get_embedder("").encode([question])[0]
    source.doc_context_vectors = contexts
    assert cited(local.complete(local_request(question, [source])).text)[0][0] == target


def test_local_splits_the_text_when_the_chunk_has_no_sentences(local):
    sources = [make_source(1, "serving", SERVING, 0.5, sentences=False)]
    completion = local.complete(local_request("What formats does the server accept?", sources))
    assert ("The server accepts JSON in the dataframe_split or dataframe_records format.", 1) in cited(completion.text)


def test_local_without_sources_says_the_knowledge_base_does_not_cover_it(local):
    completion = local.complete(local_request("What is the capital of Mars?", []))
    assert completion.text == NOT_COVERED and "does not cover" in completion.text and "MLflow" in completion.text
    assert not re.search(r"\[\d+\]", completion.text)  # cites nothing
    assert (completion.provider, completion.model) == ("local", "extractive-v1")


def test_local_does_not_answer_off_topic_questions(local):
    sources = [make_source(1, "aliases", ALIASES, 0.1), make_source(2, "serving", SERVING, 0.1)]
    assert local.complete(local_request("How tall is Mount Everest?", sources)).text == NOT_COVERED


def test_local_leads_with_the_sentence_that_answers(local):
    """The answering sentence is the last of its chunk; it comes first, the supporting ones after it."""
    sources = [make_source(1, "aliases", ALIASES, 0.6), make_source(2, "serving", SERVING, 0.3)]
    question = "Which URI loads the model version that the champion alias points to?"
    for hint in (DEFAULT_HINT, GROUNDED_HINT, ""):
        pieces = cited(local.complete(local_request(question, sources, hint=hint)).text)
        assert pieces[0] == ("Moving an alias to a new version changes what `models:/name@champion` loads "
                             "without changing code.", 1), hint


def test_the_hint_shapes_the_local_answer(local):
    """Same question, same sources: the default hint gives the 1-2 best sentences, the grounded hint (after a
    thumbs-down) more supporting sentences, each cited with its own source."""
    sources = [make_source(1, "aliases", ALIASES, 0.6), make_source(2, "serving", SERVING, 0.45),
               make_source(3, "tracing", TRACING, 0.3)]
    question = "How do I deploy a new model version with an alias and serve it?"
    concise = cited(local.complete(local_request(question, sources, hint=DEFAULT_HINT)).text)
    grounded = cited(local.complete(local_request(question, sources, hint=GROUNDED_HINT)).text)
    assert 1 <= len(concise) <= 2 < len(grounded) <= ANSWER_STYLES["detailed"].max_sentences
    assert concise[0] == grounded[0]  # both lead with the same best sentence
    assert set(concise) < set(grounded)  # the grounded answer adds support, it drops nothing
    for sentence, number in grounded:
        assert sentence in sources[number - 1].chunk.sentences


@pytest.mark.parametrize("hint, style", [(DEFAULT_HINT, "concise"), (GROUNDED_HINT, "detailed"),
                                         ("Keep it brief.", "concise"), ("Answer as you see fit", "standard"),
                                         ("", "standard")])
def test_the_hint_words_choose_the_answer_style(hint, style):
    assert style_of(hint) == style


def test_local_embedder_failure_keeps_the_fix(local, tmp_path):
    provider = build_provider("local", load_settings(embedding_model=str(tmp_path / "no-such-model")))
    with pytest.raises(ProviderError, match="CHATBOT_EMBEDDING_MODEL") as info:
        provider.complete(local_request("What is an alias?", [make_source(1, "aliases", ALIASES, 0.5)]))
    assert not info.value.retryable and str(info.value).startswith("local: ")


def test_local_needs_no_key():
    provider = build_provider("local", load_settings())
    assert provider.available() == (True, "")
    assert (provider.needs_key, provider.key_env_var) == (False, None)
