"""Providers streaming through the real openai/anthropic SDKs against the fake server's Server-Sent Events:
pieces arrive in order, retries happen only before the first piece, and closing a stream early hangs up on the
upstream server."""

from __future__ import annotations

import threading

import pytest

from chatbot_model.providers.deadline import Deadline
from chatbot_model.errors import ProviderError
from chatbot_model.contract import Completion
from tests.fake_llm_server import Reply
from tests.helpers import REMOTE, remote, request_for, wait_until

TEXT = "Aliases are mutable. Move the alias back to roll back. That is all."


def _drain(stream) -> tuple[list[str], Completion]:
    items = list(stream)
    *pieces, final = items
    assert all(isinstance(p, str) for p in pieces) and isinstance(final, Completion)
    return pieces, final


@pytest.mark.parametrize("name", REMOTE)
def test_stream_arrives_in_pieces_with_model_and_usage(server, name):
    server.queue(Reply.streamed(TEXT))
    pieces, final = _drain(remote(name, server).stream(request_for(name)))

    assert len(pieces) == len(TEXT.split())  # one piece per word, as sent
    assert "".join(pieces) == TEXT == final.text
    assert (final.provider, final.model) == (name, REMOTE[name]["model"])
    assert final.usage == {"input_tokens": 11, "output_tokens": len(pieces), "total_tokens": 11 + len(pieces)}
    body = server.requests[-1].body
    assert body["stream"] is True
    assert server.streams == {"started": 1, "finished": 1, "abandoned": 0}


@pytest.mark.parametrize("name", REMOTE)
def test_stream_sends_the_same_messages_as_complete(server, name):
    history = [{"role": "user", "content": "How do I roll back?"}, {"role": "assistant", "content": "Move it."}]
    request = request_for(name, history=history)
    provider = remote(name, server)
    provider.complete(request)
    _drain(provider.stream(request))
    plain, streamed = (r.body for r in server.requests)
    assert {k: v for k, v in streamed.items() if k not in ("stream", "stream_options")} == plain


@pytest.mark.parametrize("name", REMOTE)
def test_errors_before_the_first_piece_are_retried(server, name):
    server.queue(Reply.error(500), Reply.streamed(TEXT))
    pieces, final = _drain(remote(name, server, retries=2).stream(request_for(name)))
    assert final.text == TEXT and len(server.requests) == 2


@pytest.mark.parametrize("name", REMOTE)
def test_a_stream_broken_midway_raises_without_retry(server, name):
    server.queue(Reply.stream_break(2, TEXT), Reply.streamed(TEXT))
    got = []
    with pytest.raises(ProviderError) as failed:
        for item in remote(name, server, retries=2).stream(request_for(name)):
            got.append(item)
    assert "".join(got) == "Aliases are"  # the two pieces sent, then the failure
    assert len(server.requests) == 1  # text had gone out: no retry
    assert getattr(failed.value, "reason", "")


@pytest.mark.parametrize("name", REMOTE)
def test_an_empty_stream_is_an_error(server, name):
    server.queue(Reply.streamed(""))
    with pytest.raises(ProviderError, match="empty reply"):
        list(remote(name, server, retries=0).stream(request_for(name)))


@pytest.mark.parametrize("name", REMOTE)
def test_closing_the_stream_hangs_up_on_the_upstream_server(server, name):
    server.queue(Reply.streamed(TEXT, chunk_delay=0.3))
    stream = remote(name, server).stream(request_for(name))
    assert next(stream) == "Aliases"
    stream.close()  # the reader went away
    wait_until(lambda: server.streams["abandoned"] == 1, "the server to see the stream abandoned")
    wait_until(lambda: server.open_connections == 0, "the connection to close")
    assert server.streams["finished"] == 0


@pytest.mark.parametrize("name", REMOTE)
def test_cancelling_the_deadline_cancels_a_stream_in_flight(server, name):
    server.queue(Reply.streamed(TEXT, chunk_delay=0.3))
    deadline = Deadline.start(30)
    stream = remote(name, server).stream(request_for(name), deadline)
    assert next(stream) == "Aliases"
    threading.Timer(0.05, deadline.cancel).start()
    with pytest.raises(ProviderError) as failed:
        list(stream)
    assert failed.value.reason == "cancelled"
    wait_until(lambda: server.streams["abandoned"] == 1, "the server to see the stream abandoned")
    assert server.streams["finished"] == 0


def test_a_provider_that_cannot_stream_yields_its_answer_whole(tmp_path):
    from chatbot_model.config import load_settings
    from chatbot_model.providers import build_provider
    from chatbot_model.providers.local import NOT_COVERED

    local = build_provider("local", load_settings())
    assert local.can_stream is False
    items = list(local.stream(request_for("openai", sources=[])))
    assert items[0] == NOT_COVERED and items[1].text == NOT_COVERED
