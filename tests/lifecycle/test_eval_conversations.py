"""The conversation eval set and the follow-up metrics of `evaluate`: the shipped set's shape, the metrics'
definition on a scripted model, and the real model's numbers on it (with history far above without)."""

import json

import pandas as pd

from chatbot_model.config import load_settings
from chatbot_model.lifecycle.evaluation import GOLDEN_DIR, GoldenSet, evaluate, followup_metrics
from tests.helpers import DOCS

CONVERSATIONS = [json.loads(line) for line in (GOLDEN_DIR / "conversations.jsonl").read_text().splitlines()]


def test_the_shipped_set_has_30_plus_two_and_three_turn_conversations_with_a_held_out_part():
    doc_ids = {d["id"] for d in json.loads(DOCS.read_text())}
    assert len(CONVERSATIONS) >= 30
    assert {len(c["turns"]) for c in CONVERSATIONS} == {2, 3}
    assert {c["split"] for c in CONVERSATIONS} == {"dev", "held-out"}
    held = [c for c in CONVERSATIONS if c["split"] == "held-out"]
    assert len(held) >= 10 and sum(len(c["turns"]) - 1 for c in held) >= 15
    assert len({c["id"] for c in CONVERSATIONS}) == len(CONVERSATIONS)
    for c in CONVERSATIONS:
        for turn in c["turns"]:
            assert turn["question"].strip() and set(turn["relevant_ids"]) <= doc_ids, (c["id"], turn)
    assert GoldenSet.load().conversations == CONVERSATIONS


def scripted(rows_for):
    calls = []

    def predict_turns(questions, histories):
        calls.append((list(questions), [list(h) for h in histories]))
        return [rows_for(q, h) for q, h in zip(questions, histories)]
    return predict_turns, calls


def test_followup_metrics_ask_turns_in_order_with_the_models_own_answers():
    convs = [{"id": "a", "split": "dev", "turns": [{"question": "Q1", "relevant_ids": ["x"]},
                                                   {"question": "and it?", "relevant_ids": ["y"]},
                                                   {"question": "and then?", "relevant_ids": ["z"]}]},
             {"id": "b", "split": "held-out", "turns": [{"question": "P1", "relevant_ids": ["p"]},
                                                        {"question": "that?", "relevant_ids": ["q"]}]}]
    wanted = {"and it?": "y", "and then?": "z", "that?": "q"}

    def rows_for(question, history):  # right only with history; "z" also needs the second turn in it
        hit = history and (question != "and then?" or len(history) == 4)
        return {"answer": f"A:{question}", "blocked": False,
                "sources": [{"id": wanted.get(question, "x") if hit else "nope"}]}

    predict_turns, calls = scripted(rows_for)
    m = followup_metrics(predict_turns, convs)
    assert m == {"followup_hit_at_3": 1.0, "followup_hit_at_3_no_history": 0.0,
                 "followup_hit_at_3_heldout": 1.0, "followup_hit_at_3_heldout_no_history": 0.0}
    assert calls[1][1][0] == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A:Q1"}]
    assert calls[2] == (["and then?"], [[{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A:Q1"},
                                         {"role": "user", "content": "and it?"},
                                         {"role": "assistant", "content": "A:and it?"}]])


def test_evaluate_reports_the_followup_metrics_only_with_predict_turns():
    golden = GoldenSet(retrieval=[{"question": "q", "relevant_ids": ["x"], "facts": []}], toxic=["t"], benign=["b"],
                       conversations=[{"id": "a", "split": "dev", "turns": [
                           {"question": "Q1", "relevant_ids": ["x"]}, {"question": "it?", "relevant_ids": ["x"]}]}])

    def predict(questions):
        return [{"answer": "a", "blocked": False, "sources": [{"id": "x"}]} for _ in questions]

    assert "followup_hit_at_3" not in evaluate(predict, golden, latency_sample=1).metrics
    m = evaluate(predict, golden, latency_sample=1, predict_turns=lambda qs, hs: predict(qs)).metrics
    assert m["followup_hit_at_3"] == 1.0 and "followup_hit_at_3_heldout" not in m


def test_the_default_model_resolves_follow_ups_better_with_history(index_dir):
    from chatbot_model.lifecycle.pyfunc import _PyfuncChatbot
    from chatbot_model.pipeline.service import LLMService

    settings = load_settings(index_dir=index_dir, guardrail_backend="embedded", feedback_db_url="", tracing=False)
    model = _PyfuncChatbot(LLMService.from_settings(settings))

    def predict_turns(questions, histories):
        return model.predict(None, pd.DataFrame({"question": questions, "history": histories})).to_dict("records")

    m = followup_metrics(predict_turns, CONVERSATIONS)
    # measured 0.82 / 0.72 without history (held-out 0.87 / 0.80). Dense-only retrieval measured 0.84 / 0.42
    # (0.87 / 0.47), hybrid retrieval 0.80 / 0.58 (0.87 / 0.67): each step finds more follow-ups from their own
    # words, and the abstention model's sentence feature declines fewer of them asked alone, so history adds
    # less. The bounds leave room for embedder runtimes, not for a rule that stops working
    assert m["followup_hit_at_3"] >= 0.78 and m["followup_hit_at_3_heldout"] >= 0.80
    assert m["followup_hit_at_3"] - m["followup_hit_at_3_no_history"] >= 0.06
    assert m["followup_hit_at_3_heldout"] > m["followup_hit_at_3_heldout_no_history"]
