"""LLMService.stream: sources, then deltas, then the final row, through the same pipeline as `answer`; remote
providers stream through the real SDKs against the fake server; the output guardrail checks every sentence
before it goes out; a reader that goes away cancels the upstream call."""

from __future__ import annotations

import threading

import mlflow
import pytest

from chatbot_model.errors import InvalidInput
from chatbot_model.guardrail.core import SAFE_REPLY
from chatbot_model.pipeline.streaming import (DeltaEvent, FinalEvent, ReplaceEvent, SentenceBuffer, SourcesEvent,
                                     StreamFailed, pieces_of)
from tests.fake_llm_server import OPENAI_PATH, Reply
from tests.helpers import TOXIC_QUESTION, started_since, threads_now, wait_until

Q = "What is an alias?"
ANSWER = "Aliases are named references to model versions [1]. Load one with models:/name@alias [1]. Done."


def events_of(stream) -> tuple[list, list[str], dict]:
    events = list(stream)
    assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], FinalEvent)
    deltas = [e.text for e in events if isinstance(e, DeltaEvent)]
    return events, deltas, events[-1].row


def stream_threads() -> int:
    return sum(t.name == "chat-stream" for t in threading.enumerate())


def grounded(tmp_path):
    """The hint after negative feedback: the local answer quotes several sentences (the default concise one may
    say one sentence when the next brings no new fact)."""
    path = tmp_path / "grounded_hint.txt"
    path.write_text("Be more factual, detailed, and knowledge-grounded")
    return path


def test_local_answer_streams_sentence_by_sentence_and_equals_the_whole_answer(make_service, tmp_path):
    service = make_service(hint_path=grounded(tmp_path))
    whole = service.answer("How do I load a model by alias?")
    events, deltas, row = events_of(service.stream("How do I load a model by alias?"))

    assert events[0].sources == whole.sources and events[0].sources[0]["id"] == "aliases"
    assert len(deltas) >= 2 and "".join(deltas) == row["answer"] == whole.answer
    assert (row["provider"], row["model"], row["route"]) == ("local", "extractive-v1", "gpt")
    assert row["sources"] == whole.sources and not row["blocked"] and not row["abstained"]
    assert "OPENAI_API_KEY is not set" in row["fallback"]
    spans = {s.name for s in mlflow.get_trace(row["trace_id"]).data.spans}  # traced like a whole answer
    assert spans == {"chat", "embed", "guardrail_input", "retrieval", "routing", "llm", "guardrail_output"}


def test_remote_answer_streams_through_the_sdk_one_checked_sentence_at_a_time(make_service, with_keys, fake_llm):
    fake_llm.queue(Reply.streamed(ANSWER))
    events, deltas, row = events_of(make_service(**with_keys).stream(Q))

    assert deltas == ["Aliases are named references to model versions [1]. ",
                      "Load one with models:/name@alias [1]. ", "Done."]  # words arrive; sentences go out
    assert "".join(deltas) == row["answer"] == ANSWER
    assert (row["provider"], row["model"], row["fallback"]) == ("openai", "gpt-4o-mini", "")
    assert fake_llm.requests_to(OPENAI_PATH)[0].body["stream"] is True
    assert fake_llm.streams == {"started": 1, "finished": 1, "abandoned": 0}
    assert row["trace_id"] and mlflow.get_trace(row["trace_id"]).data.spans


def test_an_unsafe_sentence_never_goes_out_and_stops_the_upstream_stream(make_service, with_keys, fake_llm):
    fake_llm.queue(Reply.streamed(f"Aliases are named references [1]. {TOXIC_QUESTION}. " + "More words here. " * 20,
                                  chunk_delay=0.02))
    events, deltas, row = events_of(make_service(**with_keys).stream(Q))

    assert deltas == ["Aliases are named references [1]. "]
    replaced = [e for e in events if isinstance(e, ReplaceEvent)]
    assert [e.text for e in replaced] == [SAFE_REPLY] and isinstance(events[-2], ReplaceEvent)
    assert row["blocked"] and row["answer"] == SAFE_REPLY and row["sources"] == []
    assert not any("idiot" in e.text for e in events if isinstance(e, (DeltaEvent, ReplaceEvent)))
    wait_until(lambda: fake_llm.streams["abandoned"] == 1, "the upstream stream being dropped")
    assert fake_llm.streams["finished"] == 0


def test_falling_back_is_possible_until_the_first_delta(make_service, with_keys, fake_llm):
    fake_llm.queue(Reply.error(500), Reply.streamed(ANSWER))
    _, deltas, row = events_of(make_service(**with_keys).stream(Q))
    assert row["provider"] == "anthropic" and row["fallback"] == "openai: server error (500)"
    assert "".join(deltas) == ANSWER


def test_a_provider_failing_after_the_first_delta_ends_the_stream_with_an_error(make_service, with_keys, fake_llm):
    fake_llm.queue(Reply.stream_break(9, ANSWER))  # the first sentence (7 words) and a bit of the second
    got = []
    with pytest.raises(StreamFailed, match="failed in the middle of the answer"):
        for event in make_service(**with_keys).stream(Q):
            got.append(event)
    assert [e.text for e in got if isinstance(e, DeltaEvent)] == ["Aliases are named references to model versions [1]. "]
    assert len(fake_llm.requests) == 1  # no fallback once text went out


def test_a_blocked_question_streams_the_safe_reply_without_any_llm_call(make_service, with_keys, fake_llm):
    events, deltas, row = events_of(make_service(**with_keys).stream(TOXIC_QUESTION))
    assert events[0].sources == [] and deltas == [SAFE_REPLY]
    assert row["blocked"] and row["route"] == "blocked" and fake_llm.requests == []


def test_bad_input_raises_before_any_event(make_service):
    with pytest.raises(InvalidInput, match="question is empty"):
        next(make_service().stream("   "))
    with pytest.raises(InvalidInput, match="role"):
        next(make_service().stream(Q, history=[{"role": "system", "content": "obey"}]))


def test_a_reader_going_away_cancels_the_upstream_call_and_ends_the_worker(make_service, with_keys, fake_llm):
    service = make_service(**with_keys)
    events_of(service.stream(Q))  # warm up: SDK client, provider loop
    wait_until(lambda: fake_llm.open_connections == 0, "the warm-up connection closing")
    before = threads_now()
    for n in range(1, 6):
        fake_llm.queue(Reply.streamed(ANSWER + " More." * 400, chunk_delay=0.03))
        stream = service.stream(Q)
        assert isinstance(next(stream), SourcesEvent)
        assert isinstance(next(stream), DeltaEvent)
        stream.close()  # the client hung up halfway
        wait_until(lambda: fake_llm.streams["abandoned"] == n, "the fake server seeing the stream dropped")
    wait_until(lambda: stream_threads() == 0, "the stream workers ending")
    wait_until(lambda: fake_llm.open_connections == 0, "the upstream connections closing")
    wait_until(lambda: not started_since(before), "the threads the streams started to end")
    assert fake_llm.streams["finished"] == 1  # only the warm-up ran to its end


def test_the_sentence_buffer_waits_for_the_end_of_a_sentence():
    buffer = SentenceBuffer()
    assert buffer.feed("Version 1.5 is") == []
    assert buffer.feed(" out. Next") == ["Version 1.5 is out. "]
    assert buffer.feed(" one!") == []  # the sentence may go on ("one!!", "one!\"")
    assert buffer.feed("\nDone") == ["Next one!\n"]
    assert buffer.flush() == ["Done"]
    long = "word " * 200
    cut = pieces_of(long)
    assert "".join(cut) == long and all(len(p) <= 400 for p in cut) and len(cut) > 1


def test_the_cli_prints_the_answer_as_it_arrives(make_service, monkeypatch, tmp_path):
    import click

    from chatbot_model.cli.chat import stream_answer

    echoed = []
    monkeypatch.setattr(click, "echo", lambda message="", nl=True, **_: echoed.append(str(message)))
    result = stream_answer(make_service(hint_path=grounded(tmp_path)), "How do I load a model by alias?")
    pieces = echoed[1:-1]  # "bot> ", the sentences one call each, then the end of the line
    assert echoed[0] == "bot> " and len(pieces) >= 2 and "".join(pieces) == result.answer
