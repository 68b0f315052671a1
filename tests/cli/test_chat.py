"""The chat loop driven through stdin, as a user (or a pipe) drives it."""

import io
import os
import subprocess
import sys

import mlflow
import pytest

from chatbot_model.cli.chat import run_chat
from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.pipeline.service import LLMService
from tests.helpers import DOCS


@pytest.fixture
def service(index_dir):
    settings = load_settings(docs_path=DOCS, guardrail_backend="embedded")
    configure_mlflow(settings)
    return LLMService.from_settings(settings), settings


@pytest.mark.slow  # the CLI as a subprocess
def test_cli_chat_over_a_pipe_answers_takes_feedback_and_quits(index_dir, tmp_path):
    env = {**os.environ, "CHATBOT_GUARDRAIL_BACKEND": "embedded"}
    script = "How do I promote a model version to Production?\nn\nq\n"
    proc = subprocess.run([sys.executable, "-m", "chatbot_model.cli.main", "chat"], input=script, text=True,
                          capture_output=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "guardrail: embedded" in out and "providers: openai (OPENAI_API_KEY is not set)" in out
    assert "bot> " in out and "[1] " in out and "route=gpt provider=local model=extractive-v1" in out
    assert "promote" in out.split("bot> ", 1)[1].split("\n", 1)[0].lower()
    assert ("feedback: hint 'Answer in a helpful, concise, and knowledge-sharing way' -> "
            "'Be more factual, detailed, and knowledge-grounded' | bias_towards_35 0.30 -> 0.40") in out
    assert "bye (1 turns)" in out and "Traceback" not in proc.stderr


def test_end_of_input_quits_cleanly_and_the_session_is_one_mlflow_run(service):
    svc, settings = service
    stream = io.StringIO("What is an MLflow alias?\ny\nHow do I serve the model?\n\n")
    assert run_chat(svc, settings, stream) == 2
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs.iloc[0]["tags.kind"] == "chat-session"
    client = mlflow.MlflowClient()
    run_id = runs.iloc[0]["run_id"]
    assert [m.value for m in client.get_metric_history(run_id, "feedback")] == [1.0, 0.0]
    assert len(client.get_metric_history(run_id, "latency_ms")) == 2
    assert runs.iloc[0]["params.guardrail_backend"] == "embedded"


def test_bad_input_is_explained_and_the_loop_goes_on(service, capsys):
    svc, settings = service
    stream = io.StringIO("\n" + "x" * 5000 + "\nWhat is an alias?\nmaybe\nn\nq\n")
    assert run_chat(svc, settings, stream) == 1
    out = capsys.readouterr().out
    assert "error: question is 5000 characters long; the limit is 4000" in out
    assert "please answer y, n, or press Enter to skip" in out
    assert "bias_towards_35 0.30 -> 0.40" in out


def test_toxic_question_shows_the_guardrail_verdict(service, capsys):
    svc, settings = service
    run_chat(svc, settings, io.StringIO("You are a worthless idiot and I will hurt you\n\nq\n"))
    out = capsys.readouterr().out
    assert "blocked by the input guardrail (embedded:" in out and "route=blocked" in out
