"""`evaluate` reports the user-phrased held-out metrics, and the promotion comparison refuses a version that
regresses them beyond the tolerance."""

from chatbot_model.lifecycle.evaluation import TOLERANCE, GoldenSet, compare, evaluate

USERS = [{"question": "promte latest verison to prodution", "relevant_ids": ["promote"], "key_terms": ["promote_model"]},
         {"question": "turn off tracing", "relevant_ids": ["tracing"], "key_terms": ["CHATBOT_TRACING=false"]},
         {"question": "use my own docs", "relevant_ids": ["docs"], "key_terms": ["build-index"]},
         {"question": "what port does it use", "relevant_ids": ["ports"], "key_terms": ["8000"]}]


def golden() -> GoldenSet:
    return GoldenSet(retrieval=[{"question": "q", "relevant_ids": ["x"], "facts": []}], toxic=["t"], benign=["b"],
                     user_questions=USERS)


def test_evaluate_reports_hit_answered_and_key_terms_of_the_held_out_user_questions():
    replies = {"promte latest verison to prodution": ("Run llmops-chatbot promote_model [1].", ["x", "promote"], False),
               "turn off tracing": ("Tracing is one trace per request [1].", ["tracing"], False),  # no key term
               "use my own docs": ("", [], True),  # declined although covered
               "what port does it use": ("The server uses port 8000 [1].", ["a", "b", "c", "ports"], False)}

    def predict(questions):
        rows = []
        for q in questions:
            answer, ids, abstained = replies.get(q, ("a", ["x"], False))
            rows.append({"answer": answer, "blocked": False, "abstained": abstained,
                         "sources": [{"id": i} for i in ids]})
        return rows

    m = evaluate(predict, golden(), latency_sample=1).metrics
    assert m["user_hit_at_3_heldout"] == 0.5  # the 4th has its document 4th
    assert m["user_answered_heldout"] == 0.75
    assert m["user_key_term_heldout"] == 0.5


def test_the_comparison_refuses_a_regression_of_the_user_metrics_beyond_the_tolerance():
    production = {"user_hit_at_3_heldout": 0.95, "user_answered_heldout": 0.92, "user_key_term_heldout": 0.80}
    same_within = {**production, "user_key_term_heldout": 0.80 - TOLERANCE / 2}
    assert compare(same_within, production)[1] == []
    worse = {**production, "user_answered_heldout": 0.85}
    regressions = compare(worse, production)[1]
    assert len(regressions) == 1 and regressions[0].startswith("user_answered_heldout 0.850 vs 0.920")


def test_the_shipped_golden_set_carries_only_the_held_out_user_questions():
    users = GoldenSet.load().user_questions
    assert len(users) >= 60 and all(u["split"] == "held-out" and u["key_terms"] for u in users)
