"""Test isolation: every test gets its own tracking store, index dir and no provider keys; the session gets its
own HOME, so nothing (ONNX exports, Hugging Face, torch, MLflow) writes to the real ~/.cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# before anything reads them: caches derive from HOME / XDG_CACHE_HOME unless these point elsewhere
SESSION_HOME = Path(tempfile.mkdtemp(prefix="llmops-chatbot-test-home-"))
for _var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "SENTENCE_TRANSFORMERS_HOME",
             "TORCH_HOME", "MPLCONFIGDIR"):
    os.environ.pop(_var, None)
os.environ["HOME"] = str(SESSION_HOME)
os.environ["XDG_CACHE_HOME"] = str(SESSION_HOME / ".cache")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

from tests.fake_llm_server import FakeLLMServer  # noqa: E402
from tests.helpers import DOCS, tracking_store  # noqa: E402
from tests.mlflow_state import forget_mlflow, reset_mlflow  # noqa: E402
from tests.pg_server import PostgresServer, postgres_bin  # noqa: E402

KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "CHATBOT_API_KEY")


def pytest_configure(config):
    """With LLMOPS_TEST_EXPORTS=DIR (`make test-fast`), the embedder's ONNX export is kept in DIR between sessions:
    it is keyed by the model's files and the export recipe, so a changed model or recipe is exported anew.
    Without it (`make test`, CI), every session exports afresh into its own HOME."""
    kept = os.environ.get("LLMOPS_TEST_EXPORTS")
    if kept:
        from chatbot_model.retrieval.onnx_export import onnx_model_dir, register_onnx_dir

        onnx_model_dir(cache_dir=kept)
        register_onnx_dir(Path(kept) / "onnx")


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Tracking store, index and feedback DB under tmp_path; no keys; CHATBOT_* from the host ignored."""
    for var in list(os.environ):
        if var.startswith("CHATBOT_") or var in KEY_VARS:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store(tmp_path))
    reset_mlflow(monkeypatch)
    monkeypatch.setenv("CHATBOT_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{tmp_path / 'feedback.db'}")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    forget_mlflow()


@pytest.fixture(scope="session")
def shipped_index(tmp_path_factory) -> Path:
    """The shipped knowledge base indexed once per test session (tests copy it; never write to it)."""
    from chatbot_model.config import load_settings
    from chatbot_model.retrieval.rag import RAGPipeline

    index_dir = tmp_path_factory.mktemp("shipped") / "index"
    RAGPipeline(load_settings(index_dir=index_dir, docs_path=DOCS)).load_or_build()
    return index_dir


@pytest.fixture
def index_dir(shipped_index, tmp_path, monkeypatch) -> Path:
    """A private copy of the shipped index, set as CHATBOT_INDEX_DIR."""
    target = tmp_path / "index"
    shutil.copytree(shipped_index, target, dirs_exist_ok=True)
    monkeypatch.setenv("CHATBOT_INDEX_DIR", str(target))
    return target


@pytest.fixture
def fake_llm():
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's binaries) on loopback for the session; each test creates its databases.
    Tests that use it are `slow`."""
    server = PostgresServer(postgres_bin()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def production_model(shipped_index, tmp_path_factory) -> dict:
    """llmops-chatbot version 1 logged, registered and promoted to Production once per session, in a store of its
    own (the registry's own log/register/promote), and loaded as the server loads it: {store, version, model}."""
    from chatbot_model.lifecycle.registry import log_and_register, promote
    from chatbot_model.server.rollout import registry_loader
    from tests.helpers import make_settings

    tmp = tmp_path_factory.mktemp("production-model")
    store = tracking_store(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{tmp / 'feedback.db'}")
        mp.chdir(tmp)
        reset_mlflow(mp)
        settings = make_settings(shipped_index, store, tmp)
        version = log_and_register(settings)
        promote(version.name, "Production", version.version, settings=settings, force=True,
                reason="test fixture: a served model, not a candidate")
        model = registry_loader(version.name)(version.version)
        forget_mlflow()
    return {"store": store, "version": version.version, "model": model, "registered": version}


@pytest.fixture
def served_app(production_model, shipped_index, tmp_path, monkeypatch):
    """The app as `llmops-chatbot serve` runs it by default: the in-process backend serving the Production pyfunc
    model (resolved through the registry; loaded once per session), traces written by the real asynchronous
    exporter. Yields (TestClient, settings); the app's lifespan (which drains the trace queue) ends with the test."""
    import mlflow
    from fastapi.testclient import TestClient

    from chatbot_model.server import create_app
    from chatbot_model.server.backends import InProcessBackend
    from tests.helpers import make_settings

    from chatbot_model.tracing import writer

    store = production_model["store"]
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    # the process's trace pipeline, as a server process starts with it (the app's lifespan shuts it down at exit)
    monkeypatch.setattr(writer, "_pipeline", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    settings = make_settings(shipped_index, store, tmp_path, alias_poll_s=0)
    assert settings.serving_backend == "in-process"  # the default
    backend = InProcessBackend(settings, model=production_model["model"])
    with TestClient(create_app(settings, backend=backend)) as client:
        assert backend.loaded.wait(120) and backend.load_error is None, backend.load_error
        yield client, settings
