"""A registry only the pipeline writes: `mlflow server --app-name basic-auth` on 127.0.0.1 (the k8s overlay's
setup: default_permission NO_PERMISSIONS, users granted by `llmops-chatbot registry-access`). The writer
registers and moves the alias; the serving pods' reader loads but cannot register, move the alias or touch the
model's experiment; it writes traces only to the traces experiment; a stranger reads nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.helpers import free_port, tracking_store

pytestmark = pytest.mark.slow
ADMIN = ("admin", "admin-password-123")
READER = ("chatbot-reader", "reader-password-123")
WRITER = ("pipeline-writer", "writer-password-123")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("basic-auth")
    ini = tmp / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{tmp / 'auth.db'}\n"
                   "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CHATBOT_"))},
           "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-0123456789"}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bindir / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1",
                                 "--backend-store-uri", tracking_store(tmp),
                                 "--artifacts-destination", str(tmp / "artifacts")],
                                env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "mlflow server exited:\n" + log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def as_user(monkeypatch, url: str, user: tuple[str, str]):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(url)


def test_reader_loads_writer_writes_stranger_nothing(auth_server, monkeypatch):
    from mlflow.exceptions import MlflowException

    from chatbot_model.cli.main import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    monkeypatch.setenv("MLFLOW_READER_PASSWORD", READER[1])
    monkeypatch.setenv("MLFLOW_WRITER_PASSWORD", WRITER[1])
    for _ in range(2):  # idempotent: the Job runs after every deploy
        result = CliRunner().invoke(main, ["registry-access"])
        assert result.exit_code == 0, result.output
    assert "chatbot-reader: registered_model:llmops-chatbot READ" in result.output

    writer = as_user(monkeypatch, auth_server, WRITER)
    models = writer.get_experiment_by_name("llmops-chatbot").experiment_id
    run = writer.create_run(models)
    version = writer.create_model_version("llmops-chatbot", f"runs:/{run.info.run_id}/model", run.info.run_id)
    writer.set_registered_model_alias("llmops-chatbot", "production", version.version)

    reader = as_user(monkeypatch, auth_server, READER)
    assert reader.get_model_version_by_alias("llmops-chatbot", "production").version == version.version
    for attempt in (lambda: reader.set_registered_model_alias("llmops-chatbot", "production", "1"),
                    lambda: reader.create_model_version("llmops-chatbot", "runs:/x/model", run.info.run_id),
                    lambda: reader.create_run(models),
                    lambda: reader.log_param(run.info.run_id, "model_code", "import os")):
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
            attempt()
    traces = reader.get_experiment_by_name("llmops-chatbot-traces").experiment_id
    reader.create_run(traces)  # traces and feedback go here: EDIT

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WRITER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER[1])
    mlflow.set_tracking_uri(auth_server)
    from chatbot_model.lifecycle.prompts import register_hint

    assert register_hint("Answer from the sources.").startswith("prompts:/llmops-chatbot-hint/")  # the pipeline

    stranger = as_user(monkeypatch, auth_server, ("nobody", "x"))
    with pytest.raises(MlflowException):
        stranger.get_registered_model("llmops-chatbot")
