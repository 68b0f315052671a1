"""One workspace: every entry point logs to the `llmops-chatbot` experiment (evaluation to its own), `mlflow run`
included; without MLFLOW_TRACKING_URI the store is the checkout's, whatever the working directory; loading a
model from a store that lacks it says what to export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from chatbot_model.config import PROJECT_ROOT, configure_mlflow, default_tracking_uri, load_settings
from chatbot_model.errors import NotFound
from chatbot_model.lifecycle.workspace import MOVED_TAG, adopt_project_run, load_model, step_experiment

ROOT = Path(__file__).resolve().parents[1]
NAME = "llmops-chatbot"


def test_without_a_tracking_uri_the_store_is_the_checkouts_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    elsewhere = tmp_path / "notebooks-elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_tracking_uri() == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    assert load_settings().tracking_uri == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert load_settings().tracking_uri == "sqlite:///other.db"


def test_loading_from_a_store_without_the_model_says_what_to_export(tmp_path):
    with pytest.raises(NotFound) as caught:
        load_model("models:/llmops-chatbot@production")
    message = str(caught.value)
    assert f"the store sqlite:///{tmp_path / 'mlflow.db'} has no registered model 'llmops-chatbot'" in message
    assert f"export MLFLOW_TRACKING_URI={default_tracking_uri()}" in message


def test_experiments_default_to_the_project_and_evaluation_apart(monkeypatch):
    settings = load_settings()
    assert (step_experiment(settings, "chat"), step_experiment(settings, "evaluate")) == \
        ("llmops-chatbot", "llmops-chatbot-eval")
    experiment_id = configure_mlflow(settings)
    assert MlflowClient().get_experiment(experiment_id).name == "llmops-chatbot"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert load_settings().experiment_name == "mine"


def test_a_run_in_default_is_adopted_into_the_project_experiment(monkeypatch):
    client = MlflowClient()
    stub = client.create_run("0", run_name="stub")
    client.log_param(stub.info.run_id, "name", NAME)
    monkeypatch.setenv("MLFLOW_RUN_ID", stub.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")
    new = adopt_project_run("evaluate", load_settings())
    run = client.get_run(new)
    assert client.get_experiment(run.info.experiment_id).name == "llmops-chatbot-eval"
    assert run.data.params == {"name": NAME}
    assert client.get_run(stub.info.run_id).data.tags[MOVED_TAG] == f"llmops-chatbot-eval/{new}"
    assert os.environ["MLFLOW_RUN_ID"] == new
    # an experiment chosen by the caller is kept
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", run.info.experiment_id)
    assert adopt_project_run("evaluate", load_settings()) is None


@pytest.mark.slow
def test_mlflow_run_entry_point_logs_to_the_project_experiment(tmp_path):
    """`mlflow run . -e promote_model` with no experiment: the step's run (params, promoted version) is in
    `llmops-chatbot`; the run MLflow created in Default is empty but for a tag saying where the step went."""
    client = MlflowClient()
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source="file:///tmp/model-0")
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATBOT_", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([str(bindir / "mlflow"), "run", str(ROOT), "-e", "promote_model", "--env-manager", "local",
                           "-P", f"name={NAME}", "-P", "stage=Staging"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    project = client.get_experiment_by_name("llmops-chatbot")
    (run,) = client.search_runs([project.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["promoted_version"] == "1"
    assert run.data.params["stage"] == "Staging"  # the -P parameters came along
    (stub,) = client.search_runs(["0"])
    assert stub.data.tags[MOVED_TAG] == f"llmops-chatbot/{run.info.run_id}" and not stub.data.metrics
