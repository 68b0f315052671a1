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


@pytest.mark.parametrize("url, shown", [
    ("postgresql://chatbot:s3cr3t@db:5432/feedback", "postgresql://chatbot:***@db:5432/feedback"),
    ("postgresql+psycopg2://u:p@ss@db/x", "postgresql+psycopg2://u:***@db/x"),  # an unencoded @ in the password
    ("http://mlflow:s3cr3t@tracking:5000", "http://mlflow:***@tracking:5000"),
    ("https://h/x?password=s3cr3t&a=1", "https://h/x?password=***&a=1"),
    ("runs:/abc/model?token=s3cr3t", "runs:/abc/model?token=***"),
    ("mysql://u:@h/d", "mysql://u:***@h/d"),
    ("sqlite:///rel/feedback.db", "sqlite:///rel/feedback.db"),  # nothing to hide: unchanged
    ("http://user@h:5000/p@x", "http://user@h:5000/p@x"),
    ("models:/llmops-chatbot@production", "models:/llmops-chatbot@production"),
    ("", ""),
    (None, None),
])
def test_mask_url_hides_passwords_only(url, shown):
    from chatbot_model.config import mask_url

    assert mask_url(url) == shown


def test_mask_secrets_masks_urls_inside_text():
    from chatbot_model.config import mask_secrets

    text = "cannot reach postgresql://u:s3cr3t@db/x (refused); also http://a:b2@h"
    assert mask_secrets(text) == "cannot reach postgresql://u:***@db/x (refused); also http://a:***@h"


def test_masked_settings_hide_url_passwords(monkeypatch):
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", "postgresql://chatbot:s3cr3t@db:5432/feedback")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:s3cr3t@tracking:5000")
    masked = load_settings().masked()
    assert "s3cr3t" not in str(masked)
    assert masked["feedback_db_url"] == "postgresql://chatbot:***@db:5432/feedback"
    assert masked["tracking_uri"] == "http://mlflow:***@tracking:5000"


def test_hardening_settings_defaults_and_env(monkeypatch):
    s = load_settings()
    assert (s.protect_metrics, s.public_docs, s.unhealthy_after_s, s.model_load_max_attempts) == (None, None, 300, 0)
    monkeypatch.setenv("CHATBOT_UNHEALTHY_AFTER_S", "120")
    monkeypatch.setenv("CHATBOT_PUBLIC_DOCS", "false")
    monkeypatch.setenv("CHATBOT_MODEL_LOAD_MAX_ATTEMPTS", "5")
    s = load_settings()
    assert (s.unhealthy_after_s, s.public_docs, s.model_load_max_attempts) == (120, False, 5)
    monkeypatch.setenv("CHATBOT_PROTECT_METRICS", "true")
    with pytest.raises(ConfigError, match="CHATBOT_PROTECT_METRICS=true needs CHATBOT_API_KEY"):
        load_settings()
    monkeypatch.setenv("CHATBOT_API_KEY", "k")
    assert load_settings().protect_metrics is True
