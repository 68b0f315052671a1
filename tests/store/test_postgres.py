"""Shared state on a real PostgreSQL server, configured as k8s/overlays/tracking-postgres configures it.

One PostgreSQL (Debian's binaries, tests/pg_server.py) on 127.0.0.1 with the overlay's databases (POSTGRES_DB and
its init SQL) and a password-protected user; one `mlflow server` started with the overlay's own arguments and
environment (read from the manifests: only host, port and the artifact directory are local); the feedback store
at the overlay's CHATBOT_FEEDBACK_DB_URL. On them: four processes writing ratings, and the registry lifecycle
(register, evaluate, promote, two `llmops-chatbot serve` processes serving the alias, their traces, ratings
attached to the traces as assessments, the adaptation state one server's ratings produce served by the other). The Alembic
migrations on PostgreSQL are in test_migrations.py.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT
from chatbot_model.cli.main import main
from chatbot_model.store.feedback import ASSESSMENT_NAME, FeedbackStore
from tests.helpers import ROOT, free_port, server_process, wait_until
from tests.mlflow_state import reset_mlflow
from tests.pg_server import PostgresServer, postgres_bin

pytestmark = pytest.mark.slow  # a PostgreSQL server, `mlflow server` and `llmops-chatbot serve` processes

OVERLAY = ROOT / "k8s" / "overlays" / "tracking-postgres"
NAME = "llmops-chatbot"
QUESTION = "Where does MLflow store runs by default?"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((OVERLAY / name).read_text()) if d]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def overlay() -> dict:
    """What the overlay runs: the tracking server's args and env, PostgreSQL's database and init SQL, the
    feedback URL of the wrapper and the model server."""
    mlflow_deploy = next(d for d in _docs("mlflow.yaml") if d["kind"] == "Deployment")
    server = next(c for c in mlflow_deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow")
    pg = next(d for d in _docs("postgres.yaml") if d["kind"] == "StatefulSet")
    pg_env = _env(pg["spec"]["template"]["spec"]["containers"][0])
    feedback_urls = {_env(c)["CHATBOT_FEEDBACK_DB_URL"] for d in _docs("patch-tracking-env.yaml")
                     for c in d["spec"]["template"]["spec"]["containers"]}
    assert len(feedback_urls) == 1, "the wrapper and the model server must share one feedback database"
    return {"command": server["command"] + server["args"], "env": _env(server), "database": pg_env["POSTGRES_DB"],
            "init_sql": (OVERLAY / "10-chatbot-feedback.sql").read_text(), "feedback_url": feedback_urls.pop(),
            "role_script": OVERLAY / "20-chatbot-role.sh", "auth_ini": (OVERLAY / "basic_auth.ini").read_text(),
            "serving_env": {k: v for d in _docs("patch-tracking-env.yaml") for c in d["spec"]["template"]["spec"]
                            ["containers"] for k, v in _env(c).items() if v is not None}}


CHATBOT_ROLE = ("chatbot", secrets.token_hex(12))  # the Secret's CHATBOT_DB_USER / CHATBOT_DB_PASSWORD
ADMIN_PASSWORD = secrets.token_hex(12)
READER = ("chatbot-reader", secrets.token_hex(12))
WRITER = ("pipeline-writer", secrets.token_hex(12))


def run_role_script(pg: PostgresServer, script: Path) -> None:
    """20-chatbot-role.sh as the image's entrypoint runs it (psql as the superuser, the Secret in the env)."""
    env = {**os.environ, "PATH": f"{pg.bin_dir}{os.pathsep}{os.environ['PATH']}", "PGHOST": "127.0.0.1",
           "PGPORT": str(pg.port), "PGPASSWORD": pg.password, "POSTGRES_USER": pg.user,
           "CHATBOT_DB_USER": CHATBOT_ROLE[0], "CHATBOT_DB_PASSWORD": CHATBOT_ROLE[1]}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def resolve(value: str, pg: PostgresServer) -> str:
    """A manifest value with the Secret's variables filled in and the in-cluster PostgreSQL at the test's."""
    value = value.replace("$(POSTGRES_USER)", pg.user).replace("$(POSTGRES_PASSWORD)", pg.password)
    value = value.replace("$(CHATBOT_DB_USER)", CHATBOT_ROLE[0]).replace("$(CHATBOT_DB_PASSWORD)", CHATBOT_ROLE[1])
    return value.replace("llmops-postgres:5432", f"127.0.0.1:{pg.port}")


@pytest.fixture(scope="module")
def settings_of_overlay():
    return overlay()


@pytest.fixture(scope="module")
def pg(settings_of_overlay):
    server = PostgresServer(postgres_bin(), user="mlflow").start()  # the user of the overlay's example Secret
    try:
        server.create_database(settings_of_overlay["database"])  # what POSTGRES_DB makes the image create
        server.run_sql(settings_of_overlay["init_sql"])
        run_role_script(server, settings_of_overlay["role_script"])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracking(pg, settings_of_overlay, tmp_path_factory):
    """`mlflow server` exactly as the overlay runs it (basic-auth app included), on loopback, its users made by
    `llmops-chatbot registry-access` as the overlay's Job does; its URL."""
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    local = {"--host": "127.0.0.1", "--port": str(port), "--artifacts-destination": str(work / "artifacts")}
    env = {k: resolve(v, pg) for k, v in settings_of_overlay["env"].items() if v is not None and k != "HOME"}
    ini = work / "basic_auth.ini"  # the overlay's, its user store on the test's disk
    ini.write_text(settings_of_overlay["auth_ini"].replace("sqlite:////var/lib/mlflow/auth/", f"sqlite:///{work}/"))
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
               MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
    args = []
    for arg in settings_of_overlay["command"]:
        flag, _, value = arg.partition("=")
        value = local.get(flag, value)
        value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
        args.append(f"{flag}={value}" if _ else flag)
    assert args[:2] == ["mlflow", "server"] and any(a.startswith("--backend-store-uri=postgresql") for a in args)
    bindir = Path(sys.executable).parent
    proc_env = {**os.environ, **env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc_env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    with server_process([bindir / args[0], *args[1:]], proc_env, work, url, "/health", work / "server.log", 240):
        users = subprocess.run([sys.executable, "-c", "from chatbot_model.cli.main import main; main()",
                                "registry-access"], capture_output=True, text=True, timeout=300, env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("CHATBOT_", "MLFLOW_"))},
            "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "MLFLOW_READER_PASSWORD": READER[1],
            "MLFLOW_WRITER_PASSWORD": WRITER[1]})
        assert users.returncode == 0, users.stdout + users.stderr
        yield url


@contextmanager
def chatbot_server(env: dict, cwd: Path):
    """`llmops-chatbot serve` loading the Production alias from the tracking server; its URL once /ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "chatbot_model.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--model-uri", f"models:/{NAME}@production"]
    with server_process(args, env, cwd, url, "/ready", cwd / f"serve-{port}.log", 300):
        yield url


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def hint_of(trace_id: str) -> str:
    """The hint (system prompt) the answering model was given, from the trace on the tracking server."""
    trace = mlflow.get_trace(trace_id)
    hints = [s.inputs["system"] for s in trace.data.spans if isinstance(s.inputs, dict) and "system" in s.inputs]
    assert hints, f"no span of trace {trace_id} carries the hint"
    return hints[0]


# ------------------------------------------------------------------ the feedback store
def test_four_processes_write_800_ratings_on_postgres_and_none_is_lost(pg):
    url = pg.create_database()
    code = """
        import sys
        from chatbot_model.store.feedback import FeedbackStore
        store = FeedbackStore(sys.argv[1], attach=False)
        for i in range(200):
            store.record(trace_id=f"tr-{sys.argv[2]}-{i}", rating="up" if i % 3 else "down", route="gpt",
                         model="m", model_version=sys.argv[2], session_id=sys.argv[2])
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), url, str(p)], stderr=subprocess.PIPE,
                              text=True) for p in range(4)]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read()
    store = FeedbackStore(url, attach=False)
    try:
        rows = store.ratings()
        assert len(rows) == 800 and len({r.id for r in rows}) == 800 and len({r.trace_id for r in rows}) == 800
        stats = store.stats()
        assert {v: sum(n.values()) for v, n in stats["by_version"].items()} == {"0": 200, "1": 200, "2": 200, "3": 200}
        assert sum(stats["by_route"]["gpt"].values()) == 800
        with store.engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
    finally:
        store.dispose()


# ------------------------------------------------------------------ the registry lifecycle through `mlflow server`
def test_registry_lifecycle_through_mlflow_server_on_postgres(pg, tracking, settings_of_overlay, index_dir, tmp_path,
                                                              monkeypatch):
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register

    feedback_url = resolve(settings_of_overlay["feedback_url"], pg)
    assert feedback_url.startswith(f"postgresql://{CHATBOT_ROLE[0]}:")  # the chatbot's own role, not the superuser
    env = {"MLFLOW_TRACKING_URI": tracking, "CHATBOT_FEEDBACK_DB_URL": feedback_url,
           "CHATBOT_GUARDRAIL_BACKEND": "embedded", "CHATBOT_INDEX_DIR": str(index_dir)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WRITER[0])  # the pipeline
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER[1])
    reset_mlflow(monkeypatch)
    client = MlflowClient()
    assert mlflow.get_tracking_uri() == tracking and mlflow.get_registry_uri() == tracking  # through the server

    # register, evaluate (traces and their scorer assessments on the server), promote
    settings = load_settings()
    assert log_and_register(settings).version == "1"
    out = cli("evaluate", "--model-uri", f"models:/{NAME}/1", "--genai", "false")
    assert out.exit_code == 0, out.output
    tags = client.get_model_version(NAME, "1").tags
    assert tags["eval.status"] == "passed", tags
    run = client.get_run(tags["eval.run_id"])  # the evaluation run, its metrics and artifacts on the server
    assert run.data.metrics["hit_at_k"] == float(tags["eval.hit_at_k"]) and run.data.params["model_version"] == "1"
    assert "eval/details.json" in [a.path for a in client.list_artifacts(run.info.run_id, "eval")]
    out = cli("promote_model", "--name", NAME, "--stage", "Production")
    assert out.exit_code == 0, out.output
    assert client.get_model_version_by_alias(NAME, "production").version == "1"

    # two servers serve the alias; ratings given on one reach its traces and steer the other
    # not this process's CHATBOT_* settings, nor the experiment and run the commands above left in os.environ
    # (mlflow.set_experiment sets MLFLOW_EXPERIMENT_ID): the servers write traces where the overlay says
    proc_env = {k: v for k, v in os.environ.items()
                if not k.startswith("CHATBOT_") and k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    serving = settings_of_overlay["serving_env"]  # the serving pods: the read-only user, their traces experiment
    assert serving["MLFLOW_TRACKING_USERNAME"] == READER[0]
    proc_env.update(env, CHATBOT_ADAPTATION_REFRESH_S="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                    MLFLOW_TRACKING_USERNAME=READER[0], MLFLOW_TRACKING_PASSWORD=READER[1],
                    CHATBOT_EXPERIMENT_NAME=serving["CHATBOT_EXPERIMENT_NAME"])
    with chatbot_server(proc_env, tmp_path) as a, chatbot_server(proc_env, tmp_path) as b:
        first = httpx.post(f"{b}/chat", json={"question": QUESTION}, timeout=120).json()
        assert first["answer"] and first["trace_id"] and hint_of(first["trace_id"]) == DEFAULT_HINT
        rated = []
        for question in (QUESTION, "How do I promote a model version to Production?"):
            answer = httpx.post(f"{a}/chat", json={"question": question}, timeout=120).json()
            r = httpx.post(f"{a}/feedback", json={"trace_id": answer["trace_id"], "rating": "down",
                                                   "comment": "too vague"}, timeout=60)
            assert r.status_code == 200, r.text
            rated.append(answer["trace_id"])

        store = FeedbackStore(feedback_url, attach=False)
        try:
            rows = store.ratings()
            assert sorted((r.trace_id, r.rating, r.model_version) for r in rows) == \
                sorted((t, "down", "1") for t in rated)
        finally:
            store.dispose()
        for trace_id in rated:  # A's background worker attaches each rating to its trace, once
            found = wait_until(lambda: [x for x in mlflow.get_trace(trace_id).info.assessments
                                        if x.name == ASSESSMENT_NAME], f"the rating on trace {trace_id}", 90)
            assert len(found) == 1 and found[0].value is False and found[0].rationale == "too vague"

        def b_answer_grounded():
            row = httpx.post(f"{b}/chat", json={"question": QUESTION}, timeout=120).json()
            return row if hint_of(row["trace_id"]) == GROUNDED_HINT else None

        later = wait_until(b_answer_grounded, "server B to serve the grounded hint that server A's ratings produced",
                           90, interval=0.5)
        assert later["answer"] != first["answer"]
