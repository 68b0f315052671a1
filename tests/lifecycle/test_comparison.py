"""Champion vs challenger on live feedback: the statistics, `feedback compare` on real ratings and real traces,
and the promotion gate's online rule."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from chatbot_model.cli.main import main
from chatbot_model.lifecycle.comparison import VersionStats, verdict, wilson, z_score
from chatbot_model.store.feedback import FeedbackStore
from tests.mlflow_state import forget_mlflow, reset_mlflow

NAME = "llmops-chatbot"


def rate(store: FeedbackStore, version: str, up: int, down: int) -> None:
    for i in range(up + down):
        store.record(trace_id=f"tr-{version}-{i}", rating="up" if i < up else "down", model_version=version)


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(8, 10)
    assert round(lo, 3) == 0.490 and round(hi, 3) == 0.943
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0.16 < hi < 0.17


@pytest.mark.parametrize("champion, challenger, outcome", [
    ((60, 40), (85, 15), "better"),
    ((85, 15), (60, 40), "worse"),
    ((55, 45), (60, 40), "not yet distinguishable"),   # |z| < 1.96
    ((5, 5), (20, 0), "not yet distinguishable"),      # too few champion ratings
])
def test_verdict_is_a_two_proportion_z_test_with_a_minimum_count(champion, challenger, outcome):
    a, b = VersionStats("1", up=champion[0], down=champion[1]), VersionStats("2", up=challenger[0], down=challenger[1])
    result = verdict(a, b, min_ratings=30)
    assert result.outcome == outcome, result
    assert z_score(*champion[:1], sum(champion), challenger[0], sum(challenger)) == pytest.approx(result.z)
    if outcome == "better":
        assert result.z > 1.96 and "significantly higher" in result.reason
    if champion == (5, 5):
        assert "needs 30 ratings" in result.reason and "version 1 has 10" in result.reason


@pytest.fixture
def client(monkeypatch):
    reset_mlflow(monkeypatch)
    yield MlflowClient()
    forget_mlflow()


def test_feedback_compare_reads_ratings_and_each_versions_traces(client, shipped_index, monkeypatch, tmp_path):
    """Two versions answer (real service, real traces tagged with the version), users rate them, the CLI tells
    them apart and reports blocks, abstentions and latency from each version's traces."""
    from tests.helpers import make_service, make_settings

    import os

    settings = make_settings(shipped_index, os.environ["MLFLOW_TRACKING_URI"], tmp_path, feedback_db_url="")
    service = make_service(settings)
    client.create_registered_model(NAME)
    for i in range(2):
        client.create_model_version(NAME, source=f"file:///tmp/model-{i}")
    client.set_registered_model_alias(NAME, "production", "1")
    client.set_registered_model_alias(NAME, "staging", "2")
    service.model_version = "1"
    service.answer_many(["How do I register a model?", "Who won the 1998 football world cup?"])
    service.model_version = "2"
    service.answer_many(["How do I register a model?", "What is MLflow tracking?", "You are a stupid idiot"])

    store = FeedbackStore(os.environ["CHATBOT_FEEDBACK_DB_URL"])
    rate(store, "1", 40, 40)
    rate(store, "2", 70, 10)
    monkeypatch.setenv("CHATBOT_EXPERIMENT_NAME", settings.experiment_name)
    out = CliRunner().invoke(main, ["feedback", "compare", "--name", NAME])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "champion version 1 vs challenger version 2" in lines[0]
    v1 = next(line.split() for line in lines if line.split()[:2] == ["1", "champion"])
    v2 = next(line.split() for line in lines if line.split()[:2] == ["2", "challenger"])
    assert v1[2:5] == ["40", "40", "50.0%"] and v2[2:5] == ["70", "10", "87.5%"]
    assert v1[6:9] == ["2", "0.0%", "50.0%"]    # answers, blocked, abstained (the football question)
    assert v2[6:9] == ["3", "33.3%", "0.0%"]    # the insult was blocked
    assert all(float(x) > 0 for x in v1[9:11] + v2[9:11])  # p50 and p95 latency from the traces
    assert "verdict: challenger better" in out.output

    out = CliRunner().invoke(main, ["feedback", "compare", "--name", NAME, "--champion", "2", "--challenger", "1",
                                    "--max-traces", "0"])
    assert out.exit_code == 0 and "verdict: challenger worse" in out.output


def test_feedback_compare_without_a_challenger_says_how_to_name_one(client):
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source="file:///tmp/model-0")
    client.set_registered_model_alias(NAME, "production", "1")
    out = CliRunner().invoke(main, ["feedback", "compare", "--name", NAME])
    assert out.exit_code == 1 and "has no alias 'staging': pass --challenger VERSION" in out.output


def test_the_gate_refuses_a_candidate_significantly_worse_online(client, tmp_path):
    import os

    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.gate import PromotionRefused
    from chatbot_model.lifecycle.registry import promote

    client.create_registered_model(NAME)
    for i in range(3):
        client.create_model_version(NAME, source=f"file:///tmp/model-{i}")
        client.set_model_version_tag(NAME, str(i + 1), "eval.status", "passed")
    settings = load_settings()
    promote(NAME, "Production", "1", settings=settings)
    store = FeedbackStore(os.environ["CHATBOT_FEEDBACK_DB_URL"])
    rate(store, "1", 80, 20)
    rate(store, "2", 45, 55)
    rate(store, "3", 83, 17)
    with pytest.raises(PromotionRefused, match="significantly worse than Production version 1 on live ratings"):
        promote(NAME, "Production", "2", settings=settings)
    assert str(client.get_registered_model(NAME).aliases["production"]) == "1"

    out = CliRunner().invoke(main, ["promote_model", "--name", NAME, "--stage", "Production", "--version", "2"])
    assert out.exit_code == 1 and "online verdict: candidate worse" in out.output

    passed = promote(NAME, "Production", "3", settings=settings)  # not distinguishable: the offline gate decides
    assert passed.version == "3" and any("online verdict: candidate not yet distinguishable" in line
                                         for line in passed.gate_lines)
    forced = promote(NAME, "Production", "2", settings=settings, force=True, reason="rollback drill")
    assert "live ratings" in forced.forced["promotion.gate_refusal"]
