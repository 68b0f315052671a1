"""`/chat` with `"stream": true` on a real uvicorn (loopback): Server-Sent Events that arrive while the upstream
is still generating, an error event mid-stream, and clients that hang up cancelling the upstream call (counted
on the fake provider server, never timed)."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import pytest

from tests.fake_llm_server import Reply
from tests.helpers import (LiveServer, make_service, make_settings, provider_keys, service_app, sibling_service,
                           started_since, threads_now, tracking_store, wait_until)

Q = "How do I promote a registered MLflow model version to Production?"
ANSWER = "Promote it with an alias [1]. Aliases are mutable references [1]. Done."


@pytest.fixture(scope="module")
def keys(upstream):
    return provider_keys(upstream)


@pytest.fixture(scope="module")
def service(shipped_index, tmp_path_factory, keys):
    tmp = tmp_path_factory.mktemp("stream-server")
    settings = make_settings(shipped_index, tracking_store(tmp), tmp, **keys)
    return make_service(settings)



def sse_events(lines) -> "iter[tuple[str, dict]]":
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def post_stream(client: httpx.Client, url: str, body: dict):
    return client.stream("POST", f"{url}/chat", json={**body, "stream": True}, timeout=60)


def stream_threads() -> int:
    return sum(t.name == "chat-stream" for t in threading.enumerate())


def test_stream_true_answers_as_server_sent_events(live, fake):
    fake.queue(Reply.streamed(ANSWER))
    with httpx.Client() as client, post_stream(client, live.url, {"question": Q}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    kinds = [k for k, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}
    assert events[0][1]["sources"][0]["title"]
    deltas = [d["text"] for k, d in events if k == "delta"]
    final = events[-1][1]
    assert len(deltas) == 3 and "".join(deltas) == final["answer"] == ANSWER
    assert (final["route"], final["provider"], final["model"]) == ("gpt", "openai", "gpt-4o-mini")
    assert final["trace_id"].startswith("tr-") and final["abstained"] is False and final["sources"]
    assert fake.requests[-1].body["stream"] is True


def test_pieces_arrive_while_the_upstream_is_still_generating(live, fake):
    fake.queue(Reply.streamed(ANSWER + " More text follows here." * 3, chunk_delay=0.1))
    with httpx.Client() as client, post_stream(client, live.url, {"question": Q}) as response:
        events = sse_events(response.iter_lines())
        assert next(events)[0] == "sources"
        kind, data = next(events)
        assert (kind, data["text"]) == ("delta", "Promote it with an alias [1]. ")
        assert fake.streams["finished"] == 0  # the first sentence is here; the provider is not done
        rest = list(events)
    assert rest[-1][0] == "final" and fake.streams["finished"] == 1


def test_the_local_answerer_streams_sentence_by_sentence(live, fake):
    fake.queue(500, 500)  # both remote routes fail before any text: the local answerer takes over
    with httpx.Client() as client, post_stream(client, live.url, {"question": Q}) as response:
        events = list(sse_events(response.iter_lines()))
    deltas = [d["text"] for k, d in events if k == "delta"]
    final = events[-1][1]
    assert final["provider"] == "local" and "server error (500)" in final["fallback"]
    assert len(deltas) >= 2 and "".join(deltas) == final["answer"]


def test_bad_input_is_a_json_error_before_any_event(live):
    r = httpx.post(f"{live.url}/chat", json={"question": "\u200b\u200b", "stream": True})
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"
    assert r.headers["content-type"].startswith("application/json")


def test_a_failure_mid_stream_ends_with_an_error_event(live, fake):
    fake.queue(Reply.stream_break(7, ANSWER))  # the first two sentences, then the connection drops
    with httpx.Client() as client, post_stream(client, live.url, {"question": Q}) as response:
        events = list(sse_events(response.iter_lines()))
    assert [k for k, _ in events] == ["sources", "delta", "error"]
    assert events[-1][1]["error"] == "stream_failed" and "incomplete" in events[-1][1]["message"]
    assert len(fake.requests) == 1  # text had gone out: no fallback


def test_clients_hanging_up_cancel_the_upstream_calls_and_free_their_threads(live, fake, caplog):
    caplog.set_level(logging.INFO)
    def abandon() -> None:
        fake.queue(Reply.streamed(ANSWER + " And more." * 400, chunk_delay=0.03))
        with httpx.Client() as client, post_stream(client, live.url, {"question": Q}) as response:
            events = sse_events(response.iter_lines())
            assert next(events)[0] == "sources" and next(events)[0] == "delta"
        # leaving the block closes the connection halfway through the answer

    abandon()  # warm-up: the worker threads of the server exist from here on
    wait_until(lambda: fake.streams["abandoned"] == 1 and stream_threads() == 0, "the first stream ending")
    wait_until(lambda: fake.open_connections == 0, "the first upstream connection closing")
    before = threads_now()
    for n in range(2, 8):
        abandon()
        wait_until(lambda: fake.streams["abandoned"] == n, f"the fake server seeing stream {n} dropped")
    wait_until(lambda: stream_threads() == 0, "every stream worker ending")
    wait_until(lambda: fake.open_connections == 0, "every upstream connection closing")
    wait_until(lambda: not started_since(before), "the threads the streams started to end")
    assert fake.streams["finished"] == 0 and len(fake.requests) == 7  # one call each, none finished, no fallback
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("chatbot")]
    assert noisy == []  # a client hanging up is not an error
    # each hang-up is logged at INFO (a stream an earlier test left may end while this one runs: at least 7)
    assert sum("stream abandoned by the client" in r.getMessage() for r in caplog.records) >= 7


def test_a_client_hanging_up_on_a_whole_answer_cancels_the_upstream_call(service, shipped_index, tmp_path, keys,
                                                                         fake):
    # a hung provider with limits far away: only the client's disconnect can end the call this soon
    settings = make_settings(shipped_index, tracking_store(tmp_path), tmp_path, **keys,
                             provider_timeout_s=60, request_budget_s=100, backend_timeout_s=120)
    server = LiveServer(service_app(settings, sibling_service(service, settings)))
    try:
        server.wait_ready()
        fake.queue(Reply.hang())
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/chat", json={"question": Q}, timeout=httpx.Timeout(60, read=1.0))
        wait_until(lambda: len(fake.requests) == 1 and fake.open_connections == 0,
               "the upstream call being cancelled")
        assert len(fake.requests) == 1  # cancelled with the request: the other route was not tried
    finally:
        server.close()
