"""A first run that talks: the Makefile's install steps say what they do and how long they took (pip's own
progress), `make serve-model` takes PORT and HOST, the index build speaks before its first batch, static files
have their own /metrics label, and evaluating the version already in Production suggests no promotion."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from chatbot_model.cli.main import main
from chatbot_model.config import load_settings
from chatbot_model.lifecycle import loop
from chatbot_model.lifecycle.evaluation import Evaluation
from chatbot_model.server import create_app
from chatbot_model.server.backends import ServiceBackend

ROOT = Path(__file__).resolve().parents[1]


def make_n(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is not installed (apt-get install make)", pytrace=False)
    return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_serve_model_takes_port_and_host():
    assert "-p 5001 --host 127.0.0.1" in make_n("serve-model")
    assert "-p 5009 --host 0.0.0.0" in make_n("serve-model", "PORT=5009", "HOST=0.0.0.0")


def test_install_steps_say_what_they_do_with_pips_progress(tmp_path):
    out = make_n("install", f"VENV={tmp_path / 'venv'}")
    assert "--quiet" not in out
    assert 'echo "==> installing torch 2.13.0' in out and "pip install torch==2.13.0" in out
    assert out.count("==> done in") >= 3  # the virtualenv, pip, torch, the project: each timed


def test_the_index_build_speaks_before_its_first_batch(tmp_path, capsys):
    from chatbot_model.retrieval.rag import RAGPipeline

    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps([{"id": "a", "title": "A", "text": "MLflow tracks runs. " * 5},
                                {"id": "b", "title": "B", "text": "Models are served with pyfunc. " * 5}]))
    RAGPipeline(load_settings()).load_or_build(docs, progress=True)
    err = capsys.readouterr().err
    said, ready, bar = err.index("embedding "), err.index("embedder ready"), err.index("embedding:")
    assert said < ready < bar and "in 1 batches; loading the embedder" in err


def test_static_files_have_their_own_metrics_label():
    settings = load_settings(feedback_db_url="")
    service = type("S", (), {"describe": lambda self: {}})()
    with TestClient(create_app(settings, backend=ServiceBackend(settings, service=service))) as client:
        assert client.get("/static/app.js").status_code == 200
        metrics = client.get("/metrics").text
    assert 'endpoint="/static",method="GET",status="200"' in metrics
    assert 'endpoint="unmatched",method="GET",status="200"' not in metrics


@pytest.mark.parametrize("production, said", [("1", "already serves as Production: nothing to promote"),
                                              (None, "next: llmops-chatbot promote-model")])
def test_evaluating_the_production_version_suggests_no_promotion(monkeypatch, production, said):
    client = MlflowClient()
    client.create_registered_model("llmops-chatbot")
    client.create_model_version("llmops-chatbot", source="file:///tmp/model")
    if production:
        client.set_registered_model_alias("llmops-chatbot", "production", production)
    report = loop.EvaluationReport(model_uri="models:/llmops-chatbot/1", run_id="r1", evaluation=Evaluation({}),
                                   name="llmops-chatbot", version="1")
    monkeypatch.setattr(loop, "evaluate_model", lambda *a, **k: report)
    out = CliRunner().invoke(main, ["evaluate", "--model-uri", "models:/llmops-chatbot/1", "--genai", "false"])
    assert out.exit_code == 0, out.output
    assert "PASSED" in out.output and said in out.output
