"""HeuristicRouter: the documented rule, its reasons, feedback and bounds."""

import pytest

from chatbot_model.pipeline.router import HeuristicRouter


def test_short_factual_question_goes_to_gpt():
    decision = HeuristicRouter(0.3).route("What is an alias?")
    assert decision.name == "gpt" and decision.provider == "openai"
    assert any(r.startswith("score=") for r in decision.reasons)


def test_long_reasoning_question_goes_to_claude():
    question = ("Why would I choose HNSW over IVF for a one million chunk corpus, and how do I compare "
                "the recall and memory trade-offs step by step? What should I measure first?")
    decision = HeuristicRouter(0.3).route(question)
    assert decision.name == "claude" and decision.provider == "anthropic"
    assert "reasoning=1.00" in decision.reasons and "multipart=1.00" in decision.reasons


def test_bias_moves_borderline_questions_to_claude():
    question = "Explain how aliases work"
    assert HeuristicRouter(0.0).route(question).name == "gpt"
    assert HeuristicRouter(1.0).route(question).name == "claude"


def test_negative_feedback_raises_bias_positive_keeps_it_and_bounds_hold():
    router = HeuristicRouter(0.3)
    assert router.feedback(positive=False) == pytest.approx(0.4)
    assert router.feedback(positive=True) == pytest.approx(0.4)
    for _ in range(20):
        router.feedback(positive=False)
    assert router.bias_towards_35 == 1.0


def test_bias_out_of_bounds_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        HeuristicRouter(1.5)
