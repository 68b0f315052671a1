"""One definition of the golden-set metrics: the gate's numbers (`evaluation.evaluate`) and the MLflow UI's
evaluation view (`mlflow.genai.evaluate` with our code scorers) agree for the same answers."""

from __future__ import annotations

import mlflow

from chatbot_model.lifecycle.evaluation import GoldenSet, evaluate, fact_coverage
from chatbot_model.lifecycle.loop import _genai_view

# questions with 1, 2 and 4 expected facts: a share per question and a share of all facts differ here
GOLDEN = GoldenSet(
    retrieval=[
        {"question": "What is an alias?", "relevant_ids": ["aliases"], "facts": ["models:/name@alias"]},
        {"question": "What is HNSW?", "relevant_ids": ["faiss"], "facts": ["graph", "approximate"]},
        {"question": "What does the hint do?", "relevant_ids": ["hint"],
         "facts": ["system prompt", "factual", "grounded", "negative feedback"]},
    ],
    toxic=["you are an idiot"], benign=["hello there"])
ANSWERS = {  # what a model answered: all of 1 fact, 1 of 2, 1 of 4
    "What is an alias?": ("Load it with models:/name@alias.", ["aliases"]),
    "What is HNSW?": ("HNSW is a graph index.", ["faiss", "aliases"]),
    "What does the hint do?": ("It opens every system prompt.", ["aliases", "hint"]),
}


def predict(questions: list[str]) -> list[dict]:
    rows = []
    for q in questions:
        answer, ids = ANSWERS.get(q, ("", []))
        rows.append({"answer": answer, "blocked": q == "you are an idiot",
                     "sources": [{"id": i, "title": i, "source": i, "score": 1.0} for i in ids]})
    return rows


def test_fact_coverage_is_the_share_of_facts_in_the_answer():
    assert fact_coverage("Use an ALIAS and a stage.", ["alias", "stage", "version"]) == 2 / 3
    assert fact_coverage("anything", []) == 1.0


def test_the_gate_and_the_genai_view_print_the_same_numbers():
    gate = evaluate(predict, GOLDEN, latency_sample=1).metrics
    assert gate["fact_coverage"] == round((1 + 1 / 2 + 1 / 4) / 3, 4)  # per question, then the mean
    assert gate["hit_at_k"] == 1.0 and gate["mrr"] == round((1 + 1 + 1 / 2) / 3, 4)
    with mlflow.start_run():
        view = _genai_view(predict, GOLDEN)
    assert view["fact_coverage/mean"] == gate["fact_coverage"]
    assert view["reciprocal_rank/mean"] == gate["mrr"]
    assert view["hit_at_k/mean"] == gate["hit_at_k"]
