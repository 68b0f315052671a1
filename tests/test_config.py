"""Settings: defaults, env vars, validation errors that name the variable, masking."""

import pytest

from chatbot_model.config import artifact_root, load_settings
from chatbot_model.errors import ConfigError


def test_defaults_work_offline():
    s = load_settings()
    assert s.guardrail_backend == "auto" and s.guardrail_threshold == 0.5
    assert s.docs_path.name == "docs.json" and s.hint_path.name == "adapter_hint.txt"
    assert s.max_question_chars == 4000 and s.gpt_model == "gpt-4o-mini"


def test_env_vars_are_read(monkeypatch):
    monkeypatch.setenv("CHATBOT_TOP_K", "5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    s = load_settings()
    assert s.top_k == 5 and s.openai_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in str(s.masked()) and s.masked()["openai_api_key"] == "****** (set)"


@pytest.mark.parametrize("env, value, message", [
    ("CHATBOT_TOP_K", "0", "CHATBOT_TOP_K"),
    ("CHATBOT_GUARDRAIL_BACKEND", "nope", "unknown guardrail backend 'nope'; choose one of"),
    ("CHATBOT_GUARDRAIL_THRESHOLD", "abc", "CHATBOT_GUARDRAIL_THRESHOLD"),
    ("CHATBOT_CHUNK_OVERLAP", "5000", "chunk_overlap"),
])
def test_bad_values_name_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_sqlite_store_keeps_artifacts_beside_the_db(tmp_path):
    assert artifact_root(f"sqlite:///{tmp_path}/mlflow.db") == (tmp_path / "mlartifacts").as_uri()
    assert artifact_root("http://mlflow:5000") is None
