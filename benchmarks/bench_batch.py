"""Benchmark 3: batch throughput, 1,000 distinct questions in one call vs one call per question.

`LLMService.answer_many` and the pyfunc (`_PyfuncChatbot.predict` on a DataFrame, the path of `mlflow models
serve` and `spark_udf` minus transport) against `answer` / one-row `predict` calls, in the same process, rounds in
alternating order. Default config, local answerer, tracing off (see the tracing-on row for its cost, and how
many of the batch's traces MLflow's async export stored after a flush). Also the wall time of a batch of 8 whose
provider takes 0.5 s a call (the fake OpenAI server of the tests): about one call's time when the calls run
concurrently, 8x when serialised (the test suite proves the concurrency with a barrier, not a clock).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import build_service, main, questions

SUFFIXES = ("", " Please be brief.", " Thanks!", " (asking for my team)")


def thousand() -> list[str]:
    base = questions()
    out = [q + s for s in SUFFIXES for q in base]
    return out[:1000]


def run(quick: bool) -> dict:
    import pandas as pd

    from chatbot_model.lifecycle.pyfunc import _PyfuncChatbot

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    service = build_service(tmp)
    model = _PyfuncChatbot(service)
    qs = thousand()
    singles = 100 if quick else 250
    rounds = 2 if quick else 3
    service.answer_many(qs[:50])  # warm up

    def batch_service():
        assert len(service.answer_many(qs)) == len(qs)

    def batch_pyfunc():
        assert len(model.predict(None, pd.DataFrame({"question": qs}))) == len(qs)

    def single_service():
        for q in qs[:singles]:
            service.answer(q)

    def single_pyfunc():
        for q in qs[:singles]:
            model.predict(None, pd.DataFrame({"question": [q]}))

    runs = {"answer_many (1000)": (batch_service, len(qs)), "pyfunc predict (1000 rows)": (batch_pyfunc, len(qs)),
            "answer one by one": (single_service, singles), "pyfunc predict one row at a time": (single_pyfunc, singles)}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = runs[name]
            started = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - started))
    med = {name: round(sorted(v)[len(v) // 2], 1) for name, v in rates.items()}
    out = {"questions": len(qs), "rounds": rounds, "questions_per_s_median": med,
           "questions_per_s_all": {k: [round(x, 1) for x in v] for k, v in rates.items()},
           "speedup answer_many / one by one": round(med["answer_many (1000)"] / med["answer one by one"], 2),
           "speedup pyfunc batch / one row": round(med["pyfunc predict (1000 rows)"] /
                                                   med["pyfunc predict one row at a time"], 2),
           "goal": ">= 250 questions/s and >= 3x one by one"}
    torch_service = build_service(tmp, embedding_backend="torch")  # the path before this work, for context
    torch_service.answer_many(qs[:20])
    started = time.perf_counter()
    for q in qs[:singles]:
        torch_service.answer(q)
    out["answer one by one, PyTorch embedder: questions/s"] = round(singles / (time.perf_counter() - started), 1)
    out["speedup answer_many / one by one with PyTorch"] = round(
        med["answer_many (1000)"] / out["answer one by one, PyTorch embedder: questions/s"], 2)
    out.update(slow_provider(tmp))
    if not quick:
        import mlflow

        from chatbot_model.config import configure_mlflow

        traced = build_service(tmp, tracing=True)
        configure_mlflow(traced.settings)
        started = time.perf_counter()
        results = traced.answer_many(qs)
        out["answer_many (1000), tracing on: questions/s"] = round(len(qs) / (time.perf_counter() - started), 1)
        started = time.perf_counter()
        mlflow.flush_trace_async_logging()
        out["answer_many (1000), tracing on: flush s"] = round(time.perf_counter() - started, 1)
        experiment = mlflow.get_experiment_by_name(traced.settings.experiment_name)
        stored = {t.info.trace_id for t in mlflow.search_traces(locations=[experiment.experiment_id],
                                                                 max_results=5000, return_type="list",
                                                                 include_spans=False)}
        out["answer_many (1000), tracing on: traces stored after the flush"] = len(
            {r.trace_id for r in results} & stored)
    return out


def slow_provider(tmp: Path, delay: float = 0.5, n: int = 8) -> dict:
    """Wall time of one call and of a batch of `n` with a provider answering after `delay` seconds."""
    from tests.fake_llm_server import FakeLLMServer

    with FakeLLMServer() as fake:
        service = build_service(tmp, openai_api_key="sk-bench", openai_base_url=fake.openai_base_url,
                                anthropic_api_key="sk-bench", anthropic_base_url=fake.anthropic_base_url,
                                provider_max_retries=0)
        service.answer_many([f"What is alias number {i}?" for i in range(n)])  # warm up the clients
        fake.delay = delay
        timings = {}
        for label, batch in (("one call", 1), (f"batch of {n}", n)):
            started = time.perf_counter()
            results = service.answer_many([f"What is model alias number {i}?" for i in range(batch)])
            timings[label] = round(time.perf_counter() - started, 2)
            assert {r.provider for r in results} <= {"openai", "anthropic"}, results[0].fallback
    return {f"{delay:g} s provider: wall s": timings,
            f"{delay:g} s provider: batch of {n} / one call": round(timings[f"batch of {n}"] / timings["one call"], 2)}


if __name__ == "__main__":
    main("batch", run)
