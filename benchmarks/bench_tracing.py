"""Benchmark of what tracing costs (not a test): pyfunc `predict` traced vs untraced, in one process.

    python benchmarks/bench_tracing.py [--quick]

A model is logged, registered and loaded from a throw-away sqlite store (as `bench_pyfunc.py` does); the loaded
model's service answers with tracing on and off, alternated run by run so machine noise hits both alike:
- single: one question per `predict`, p50 and p95 per call;
- batch: one `predict` of N questions, questions/s (median of the runs).
Tracing on is the default pipeline (bounded queue, background exporter, MLflow async logging on). After the timed
runs the trace pipeline's counts (written, dropped, pending) and the time to drain the backlog are reported.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from common import main, questions, stats_ms

os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "true"


def run(quick: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    os.chdir(tmp)
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", CHATBOT_INDEX_DIR=str(tmp / "index"),
                      CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp / 'feedback.db'}", CHATBOT_TRACING="true")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        os.environ.pop(key, None)
    import mlflow
    import pandas as pd

    from chatbot_model.tracing import writer as tracing
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register

    version = log_and_register(load_settings(), "llmops-chatbot")
    model = mlflow.pyfunc.load_model(version.version_uri)
    service = model.unwrap_python_model().service
    traced = service.settings
    untraced = traced.model_copy(update={"tracing": False})
    qs = questions()
    n_batch = 300 if quick else 1000
    batch_qs = (qs * (n_batch // len(qs) + 1))[:n_batch]
    rounds = 2 if quick else 4
    singles_per_round = 60 if quick else 150

    def predict(rows):
        return model.predict(pd.DataFrame({"question": rows}))

    predict(qs[:8])
    single = {"off": [], "on": []}
    batch = {"off": [], "on": []}
    modes = {"off": untraced, "on": traced}
    for r in range(rounds):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        for i, q in enumerate(qs[:singles_per_round]):
            for mode in (order if i % 2 == 0 else order[::-1]):
                service.settings = modes[mode]
                t = time.perf_counter()
                predict([q])
                single[mode].append(time.perf_counter() - t)
        for mode in order:
            service.settings = modes[mode]
            t = time.perf_counter()
            out = predict(batch_qs)
            batch[mode].append(n_batch / (time.perf_counter() - t))
            assert (out["error"] == "").all()
    service.settings = traced
    during = tracing.stats()
    t = time.perf_counter()
    drained = tracing.flush(600)
    drain_s = time.perf_counter() - t
    after = tracing.stats()
    single_ms = {mode: stats_ms(v) for mode, v in single.items()}
    qps = {mode: round(statistics.median(v), 1) for mode, v in batch.items()}
    stored = len(mlflow.search_traces(max_results=100_000, return_type="list"))
    return {
        "single_predict_ms": single_ms,
        "single_p50_cost_ms": round(single_ms["on"]["p50"] - single_ms["off"]["p50"], 2),
        "batch_questions_per_s": qps, "batch_size": n_batch,
        "batch_cost_share": round(1 - qps["on"] / qps["off"], 3),
        "batch_runs_q_per_s": {m: [round(x, 1) for x in v] for m, v in batch.items()},
        "pipeline_when_timing_ended": during, "pipeline_after_drain": after,
        "drain_s": round(drain_s, 1), "drained": drained, "traces_in_store": stored,
    }


if __name__ == "__main__":
    main("tracing", run)
