"""`_PyfuncChatbot` logged from code, registered, promoted and loaded back on a real MLflow sqlite store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from chatbot_model.config import Settings
from chatbot_model.lifecycle.pyfunc import OUTPUT_COLUMNS, _PyfuncChatbot, answer_frame, service_from_artifacts, to_questions
from chatbot_model.contract import ChatResult
from tests.helpers import DOCS, ROOT

NAME = "llmops-chatbot"
QUESTIONS = ["What is MLflow used for?", "How do I serve a model?", "What does the FAISS index store?"]


# ---------------------------------------------------------------- what is logged
def test_logged_model_has_artifacts_code_requirements_signature_and_tags(store):
    version = store["version"]
    client = MlflowClient()
    local = Path(mlflow.artifacts.download_artifacts(version.version_uri))
    assert {"docs.json", "adapter_hint.txt", "model_settings.json", "index"} <= {p.name for p in (local / "artifacts").iterdir()}
    assert {"index.faiss", "sentences.bin", "sentence_vectors.npy", "manifest.json"} <= {p.name for p in (local / "artifacts" / "index").iterdir()}
    assert (local / "code" / "chatbot_model" / "lifecycle" / "pyfunc.py").is_file()
    assert (local / "code" / "chatbot_model" / "guardrail" / "data" / "embedded.npz").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements and any(r.startswith("faiss-cpu==") for r in requirements)

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["code"] == "code"
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert inputs[0] == {"type": "string", "name": "question", "required": True}
    assert [(c["name"], c["type"], c["required"]) for c in inputs[1:]] == [("history", "array", False)]
    outputs = [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])]
    assert outputs == list(OUTPUT_COLUMNS)
    assert json.loads((local / "input_example.json").read_text())

    settings = json.loads((local / "artifacts" / "model_settings.json").read_text())
    assert settings["bias_towards_35"] == 0.3 and settings["guardrail_backend"] in ("embedded", "auto")
    assert settings["abstain_below"] == Settings.model_fields["abstain_below"].default  # the calibrated floor
    mv = client.get_model_version(NAME, version.version)
    manifest = json.loads((local / "artifacts" / "index" / "manifest.json").read_text())
    assert mv.tags["index_fingerprint"] == manifest["fingerprint"]
    assert len(mv.tags["docs_fingerprint"]) == 16
    in_checkout = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode == 0
    if in_checkout:  # the commit the model was logged from: a real commit of this repository
        commit = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", mv.tags.get("git_commit", ""))
        assert commit, mv.tags.get("git_commit")
        assert subprocess.run(["git", "cat-file", "-e", f"{commit.group(1)}^{{commit}}"], cwd=ROOT).returncode == 0
    else:
        assert "git_commit" not in mv.tags
    run = client.get_run(version.run_id)
    assert run.data.params["registered_version"] == version.version
    assert run.data.tags["registered_model"] == NAME


@pytest.mark.parametrize("uri", [f"models:/{NAME}/Production", f"models:/{NAME}@production", f"models:/{NAME}/1",
                                 f"models:/{NAME}/latest", "run"])
def test_loads_by_stage_alias_version_and_run_uri(store, uri):
    uri = store["version"].run_uri if uri == "run" else uri
    out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"question": QUESTIONS[:1]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    row = out.iloc[0]
    assert row["provider"] == "local" and row["answer"] and not row["blocked"] and row["error"] == ""
    assert row["sources"] and set(row["sources"][0]) == {"id", "title", "source", "score"}
    assert row["trace_id"].startswith("tr-")


# ---------------------------------------------------------------- input shapes
@pytest.mark.parametrize("payload, expected", [
    (pd.DataFrame({"question": QUESTIONS}), QUESTIONS),
    ({"question": QUESTIONS[0]}, QUESTIONS[:1]),
    ({"question": QUESTIONS}, QUESTIONS),
    ([{"question": q} for q in QUESTIONS], QUESTIONS),
])
def test_predict_accepts_each_input_shape(store, payload, expected):
    out = store["model"].predict(payload)
    assert out["question"].tolist() == expected
    assert (out["error"] == "").all() and (out["provider"] == "local").all()
    assert out["answer"].str.len().gt(0).all()
    assert out.dtypes["blocked"] == bool and out.dtypes["abstained"] == bool and out.dtypes["latency_ms"] == float
    assert not out["abstained"].any()


def test_off_topic_rows_report_abstained_without_sources(store):
    out = store["model"].predict(pd.DataFrame({"question": ["What is the capital of France?", QUESTIONS[1]]}))
    assert out["abstained"].tolist() == [True, False]
    assert out.loc[0, "sources"] == [] and "does not cover" in out.loc[0, "answer"] and not out.loc[0, "blocked"]
    assert out.loc[1, "sources"] and "does not cover" not in out.loc[1, "answer"]


def test_a_list_of_strings(store):
    """The signature's required `question` column makes MLflow reject a bare list before the model sees it;
    the python model itself takes it."""
    with pytest.raises(MlflowException) as exc:
        store["model"].predict(QUESTIONS[:2])
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE" and "question" in str(exc.value)
    out = store["model"].unwrap_python_model().predict(None, QUESTIONS[:2])
    assert out["question"].tolist() == QUESTIONS[:2] and (out["error"] == "").all()


@pytest.mark.parametrize("payload, words", [
    (pd.DataFrame({"q": QUESTIONS}), ["question"]),
    ({"text": "hello"}, ["question"]),
    (pd.DataFrame({"question": ["", "   "]}), ["row 0: question is empty", "non-empty text"]),
    (pd.DataFrame({"question": [1, 2]}), ["question"]),
    ([{"question": 3}], ["question"]),
    (pd.DataFrame({"question": ["x" * 5000]}), ["row 0: question is 5000 characters", "4000"]),
])
def test_bad_input_is_an_invalid_parameter_naming_the_column(store, payload, words):
    with pytest.raises(MlflowException) as exc:
        store["model"].predict(payload)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    for word in words:
        assert word in str(exc.value)


def test_a_mixed_batch_answers_the_valid_rows_and_flags_the_others(store):
    out = store["model"].predict(pd.DataFrame({"question": [QUESTIONS[0], "", QUESTIONS[1], None]}))
    assert len(out) == 4
    assert out.loc[[0, 2], "error"].tolist() == ["", ""] and out.loc[[0, 2], "answer"].str.len().gt(0).all()
    assert out.loc[1, "error"] == "row 1: question is empty; ask something in words"
    assert out.loc[3, "error"] == "row 3: question must be text (a string), got nothing; send each question as a string"
    assert out.loc[[1, 3], "answer"].tolist() == ["", ""] and not out.loc[[1, 3], "blocked"].any()
    assert out.loc[[1, 3], "sources"].tolist() == [[], []]


# ---------------------------------------------------------------- the thin wrapper, without MLflow
class RecordingService:
    """A stand-in for LLMService: records the batches it gets."""

    def __init__(self):
        from chatbot_model.config import load_settings

        self.settings = load_settings()
        self.batches = []

    def answer_many(self, questions, histories=None, *, rows=False):
        self.batches.append((list(questions), histories, rows))
        return [ChatResult(question=q, answer=f"answer to {q}", sources=[], route="gpt", provider="local",
                           model="extractive-v1", latency_ms=1.5) if isinstance(q, str) and q.strip() else
                ChatResult(question="", answer="", sources=[], route="", provider="", model="", error="bad row")
                for q in questions]


def test_predict_sends_every_row_as_one_batch_for_the_service_to_check():
    service = RecordingService()
    out = _PyfuncChatbot(service).predict(None, pd.DataFrame({"question": ["a b", 7, "c d"]}))
    assert service.batches == [(["a b", 7, "c d"], [None, None, None], True)]  # rows=True: a bad row is its error
    assert out["answer"].tolist() == ["answer to a b", "", "answer to c d"]
    assert out["error"].tolist() == ["", "bad row", ""]
    assert out["fallback"].tolist() == ["", "", ""] and out["trace_id"].tolist() == ["", "", ""]
    assert list(out.columns) == list(OUTPUT_COLUMNS)


def test_to_questions_shapes_and_errors():
    assert to_questions("one") == ["one"]
    assert to_questions(["a", "b"]) == ["a", "b"]
    assert to_questions({"question": ("a", "b")}) == ["a", "b"]
    assert to_questions(pd.DataFrame({"question": [["a", "b"]]})) == ["a", "b"]
    for bad, words in [([], "no rows"), ([{"x": 1}], "record #0 has no key 'question'"), (42, "int"),
                       (pd.DataFrame({"x": [1]}), "missing column 'question'")]:
        with pytest.raises(MlflowException, match=words) as exc:
            to_questions(bad)
        assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="no valid question"):
        answer_frame(RecordingService(), ["", " "])


def test_a_stale_logged_index_is_rebuilt_outside_the_model(store, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(store["version"].version_uri, dst_path=str(tmp_path / "m")))
    artifacts = {k: str(local / "artifacts" / v) for k, v in
                 {"docs": "docs.json", "hint": "adapter_hint.txt", "settings": "model_settings.json",
                  "index": "index"}.items()}
    manifest = Path(artifacts["index"]) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["fingerprint"] = "stale"
    manifest.write_text(json.dumps(data))
    # a small knowledge base keeps the rebuild quick
    Path(artifacts["docs"]).write_text(json.dumps([
        {"id": "serve", "title": "Serving", "text": "Models are served with mlflow models serve. It answers on /invocations."},
        {"id": "faiss", "title": "FAISS", "text": "The FAISS index stores normalised chunk vectors for search."}]))
    before = {p.name: p.stat().st_mtime_ns for p in Path(artifacts["index"]).iterdir()}

    service = service_from_artifacts(artifacts)
    assert Path(service.settings.index_dir) != Path(artifacts["index"])
    assert service.rag.manifest["fingerprint"] != "stale"
    assert {p.name: p.stat().st_mtime_ns for p in Path(artifacts["index"]).iterdir()} == before
    assert service.answer(QUESTIONS[0]).answer
    shutil.rmtree(Path(service.settings.index_dir).parent, ignore_errors=True)


def test_serving_settings_come_from_the_model_and_env_overrides_defaults(store, tmp_path, monkeypatch):
    from chatbot_model.lifecycle.pyfunc import settings_from_artifacts

    path = tmp_path / "model_settings.json"
    path.write_text(json.dumps({"bias_towards_35": 0.8, "gpt_model": "g", "guardrail_backend": "embedded", "top_k": 5,
                                "abstain_below": 0.25}))
    artifacts = {"docs": str(DOCS), "hint": str(ROOT / "artifacts" / "adapter_hint.txt"), "settings": str(path),
                 "index": str(tmp_path / "index")}
    monkeypatch.setenv("CHATBOT_BIAS_TOWARDS_35", "0.1")  # fixed by the model: ignored
    monkeypatch.setenv("CHATBOT_TOP_K", "2")  # a default: the env wins
    settings = settings_from_artifacts(artifacts)
    assert (settings.bias_towards_35, settings.gpt_model, settings.guardrail_backend, settings.top_k) == (0.8, "g", "embedded", 2)
    assert settings.abstain_below == 0.25  # the model's floor
    monkeypatch.setenv("CHATBOT_ABSTAIN_BELOW", "0.2")  # a default: the env wins
    assert settings_from_artifacts(artifacts).abstain_below == 0.2


# ---------------------------------------------------------------- offline
NO_NETWORK = textwrap.dedent("""
    import ipaddress, json, socket, sys
    opened = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                opened.append(str(address))
                raise OSError("network disabled by the test: " + str(address))
        return real_connect(self, address)

    socket.socket.connect = guarded
    socket.create_connection = lambda address, *a, **k: guarded(socket.socket(), address)
    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    out = model.predict(pd.DataFrame({"question": ["What is MLflow used for?"]}))
    print(json.dumps({"opened": opened, "provider": out.loc[0, "provider"], "answer": out.loc[0, "answer"],
                      "error": out.loc[0, "error"], "torch": "torch" in sys.modules}))
""")


@pytest.mark.slow
def test_loading_and_answering_needs_no_network_and_no_key(store, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MLFLOW_TRACKING_URI=store["uri"],
               CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp_path / 'fb.db'}", PYTHONPATH=str(ROOT),
               CHATBOT_EMBEDDING_CACHE_DIR=str(tmp_path / "empty-cache"))
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK, f"models:/{NAME}@production"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["opened"] == [] and result["provider"] == "local" and result["answer"] and result["error"] == ""
    assert result["torch"] is False, "the logged ONNX export is used: no torch import, no export at load"
    assert not (tmp_path / "empty-cache").exists()


def test_model_config_attributes_ratings_to_the_version_and_can_freeze_adaptation(store):
    """`model_version` tags this model's ratings with the version that answered; `adaptation: frozen` serves the
    version alone (the evaluation gate loads it so): no feedback store, its own bias and hint."""
    from chatbot_model.pipeline.adapter import DEFAULT_HINT

    uri = f"models:/{NAME}/1"
    model = mlflow.pyfunc.load_model(uri, model_config={"model_version": "1"})
    frame = model.predict(pd.DataFrame({"question": QUESTIONS[:2]}))
    assert frame["model_version"].tolist() == ["1", "1"]  # every answer says which version answered
    served = model.unwrap_python_model().service
    result = served.answer(QUESTIONS[0])
    effect = served.feedback(False, result=result)
    (row,) = [r for r in served.feedback_store.ratings() if r.id == effect["feedback_id"]]
    assert row.model_version == "1" and row.trace_id == result.trace_id

    frozen = mlflow.pyfunc.load_model(uri, model_config={"adaptation": "frozen"}).unwrap_python_model().service
    assert frozen.adaptation is None and frozen.feedback_store is None
    assert frozen.current_state() == (0.3, DEFAULT_HINT)  # the logged ones, whatever the feedback says
