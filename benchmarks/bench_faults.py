"""Provider faults under load, on loopback: the fake OpenAI/Anthropic server injects each fault and the real
`LLMService` (shipped knowledge base, local answerer as the last resort) answers.

    python benchmarks/bench_faults.py [--quick]

- hang: waves of concurrent requests whose remote providers never answer; every request must come back (the
  local answer) within the request budget, and threads, open connections and RSS must return to baseline.
- trickle: a reply at one byte per second is cut off by the total call limit.
- 500 storm: upstream calls per request with the circuit breaker (it opens after CHATBOT_BREAKER_FAILURES).
- 401: upstream calls over many requests (the provider is disabled after the first).
- Retry-After: the wait between a 429 and its retry.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOCS, RESULTS, ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.fake_llm_server import ANTHROPIC_PATH, OPENAI_PATH, FakeLLMServer, Reply  # noqa: E402

QUESTION = "How do I load a model by alias?"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def settle(condition, limit_s: float = 15.0) -> float:
    """Seconds until `condition` holds (or the limit)."""
    start = time.monotonic()
    while not condition() and time.monotonic() - start < limit_s:
        time.sleep(0.02)
    return round(time.monotonic() - start, 2)


def make_service(server: FakeLLMServer, tmp: Path, **overrides):
    from chatbot_model.config import load_settings
    from chatbot_model.pipeline.service import LLMService

    values = dict(openai_api_key="sk-bench", openai_base_url=server.openai_base_url, anthropic_api_key="sk-bench",
                  anthropic_base_url=server.anthropic_base_url, docs_path=DOCS, index_dir=tmp / "index",
                  guardrail_backend="embedded", tracing=False, feedback_db_url="")
    values.update(overrides)
    return LLMService.from_settings(load_settings(**values))


def timed_answers(service, n: int, concurrency: int) -> tuple[list[float], list]:
    def one(_):
        t0 = time.perf_counter()
        result = service.answer(QUESTION)
        return time.perf_counter() - t0, result

    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(n)))
    return [t for t, _ in out], [r for _, r in out]


def hang(server, tmp, waves: int, per_wave: int) -> dict:
    service = make_service(server, tmp, request_budget_s=3.0, local_reserve_s=0.5, provider_timeout_s=30,
                           breaker_failures=10_000)  # every request pays the hang: the worst case
    service.answer(QUESTION)  # warm up (clients, provider loop, embedder)
    settle(lambda: server.open_connections == 0)
    base = {"threads": threading.active_count(), "rss_mib": rss_mib()}
    rows = []
    for wave in range(waves):
        server.reset()
        server.queue(*[Reply.hang() for _ in range(2 * per_wave)])
        seconds, results = timed_answers(service, per_wave, per_wave)
        free_s = settle(lambda: server.open_connections == 0 and threading.active_count() == base["threads"])
        rows.append({"wave": wave + 1, "requests": per_wave, "local_answers": sum(r.provider == "local" for r in results),
                     "latency_s_p50": round(statistics.median(seconds), 2), "latency_s_max": round(max(seconds), 2),
                     "upstream_calls": len(server.requests), "threads_after": threading.active_count(),
                     "open_connections_after": server.open_connections, "settled_in_s": free_s, "rss_mib": rss_mib()})
    return {"budget_s": 3.0, "baseline": base, "waves": rows}


def trickle(server, tmp) -> dict:
    service = make_service(server, tmp, request_budget_s=6.0, local_reserve_s=0.5, provider_timeout_s=2.0,
                           provider_max_retries=0)
    service.answer(QUESTION)
    server.reset()
    server.queue(Reply.trickle(1.0), Reply.trickle(1.0))
    t0 = time.perf_counter()
    result = service.answer(QUESTION)
    return {"provider_timeout_s": 2.0, "seconds_to_answer": round(time.perf_counter() - t0, 2),
            "provider": result.provider, "fallback": result.fallback,
            "connections_closed_in_s": settle(lambda: server.open_connections == 0)}


def storm(server, tmp, n: int) -> dict:
    service = make_service(server, tmp, provider_max_retries=2)
    service.answer(QUESTION)
    server.reset()
    server.queue(*[Reply.error(500) for _ in range(10 * n)])
    results = [service.answer(QUESTION) for _ in range(n)]
    return {"requests": n, "upstream_calls_openai": len(server.requests_to(OPENAI_PATH)),
            "upstream_calls_anthropic": len(server.requests_to(ANTHROPIC_PATH)),
            "providers": sorted({r.provider for r in results}), "last_fallback": results[-1].fallback,
            "breaker_counts": {k: dict(p.breaker.counts) for k, p in service.providers.items() if p.breaker}}


def unauthorised(server, tmp, n: int) -> dict:
    service = make_service(server, tmp)
    server.reset()
    server.queue(*[Reply.error(401) for _ in range(2)])
    results = [service.answer(QUESTION) for _ in range(n)]
    return {"requests": n, "upstream_calls": len(server.requests), "last_fallback": results[-1].fallback,
            "health": service.describe()["providers"]}


def retry_after(server, tmp) -> dict:
    service = make_service(server, tmp, provider_max_retries=1)
    service.answer(QUESTION)
    server.reset()
    server.queue(Reply.error(429, retry_after=5), "after the wait")
    result = service.answer(QUESTION)
    first, second = server.requests
    return {"retry_after_s": 5, "waited_s": round(second.time - first.time, 2), "provider": result.provider}


def run(quick: bool = False) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer() as server:
        tmp = Path(tmp)
        out = {"hang": hang(server, tmp, 3, 10 if quick else 50), "trickle": trickle(server, tmp),
               "storm_500": storm(server, tmp, 20 if quick else 100), "auth_401": unauthorised(server, tmp, 20),
               "retry_after": retry_after(server, tmp)}
    return out


if __name__ == "__main__":
    import json

    result = run("--quick" in sys.argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
