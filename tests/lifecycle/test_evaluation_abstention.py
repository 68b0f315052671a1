"""The off-topic part of the golden set and the two abstention metrics of the gate."""

from __future__ import annotations

import json

import pytest

from chatbot_model.lifecycle.evaluation import GOLDEN_DIR, THRESHOLDS, GoldenSet, evaluate

RETRIEVAL = [{"question": f"on-topic {i}", "relevant_ids": ["doc"], "facts": ["fact"]} for i in range(40)]
OFFTOPIC = [f"off-topic {i}" for i in range(40)]


def golden() -> GoldenSet:
    return GoldenSet(retrieval=RETRIEVAL, toxic=["toxic"], benign=["benign"], offtopic=OFFTOPIC)


def predictor(abstain: set[str], blocked: set[str] = frozenset(), with_column: bool = True):
    """A model that answers every question with the relevant document, except the ones it abstains on."""

    def predict(questions):
        rows = []
        for q in questions:
            row = {"question": q, "answer": "" if q in abstain else "the fact [1].",
                   "blocked": q in blocked or q == "toxic",
                   "sources": [] if q in abstain else [{"id": "doc", "title": "t", "source": "", "score": 0.5}]}
            if with_column:
                row["abstained"] = q in abstain
            rows.append(row)
        return rows

    return predict


def test_abstention_metrics_count_off_topic_declined_and_on_topic_answered():
    abstain = set(OFFTOPIC[:38]) | {RETRIEVAL[0]["question"]}
    result = evaluate(predictor(abstain, blocked={OFFTOPIC[38]}), golden(), latency_sample=2)
    assert result.metrics["offtopic_abstention"] == pytest.approx(39 / 40)  # abstained or blocked
    assert result.metrics["ontopic_answer_rate"] == pytest.approx(39 / 40)
    assert result.passed, result.failures
    assert [d["abstained"] for d in result.details][:2] == [True, False]


def test_the_gate_fails_a_model_that_answers_off_topic_questions_or_abstains_too_often():
    result = evaluate(predictor(set(OFFTOPIC[:37])), golden(), latency_sample=2)
    assert result.failures == ["offtopic_abstention 0.925 (needs >= 0.95)"]
    result = evaluate(predictor(set(OFFTOPIC) | {r["question"] for r in RETRIEVAL[:2]}), golden(), latency_sample=2)
    assert result.failures == ["ontopic_answer_rate 0.950 (needs >= 0.97)"]


def test_a_model_without_the_abstained_column_never_abstains():
    """Versions logged before abstention existed return no `abstained`: they are scored, and fail the gate."""
    result = evaluate(predictor(set(), with_column=False), golden(), latency_sample=2)
    assert result.metrics["offtopic_abstention"] == 0 and result.metrics["ontopic_answer_rate"] == 1
    assert any(f.startswith("offtopic_abstention") for f in result.failures)


def test_shipped_offtopic_set_is_large_varied_and_disjoint_from_the_on_topic_questions():
    rows = [json.loads(line) for line in (GOLDEN_DIR / "offtopic.jsonl").read_text().splitlines() if line.strip()]
    shipped = GoldenSet.load()
    assert len(shipped.offtopic) == len(rows) >= 40
    assert {r["kind"] for r in rows} == {"general", "chitchat", "gibberish", "near-miss"}
    assert len(set(shipped.offtopic)) == len(shipped.offtopic)
    on_topic = {r["question"].lower() for r in shipped.retrieval} | {q.lower() for q in shipped.benign}
    assert not on_topic & {q.lower() for q in shipped.offtopic}
    assert THRESHOLDS["offtopic_abstention"] == (">=", 0.95) and THRESHOLDS["ontopic_answer_rate"] == (">=", 0.97)
