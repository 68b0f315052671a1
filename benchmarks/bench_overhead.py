"""Benchmark 1: our pipeline overhead per single request, everything but a remote LLM.

Default config (guardrail `auto` -> embedded offline, ONNX embedder, flat index, `local` answerer), shipped
corpus, one distinct question per request (a counter is appended to each question text, so the guardrail's policy
encoder, which remembers the texts it has scored, sees every question for the first time). Reports `LLMService.answer` end to end (tracing off, and on: one MLflow
trace per request into a sqlite store) and each step alone, timed side by side in rotating order.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from common import build_service, main, questions, rotate, stats_ms


def run(quick: bool) -> dict:
    from chatbot_model.pipeline.service import build_prompt

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    service = build_service(tmp)
    traced = build_service(tmp, tracing=True)
    if traced.settings.tracing:
        from chatbot_model.config import configure_mlflow

        configure_mlflow(traced.settings)
    qs = questions(120 if quick else None)
    rag, guard, local = service.rag, service.guardrail, service.providers["local"]
    state: dict = {}

    def embed(q):
        state["v"] = rag.encode_queries([q])

    def guard_in(q):
        guard.check_many([q], vectors=state["v"])

    def search(q):
        state["s"] = rag.search(state["v"])[0]

    def route_prompt(q):
        service.router.route(q)
        build_prompt(q, state["s"])

    def answer_local(q):
        from chatbot_model.contract import CompletionRequest

        req = CompletionRequest(system="", prompt="", question=q, sources=state["s"], model="",
                                question_vector=state["v"][0])
        state["c"] = local.complete(req)

    def guard_out(q):
        service._check_answers({0: state["c"]})

    steps = {"1 embed query": embed, "2 guardrail in": guard_in, "3 search": search,
             "4 route + prompt": route_prompt, "5 local answer": answer_local, "6 guardrail out": guard_out}

    counter = itertools.count()

    def unseen(q: str) -> str:
        return f"{q} [{next(counter)}]"

    totals = rotate({"answer (tracing off)": lambda q: service.answer(unseen(q)),
                     "answer (tracing on)": lambda q: traced.answer(unseen(q))}, qs, repeats=1 if quick else 2)
    import time

    per_step = {name: [] for name in steps}
    for q in map(unseen, qs):
        for name, fn in steps.items():
            started = time.perf_counter()
            fn(q)
            per_step[name].append(time.perf_counter() - started)
    return {"questions": len(qs), "guardrail": guard.backend, "embedder": type(rag.embedder).__name__,
            "index": rag.manifest.get("index_type"), "answer_ms": {k: stats_ms(v) for k, v in totals.items()},
            "steps_ms": {k: stats_ms(v) for k, v in per_step.items()},
            "sum_of_step_medians_ms": round(sum(stats_ms(v)["p50"] for v in per_step.values()), 3)}


if __name__ == "__main__":
    main("overhead", run)
