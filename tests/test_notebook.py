"""notebooks/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient) against a temporary store:
it registers a version, loads it by alias, answers a DataFrame and a conversation, and rates an answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_against_a_temporary_store(index_dir, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from chatbot_model.store.feedback import FeedbackStore

    # the kernel inherits the environment: the test's store, index and feedback DB, this checkout's package
    monkeypatch.setenv("CHATBOT_GUARDRAIL_BACKEND", "embedded")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = {i: "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "production -> 1" in text and "models:/llmops-chatbot@production is version 1" in text
    assert "How do I register a model version in MLflow?" in text and "model_version" in text
    (rating,) = FeedbackStore(os.environ["CHATBOT_FEEDBACK_DB_URL"]).ratings()
    assert rating.rating == "up" and rating.model_version == "1" and rating.session_id == "quickstart"
    assert rating.trace_id.startswith("tr-")
