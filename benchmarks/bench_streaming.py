"""Streaming against whole answers through `/chat` on loopback (uvicorn, the real service over the shipped
knowledge base), with a fake slow remote provider: the tests' fake OpenAI server generating a 4-sentence,
48-word answer at one word per `--word-s` seconds (streamed piece by piece, or sent whole after the same time).

    python benchmarks/bench_streaming.py [--quick] [--word-s 0.05]

Per mode, median over the requests (modes rotated): time to the first byte of the response, to the first
piece of answer text, and to the last byte. Also: the upstream's own time to its first word (the SDK reading the
fake server directly), so the difference shows what buffering to a checked sentence costs in time to first
token; and the same for the local answerer (no remote provider).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, build_service, main  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.fake_llm_server import FakeLLMServer, Reply  # noqa: E402

QUESTION = "How do I promote a registered MLflow model version to Production?"
SENTENCE = "Promote the version by moving the production alias to it now [1]. "
ANSWER = (SENTENCE * 4).strip()  # 4 sentences of 12 words


def _arg(name: str, default: float) -> float:
    return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def one(client, url: str, stream: bool) -> dict:
    """(first byte, first text, last byte) in seconds of one /chat request."""
    import httpx  # noqa: F401

    start = time.perf_counter()
    first_byte = first_text = None
    with client.stream("POST", f"{url}/chat", json={"question": QUESTION, "stream": stream}, timeout=60) as r:
        buffer = ""
        for chunk in r.iter_text():
            now = time.perf_counter() - start
            first_byte = first_byte if first_byte is not None else now
            buffer += chunk
            if first_text is None and (not stream or "event: delta" in buffer):
                first_text = now
    last = time.perf_counter() - start
    if not stream:
        first_text = last  # the whole JSON must arrive before any text can be shown
        assert json.loads(buffer)["answer"]
    return {"first_byte": first_byte, "first_text": first_text, "last_byte": last}


def upstream_first_word(service, word_s: float, fake: FakeLLMServer) -> float:
    """The provider's own time to its first word (the SDK reading the fake server's stream directly)."""
    from chatbot_model.contract import CompletionRequest

    fake.queue(Reply.streamed(ANSWER, chunk_delay=word_s))
    request = CompletionRequest(system="hint", prompt=QUESTION, question=QUESTION, sources=[], model="gpt-4o-mini")
    start = time.perf_counter()
    stream = service.providers["openai"].stream(request)
    next(stream)
    took = time.perf_counter() - start
    stream.close()
    return took


def run(quick: bool) -> dict:
    import httpx

    from tests.helpers import LiveServer, service_app

    word_s = _arg("--word-s", 0.05)
    n = 4 if quick else 12
    words = len(ANSWER.split())
    fake = FakeLLMServer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    keys = dict(openai_api_key="sk-bench", openai_base_url=fake.openai_base_url, anthropic_api_key="sk-bench",
                anthropic_base_url=fake.anthropic_base_url, provider_max_retries=0)
    remote = build_service(tmp, **keys)
    local = build_service(tmp)  # no keys: the local answerer
    servers = {"remote": LiveServer(service_app(remote.settings, remote)),
               "local": LiveServer(service_app(local.settings, local))}
    try:
        for s in servers.values():
            s.wait_ready()
        timings: dict[str, list[dict]] = {}
        upstream, checks = [], []
        with httpx.Client() as client:
            for stream in (True, False):  # warm-up
                fake.queue(Reply.streamed(ANSWER) if stream else Reply.answer(ANSWER))
                one(client, servers["remote"].url, stream)
                one(client, servers["local"].url, stream)
            for i in range(n):
                modes = [("remote", True), ("remote", False), ("local", True), ("local", False)]
                for which, stream in modes[i % 4:] + modes[:i % 4]:
                    if which == "remote":
                        fake.queue(Reply.streamed(ANSWER, chunk_delay=word_s) if stream
                                   else Reply.slow(words * word_s, ANSWER))
                    key = f"{which} {'streamed' if stream else 'whole'}"
                    timings.setdefault(key, []).append(one(client, servers[which].url, stream))
                upstream.append(upstream_first_word(remote, word_s, fake))
                started = time.perf_counter()
                remote.guardrail.check(SENTENCE.strip())
                checks.append(time.perf_counter() - started)
    finally:
        for s in servers.values():
            s.close()
        fake.close()

    def med(key: str, field: str) -> float:
        return round(statistics.median(t[field] for t in timings[key]) * 1000, 1)

    table = {key: {"first_byte_ms": med(key, "first_byte"), "first_text_ms": med(key, "first_text"),
                   "last_byte_ms": med(key, "last_byte")} for key in timings}
    first_sentence_words = len(SENTENCE.split())
    return {
        "requests_per_mode": n, "word_s": word_s, "answer_words": words,
        "first_sentence_words": first_sentence_words,
        "ms": table,
        "upstream_first_word_ms": round(statistics.median(upstream) * 1000, 1),
        "buffering_cost_ms": round(table["remote streamed"]["first_text_ms"]
                                   - statistics.median(upstream) * 1000, 1),
        "first_sentence_generation_ms": round((first_sentence_words - 1) * word_s * 1000, 1),
        "guardrail_check_per_sentence_ms": round(statistics.median(checks) * 1000, 1),
    }


if __name__ == "__main__":
    main("streaming", run)
