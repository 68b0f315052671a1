"""The human-in-the-loop lifecycle through the registry: feedback -> adapt -> evaluate -> gated promote.

Real components: MLflow's sqlite store and the feedback store under tmp_path (conftest), the logged pyfunc
model, the chat loop, the FastAPI app with the in-process backend, another process reading the feedback, the
prompt registry, `mlflow run --env-manager local`. "Tracking store down -> ratings still stored and attached
later" is covered in test_feedback.py (test_tracking_store_down_the_rating_is_kept_and_attached_once_when_it_is_back).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT
from chatbot_model.cli.main import main
from chatbot_model.config import load_settings
from chatbot_model.store.feedback import FeedbackStore
from chatbot_model.lifecycle import evaluation
from chatbot_model.lifecycle.gate import EvaluationGate, PromotionRefused
from chatbot_model.lifecycle.loop import adapt
from chatbot_model.lifecycle.registry import log_and_register, promote
from tests.helpers import CHECKOUT_STATE, DOCS, EXPERIMENT, ROOT, make_versions, mlflow_cli, tracking_store
from tests.mlflow_state import forget_mlflow, reset_mlflow

NAME = "llmops-chatbot"
PROMPT = "llmops-chatbot-hint"
METRICS = {"hit_at_k": 0.9, "mrr": 0.8, "fact_coverage": 0.6, "block_rate": 0.9, "false_block_rate": 0.0,
           "latency_p50_ms": 20.0, "latency_p95_ms": 40.0}


@pytest.fixture
def client(monkeypatch):
    reset_mlflow(monkeypatch)
    yield MlflowClient()
    forget_mlflow()


class StepClock:
    """A `perf_counter` that advances `step_s` per reading: every timed request takes step_s / 2."""

    def __init__(self, step_s: float = 0.01):
        self.now, self.step_s = 0.0, step_s

    def perf_counter(self) -> float:
        self.now += self.step_s
        return self.now


@pytest.fixture
def settings(index_dir, client, monkeypatch):
    monkeypatch.setenv("CHATBOT_GUARDRAIL_BACKEND", "embedded")
    # the latency `evaluate` measures comes from an injected clock: the gate compares versions' p95 latency, and
    # a busy machine must not make a version "slower" than another (latency is measured by `make bench`)
    monkeypatch.setattr(evaluation, "time", StepClock())
    return load_settings()


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def tags(client, version) -> dict:
    return dict(client.get_model_version(NAME, str(version)).tags)


def stages(client) -> dict:
    return {str(v.version): v.current_stage for v in client.search_model_versions(f"name='{NAME}'")}


def evaluated(client, version, status="passed", **metrics) -> None:
    for key, value in {"eval.status": status, "eval.run_id": "r", **{f"eval.{k}": str(v) for k, v in
                                                                      {**METRICS, **metrics}.items()}}.items():
        client.set_model_version_tag(NAME, str(version), key, value)


# ------------------------------------------------------------------ the gate (versions without a model: fast)
def test_the_gate_needs_an_evaluation_that_passed_and_staging_has_none(client):
    make_versions(client, 2)
    promote(NAME, "Staging", "1", gate=EvaluationGate(client, NAME))  # no gate on Staging
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "1")
    assert out.exit_code == 1
    assert ("version 1 was never evaluated; run `llmops-chatbot evaluate --model-uri models:/llmops-chatbot/1` "
            "first") in out.output
    evaluated(client, 1, status="failed", hit_at_k=0.5)
    client.set_model_version_tag(NAME, "1", "eval.failures", "hit_at_k 0.500 (needs >= 0.8)")
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "1")
    assert out.exit_code == 1 and "failed its evaluation" in out.output and "hit_at_k 0.500" in out.output
    assert stages(client) == {"1": "Staging", "2": "None"}

    evaluated(client, 1)  # the first Production needs only `passed`
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "1")
    assert out.exit_code == 0, out.output
    assert "production = none yet" in out.output and "version 1 -> Production" in out.output


def test_the_gate_refuses_a_regression_beyond_the_tolerance_and_force_records_why(client):
    make_versions(client, 3)
    evaluated(client, 1)
    promote(NAME, "Production", "1")
    evaluated(client, 2, hit_at_k=0.885, latency_p95_ms=80.0)  # within the tolerance (0.02; 1.5x + 50 ms)
    evaluated(client, 3, mrr=0.75)
    gate = EvaluationGate(client, NAME)
    with pytest.raises(PromotionRefused, match=r"version 3 is worse than Production version 1.*mrr 0.750 vs 0.800"):
        promote(NAME, "Production", "3", gate=gate)
    assert any(line.split()[:3] == ["mrr", "0.75", "0.8"] for line in gate.lines)  # side by side

    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "3", "--force",
              "--reason", "hotfix: the old version leaks a secret")
    assert out.exit_code == 0, out.output
    assert "WARNING: promotion forced over the gate" in out.output
    forced = tags(client, 3)
    assert forced["promotion.forced"] == "true"
    assert forced["promotion.forced_reason"] == "hotfix: the old version leaks a secret"
    assert forced["promotion.forced_by"] and "worse than Production version 1" in forced["promotion.gate_refusal"]
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "2")  # vs version 3 now
    assert out.exit_code == 0, out.output
    assert stages(client) == {"1": "Archived", "2": "Production", "3": "Archived"}
    assert "promotion.forced" not in tags(client, 2)


# ------------------------------------------------------------------ the loop end to end
@pytest.mark.slow  # three versions logged and evaluated on the whole golden set: minutes
def test_the_loop_chat_feedback_adapt_evaluate_promote(settings, client, tmp_path, capsys):
    from chatbot_model.cli.chat import run_chat
    from chatbot_model.server import create_app
    from chatbot_model.server.backends import InProcessBackend

    # version 1, evaluated and promoted: the first Production; its hint is prompt version 1
    v1 = log_and_register(settings)
    assert tags(client, 1)["prompt_uri"] == f"prompts:/{PROMPT}/1"
    out = cli("evaluate", "--model-uri", f"models:/{NAME}/1", "--genai", "false")
    assert out.exit_code == 0, out.output
    assert "PASSED" in out.output and tags(client, 1)["eval.status"] == "passed"
    assert cli("promote_model", "--name", NAME, "--stage", "Production").exit_code == 0
    assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").template == DEFAULT_HINT

    # ratings from the chat loop (on the Production model, loaded as version 1) and from the server's POST /feedback
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@production", model_config={"model_version": "1"})
    run_chat(model.unwrap_python_model().service, settings,
             io.StringIO("How do I promote a model version to Production?\nn\nq\n"))
    assert "feedback: hint" in capsys.readouterr().out
    served = settings.model_copy(update={"model_uri": f"models:/{NAME}@production"})
    with TestClient(create_app(served, backend=InProcessBackend(served, model=model))) as http:
        assert http.app.state.backend.loaded.wait(60)
        answer = http.post("/chat", json={"question": "Where does MLflow store runs by default?"}).json()
        r = http.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "down", "comment": "vague"})
        assert r.status_code == 200, r.text
    rows = FeedbackStore(settings.feedback_db_url).ratings()
    assert [(r.rating, r.model_version) for r in rows] == [("down", "1"), ("down", "1")]  # the version that answered

    # another process sees the new state
    stats = subprocess.run([sys.executable, "-m", "chatbot_model.cli.main", "feedback", "stats"], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ))
    assert stats.returncode == 0, stats.stderr
    assert "ratings: 2 (up 0, down 2)" in stats.stdout and f"hint: {GROUNDED_HINT!r}" in stats.stdout

    # adapt: version 2 with the grounded hint and a higher bias; not promoted
    out = cli("adapt", "--name", NAME)
    assert out.exit_code == 0, out.output
    assert "registered llmops-chatbot version 2" in out.output and "not promoted" in out.output
    t2 = tags(client, 2)
    assert t2["adapt.parent_version"] == "1" and (t2["adapt.ratings"], t2["adapt.down"], t2["adapt.up"]) == ("2", "2", "0")
    assert t2["adapt.window_start"] < t2["adapt.window_end"] and t2["prompt_uri"] == f"prompts:/{PROMPT}/2"
    assert float(t2["bias_towards_35"]) == pytest.approx(0.3 + 0.3 * 2 / 4, abs=1e-3)  # balance 2 / (2 + P)
    hint_file = mlflow.artifacts.download_artifacts(f"models:/{NAME}/2/artifacts/adapter_hint.txt",
                                                    dst_path=str(tmp_path / "v2"))
    assert Path(hint_file).read_text().strip() == GROUNDED_HINT
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(
        f"models:/{NAME}/2/artifacts/model_settings.json", dst_path=str(tmp_path / "v2"))).read_text())
    assert logged["bias_towards_35"] == pytest.approx(0.45, abs=1e-3)
    assert stages(client) == {"1": "Production", "2": "None"}

    # version 2 serves what it learned, and does not count the two ratings it folded in a second time
    v2_service = mlflow.pyfunc.load_model(f"models:/{NAME}/2").unwrap_python_model().service
    assert v2_service.current_state() == (pytest.approx(0.45, abs=1e-3), GROUNDED_HINT)
    assert v2_service.describe()["bias_towards_35"] == pytest.approx(0.45, abs=1e-3)
    v1_service = model.unwrap_python_model().service  # version 1 still counts them: that is what it serves
    v1_service.adaptation.invalidate()
    assert v1_service.current_state() == (pytest.approx(0.45, abs=1e-3), GROUNDED_HINT)

    # the gate: not evaluated -> refused; evaluated (with the mlflow.genai view) -> promoted
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "2")
    assert out.exit_code == 1 and f"--model-uri models:/{NAME}/2` first" in out.output
    out = cli("evaluate", "--model-uri", f"models:/{NAME}/2")
    assert out.exit_code == 0, out.output
    t2 = tags(client, 2)
    assert t2["eval.status"] == "passed" and float(t2["eval.hit_at_k"]) >= 0.8
    assert float(t2["eval.latency_p95_ms"]) == pytest.approx(10.0)  # the injected clock's, not the machine's
    run = client.get_run(t2["eval.run_id"])
    assert run.data.metrics["hit_at_k"] == float(t2["eval.hit_at_k"]) and run.data.params["model_version"] == "2"
    assert "eval/details.json" in [a.path for a in client.list_artifacts(run.info.run_id, "eval")]
    traces = mlflow.search_traces(run_id=run.info.run_id, locations=[run.info.experiment_id], return_type="list")
    assert len(traces) >= 60  # one per retrieval question, scored by the code scorers
    assert {"hit_at_k", "fact_coverage"} <= {a.name for a in traces[0].info.assessments}
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "2")
    assert out.exit_code == 0, out.output
    assert "production = version 1" in out.output and "version 2 -> Production" in out.output
    assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").template == GROUNDED_HINT

    # nothing new since version 2: adapt registers nothing
    out = cli("adapt", "--name", NAME)
    assert out.exit_code == 0 and "no feedback since version 2" in out.output
    assert set(stages(client)) == {"1", "2"}

    # a worse version on purpose: two documents dropped -> retrieval falls; it still passes the thresholds,
    # but the gate compares it with Production and refuses; --force overrides and records it
    docs = [d for d in json.loads(DOCS.read_text()) if d["id"] not in ("guardrail-overview", "tracking-store-and-ui")]
    (tmp_path / "fewer.json").write_text(json.dumps(docs))
    v3 = log_and_register(settings, docs=tmp_path / "fewer.json", hint=GROUNDED_HINT)
    assert tags(client, v3.version)["prompt_uri"] == f"prompts:/{PROMPT}/2"  # same hint text: same prompt version
    assert cli("evaluate", "--model-uri", f"models:/{NAME}/3", "--genai", "false").exit_code == 0
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "3")
    assert out.exit_code == 1, out.output
    assert "version 3 is worse than Production version 2" in out.output and "hit_at_k" in out.output
    assert stages(client)["3"] == "None"
    out = cli("promote_model", "--name", NAME, "--stage", "Production", "--version", "3", "--force")
    assert out.exit_code == 0 and "WARNING" in out.output
    assert tags(client, 3)["promotion.forced"] == "true" and stages(client)["3"] == "Production"
    assert v1.version == "1"


@pytest.mark.slow  # a whole evaluation on the golden set
def test_serve_ensure_model_evaluates_before_promoting(settings, client):
    from chatbot_model.cli.serve import ensure_registered_model

    done = ensure_registered_model(settings)
    assert "evaluated it (passed" in done and "promoted it to Production" in done
    assert tags(client, 1)["eval.status"] == "passed" and stages(client) == {"1": "Production"}
    assert ensure_registered_model(settings) is None  # already there


def test_adapt_without_production_says_how_to_get_one(settings, client):
    make_versions(client, 1)
    out = cli("adapt", "--name", NAME)
    assert out.exit_code == 1 and "no version in Production" in out.output and "promote_model" in out.output


# ------------------------------------------------------------------ as users run it: mlflow run
@pytest.mark.slow
def test_mlflow_run_evaluate_promote_and_adapt(shipped_index, tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    uri = tracking_store(root)
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("CHATBOT_", "MLFLOW_")) or k.endswith(("_API_KEY", "_BASE_URL")))}
    env.update(MLFLOW_TRACKING_URI=uri, CHATBOT_INDEX_DIR=str(shipped_index), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{root / 'feedback.db'}",
               CHATBOT_GUARDRAIL_BACKEND="embedded",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    project = {"root": root, "env": env}

    def run(entry: str, **params) -> subprocess.CompletedProcess:
        before = {name: (ROOT / name).exists() for name in CHECKOUT_STATE}
        args = ["run", str(ROOT), "-e", entry, "--env-manager", "local", "--experiment-name", EXPERIMENT]
        for key, value in params.items():
            args += ["-P", f"{key}={value}"]
        proc = mlflow_cli(project, *args)
        assert {name: (ROOT / name).exists() for name in CHECKOUT_STATE} == before, "mlflow run wrote into the checkout"
        return proc

    assert run("register_model", name=NAME).returncode == 0
    client = MlflowClient(uri)
    refused = run("promote_model", name=NAME, stage="Production")
    assert refused.returncode != 0 and "was never evaluated" in refused.stdout + refused.stderr
    proc = run("evaluate", model_uri=f"models:/{NAME}/1", genai="false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    t1 = dict(client.get_model_version(NAME, "1").tags)
    assert t1["eval.status"] == "passed" and client.get_run(t1["eval.run_id"]).data.params["model_uri"] == f"models:/{NAME}/1"
    assert run("promote_model", name=NAME, stage="Production").returncode == 0

    FeedbackStore(env["CHATBOT_FEEDBACK_DB_URL"], attach=False).record(trace_id=None, rating="down", route="gpt")
    proc = run("adapt", name=NAME)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "registered llmops-chatbot version 2" in proc.stdout
    t2 = dict(client.get_model_version(NAME, "2").tags)
    assert t2["adapt.parent_version"] == "1" and t2["adapt.down"] == "1"
    adapt_run = client.get_run(client.get_model_version(NAME, "2").run_id)
    assert adapt_run.data.params["parent_version"] == "1" and adapt_run.data.params["registered_version"] == "2"
    assert {str(v.version): v.current_stage for v in client.search_model_versions(f"name='{NAME}'")} == \
        {"1": "Production", "2": "None"}


def test_lifecycle_cli_module_imports_only_click():
    import ast

    import chatbot_model.cli.lifecycle as module

    tree = ast.parse(Path(module.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {a.name for n in top for a in n.names} <= {"annotations", "click"}


def test_adapt_learns_the_state_the_live_service_of_its_parent_serves(settings, client):
    """One decay rule, one implementation: for the same rows and clock, adapt's state is the served state."""
    log_and_register(settings)
    evaluated(client, 1)
    promote(NAME, "Production", "1")
    registered = client.get_model_version(NAME, "1").creation_timestamp / 1000
    hour = (registered // 3600 + 1) * 3600  # whole hours: two ratings within one hour, as a busy service has
    clock = [hour]
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=lambda: clock[0])
    ratings = [(0.1, "down", "gpt"), (0.9, "down", "gpt"), (3.2, "up", "claude"), (7.9, "down", "claude"),
               (30.1, "down", "gpt"), (31.0, "down", "blocked"), (41.0, "down", "gpt")]  # hours after `hour`
    for hours, rating, route in ratings:
        clock[0] = hour + hours * 3600
        store.record(trace_id=None, rating=rating, route=route, model_version="1")
    now = hour + 40 * 3600  # the last rating comes after `now`: not given yet

    live = mlflow.pyfunc.load_model(f"models:/{NAME}/1").unwrap_python_model().service.adaptation
    live.clock = lambda: now
    live.invalidate()
    result = adapt(settings, NAME, now=now)
    assert result.state == live.state()
    counted = [(h, r) for h, r, route in ratings if route != "blocked" and h <= 40]
    assert (result.ratings, result.up, result.down) == (5, 1, 4)
    assert result.state.decayed_down == round(sum(0.5 ** ((40 - h) / 24) for h, r in counted if r == "down"), 6)
    assert result.state.decayed_up == round(0.5 ** ((40 - 3.2) / 24), 6)
    assert float(tags(client, result.registered.version)["bias_towards_35"]) == pytest.approx(
        result.state.bias_towards_35)
