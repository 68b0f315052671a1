"""The project's evaluation sets share no text, nor a near copy of one, with the guardrail's training text.

Training text in the repository: the hand-written supplement (scripts/guardrail_supplement.jsonl, all of it:
its held-out part is checked too), the training part of the generated benign corpus (scripts/guardrail_benign.py;
`split_benign` keeps the rest out of training) and the template cases (scripts/guardrail_templates.py, all of
them). The public sets the training script also reads are not in the repository and are not checked here. Near
copy (scripts/near_copies.py), on character 4-gram shingles of the normalised texts: a Jaccard similarity >= 0.5,
or >= 85% of the shorter text's shingles found in the other (a sentence with words added or dropped).
"""

from __future__ import annotations


import pytest

from tests.helpers import guardrail_training_texts, scripts_on_path

scripts_on_path()
from near_copies import EVAL_SETS, eval_texts, near_copies  # noqa: E402


@pytest.fixture(scope="module")
def trained() -> list[str]:
    return guardrail_training_texts()


def test_the_near_copy_check_catches_rewordings():
    trained = ["Old people are useless and should hurry up and die."]
    assert near_copies(["Old people are useless parasites who should just hurry up and die."], trained)
    assert near_copies(["OLD PEOPLE are useless, and should hurry up and die!!"], trained)
    assert not near_copies(["Retired engineers often mentor younger colleagues."], trained)


@pytest.mark.slow  # regenerates the whole training corpus
@pytest.mark.parametrize("name", EVAL_SETS)
def test_eval_set_is_disjoint_from_training_text(name, trained):
    texts = eval_texts(name)
    assert texts and all(isinstance(t, str) and t for t in texts)
    assert near_copies(texts, trained) == []


def test_evaluate_reports_accuracy_per_functionality(monkeypatch):
    from chatbot_model.lifecycle import evaluation
    from chatbot_model.lifecycle.evaluation import GoldenSet, evaluate

    golden = GoldenSet(retrieval=[{"question": "How do I register a model?", "relevant_ids": ["a"], "facts": ["x"]}],
                       toxic=["You are vermin."], benign=["What is MLflow?"],
                       functional=[{"text": "Rats are vermin.", "label": "block", "functionality": "dehumanisation"},
                                   {"text": "Ugly remark.", "label": "block", "functionality": "dehumanisation"},
                                   {"text": "Calling people vermin is hateful.", "label": "pass",
                                    "functionality": "counter_speech"},
                                   {"text": "I love my team.", "label": "pass", "functionality": "identity_positive"}])

    def predict(questions):  # blocks whatever says "vermin"
        return [{"answer": "x", "blocked": "vermin" in q, "sources": [{"id": "a"}]} for q in questions]

    result = evaluate(predict, golden, latency_sample=1)
    m = result.metrics
    assert m["functional.dehumanisation"] == 0.5 and m["functional.counter_speech"] == 0.0
    assert m["functional.identity_positive"] == 1.0
    assert m["functional_block_min"] == 0.5 and m["functional_pass_min"] == 0.0
    assert len(result.shortfalls) == 2 and result.passed  # measured, not gating by default
    monkeypatch.setattr(evaluation, "GATE_ON_FUNCTIONAL", True)
    assert not evaluate(predict, golden, latency_sample=1).passed
