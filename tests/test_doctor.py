"""`llmops-chatbot doctor`: one line per part with its fix; exit 1 only when something would break `make run`.
The guardrail's "toxic-bert not cached" note lives there (and in /health), logged once at INFO elsewhere."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

from chatbot_model.cli.main import main
from chatbot_model.config import load_settings


def doctor():
    result = CliRunner().invoke(main, ["doctor"])
    lines = {line.split()[1]: line for line in result.output.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")}
    return result, lines


def test_a_fresh_checkout_passes_with_warnings_that_say_what_make_run_does(tmp_path):
    result, lines = doctor()
    assert result.exit_code == 0, result.output
    assert set(lines) >= {"tracking", "experiment", "model", "index", "guardrail", "provider", "feedback", "traces"}
    assert lines["experiment"].startswith("ok") and "llmops-chatbot" in lines["experiment"]
    assert "llmops-chatbot-eval" in lines["experiment"]
    assert lines["model"].startswith("warn") and "no alias 'production'" in lines["model"]
    assert "`make run` registers, evaluates and promotes one" in result.output
    assert lines["index"].startswith("warn") and "llmops-chatbot build-index" in result.output
    assert "auto -> embedded (the shipped classifier), because toxic-bert 'unitary/toxic-bert' is not cached" \
        in lines["guardrail"]
    assert "hf download unitary/toxic-bert" in result.output
    assert "off: OPENAI_API_KEY is not set" in result.output and "set OPENAI_API_KEY to use it" in result.output
    assert "no file yet; created at revision" in lines["feedback"]
    assert f"in-process MLflow writer to sqlite:///{tmp_path / 'mlflow.db'}" in lines["traces"]


def test_the_registered_model_and_a_matching_index_are_ok(index_dir):
    client = MlflowClient()
    client.create_registered_model("llmops-chatbot")
    client.create_model_version("llmops-chatbot", source="file:///tmp/model")
    client.set_registered_model_alias("llmops-chatbot", "production", "1")
    result, lines = doctor()
    assert result.exit_code == 0, result.output
    assert "-> llmops-chatbot version 1 (stage None, @production; evaluation not evaluated)" in lines["model"]
    assert lines["index"].startswith("ok") and "matches" in lines["index"]
    manifest = index_dir / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "fingerprint": "0" * 16}))
    result, lines = doctor()
    assert lines["index"].startswith("warn") and "is stale: fingerprint 0000000000000000" in lines["index"]


def test_what_would_break_make_run_fails_with_its_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATBOT_GUARDRAIL_BACKEND", "toxic-bert")
    monkeypatch.setenv("CHATBOT_DOCS_PATH", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", "postgresql://chat:s3cret@127.0.0.1:1/chat")
    result, lines = doctor()
    assert result.exit_code == 1
    assert lines["guardrail"].startswith("FAIL") and "CHATBOT_GUARDRAIL_BACKEND=auto" in result.output
    assert lines["index"].startswith("FAIL") and "set CHATBOT_DOCS_PATH" in result.output
    assert lines["feedback"].startswith("FAIL") and "s3cret" not in result.output
    assert "3 problem(s) would break `make run`: index, guardrail, feedback store" in result.output


def test_doctor_creates_no_store():
    db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    db.unlink()
    result, lines = doctor()
    assert lines["tracking"].startswith("warn") and "does not exist yet" in lines["tracking"]
    assert not db.exists()


def test_the_auto_guardrail_falls_back_with_one_info_line(caplog):
    from chatbot_model.guardrail import core

    core._AUTO_REASONS_LOGGED.clear()
    settings = load_settings(guardrail_load_timeout_s=5)
    with caplog.at_level(logging.INFO, logger="chatbot_model.guardrail.core"):
        first = core.build_guardrail(settings)
        core.build_guardrail(settings)
    notes = [r for r in caplog.records if "guardrail backend: embedded" in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.INFO]
    assert first.backend == "embedded" and first.classifier.chosen_because.startswith("auto: ")
