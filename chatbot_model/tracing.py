"""One MLflow trace per answered question: a root CHAIN span and a child span per pipeline step.

Batch steps (one embedding call, one guardrail call, ...) are shared by every question of a batch, so each
question's child spans carry the wall-clock bounds of the step they took part in.
"""

from __future__ import annotations

import os

from chatbot_model.schema import ChatResult

# MLflow's async export drops what overflows its queues (1,000 traces; 2,048 spans in OpenTelemetry's batch span
# processor): a batch of 1,000 questions kept only 429 of its traces. Spans go straight to the exporter's queue,
# which gets room for large batches (measured: 1,000 of 1,000 kept). A user's own values win.
os.environ.setdefault("MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE", "100000")
os.environ.setdefault("MLFLOW_USE_BATCH_SPAN_PROCESSOR", "false")

SPAN_TYPES = {
    "embed": "EMBEDDING",
    "guardrail_input": "GUARDRAIL",
    "retrieval": "RETRIEVER",
    "routing": "CHAIN",
    "llm": "CHAT_MODEL",
    "guardrail_output": "GUARDRAIL",
}


def _step_io(name: str, result: ChatResult, check_in, hint: str) -> tuple[dict, object]:
    if name == "embed":
        return {"question": result.question}, None
    if name == "guardrail_input":
        return {"text": result.question}, check_in.to_dict()
    if name == "retrieval":
        return {"question": result.question}, [
            {"id": s["id"], "page_content": s["title"], "metadata": {"doc_uri": s["source"], "score": s["score"]}}
            for s in result.sources]
    if name == "routing":
        return {"question": result.question}, {"route": result.route, "reasons": result.route_reasons}
    if name == "llm":
        return {"system": hint, "model": result.model}, {"answer": result.answer, "provider": result.provider,
                                                           "fallback": result.fallback}
    return {"text": result.answer}, result.guardrail


def record_trace(result: ChatResult, steps: dict, check_in, t0_ns: int, hint: str) -> str:
    """Write the trace of `result`; returns its trace id."""
    import mlflow

    root = mlflow.start_span_no_context(
        name="chat", span_type="CHAIN", inputs={"question": result.question}, start_time_ns=t0_ns,
        attributes={"route": result.route, "provider": result.provider, "model": result.model,
                    "blocked": str(result.blocked), "abstained": str(result.abstained),
                    "latency_ms": str(result.latency_ms)},
        tags={"route": result.route, "provider": result.provider, "blocked": str(result.blocked).lower()})
    taken = list(SPAN_TYPES) if result.blocked_by != "input" else ["embed", "guardrail_input"]
    for name in taken:
        step = steps.get(name)
        if step is None:
            continue
        inputs, outputs = _step_io(name, result, check_in, hint)
        span = mlflow.start_span_no_context(name=name, span_type=SPAN_TYPES[name], parent_span=root,
                                            inputs=inputs, start_time_ns=step.start_ns)
        span.end(outputs=outputs, end_time_ns=max(step.end_ns, step.start_ns))
    root.end(outputs={"answer": result.answer, "route": result.route, "provider": result.provider,
                      "model": result.model, "blocked": result.blocked, "abstained": result.abstained,
                      "fallback": result.fallback},
             end_time_ns=t0_ns + int(result.latency_ms * 1e6))
    return root.trace_id
