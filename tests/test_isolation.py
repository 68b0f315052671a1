"""The suite never writes to the real home: the session's HOME is a temporary directory (conftest), so the ONNX
export cache, Hugging Face, torch and MLflow all resolve below it, in this process and in every subprocess."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from tests.conftest import SESSION_HOME

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def below(path, root: Path = SESSION_HOME) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def test_every_cache_resolves_below_the_session_home():
    import huggingface_hub.constants as hf
    import torch.hub

    from chatbot_model.config import load_settings
    from chatbot_model.retrieval.onnx_export import default_cache_dir

    assert SESSION_HOME.resolve() != REAL_HOME.resolve() and Path.home() == SESSION_HOME
    assert load_settings().embedding_cache_dir is None  # so the ONNX export goes to the default cache ...
    assert below(default_cache_dir())  # ... which is the session's
    assert below(hf.HF_HOME) and below(hf.HF_HUB_CACHE) and below(torch.hub.get_dir())


def test_the_onnx_export_lands_in_the_session_cache_or_the_one_kept_for_test_fast(shipped_index):
    from chatbot_model.retrieval.onnx_export import default_cache_dir

    kept = os.environ.get("LLMOPS_TEST_EXPORTS")  # `make test-fast` keeps it between runs (conftest)
    root = Path(kept) if kept else default_cache_dir()
    exports = list((root / "onnx").glob("*/model.onnx"))  # the shipped index needed one
    assert exports and all(below(p, root) for p in exports)


def test_subprocesses_inherit_the_session_home():
    code = "import os, pathlib; print(pathlib.Path.home()); print(os.environ['XDG_CACHE_HOME'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [Path(p) for p in out] == [SESSION_HOME, SESSION_HOME / ".cache"]
