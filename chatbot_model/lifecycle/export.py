"""`llmops-chatbot export-model`: the self-contained MLflow model directory KServe loads.

KServe's MLflow runtime (MLServer with `mlserver-mlflow`) downloads `storageUri` into the pod and calls
`mlflow.pyfunc.load_model` on the directory: no tracking server, no registry, no network. The exported
directory is the logged model (MLmodel, code/, artifacts/ with the docs, hint, settings, the prebuilt FAISS
index and the ONNX embedder, requirements.txt) with the registered version written into its `model_config`
(so nothing has to ask the registry which version it is) and, by default, `adaptation: frozen`: the version
serves alone, without the feedback store (V2 inference has no feedback route). `--adaptation live` keeps
following the shared ratings: then set CHATBOT_FEEDBACK_DB_URL in the pod to the shared PostgreSQL.

Destinations: a local directory (new or empty), or any URI MLflow has an artifact repository for (s3://,
gs://, wasbs://, hdfs://...), written with `get_artifact_repository(dest).log_artifacts(...)`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


from chatbot_model.errors import InvalidInput
from chatbot_model.lifecycle.model_uri import resolve_version

ADAPTATIONS = ("frozen", "live")
EXPORT_INFO = "export.json"  # beside MLmodel: where the directory came from
# the pod's environment the check runs with: no tracking server, no network (a dead proxy), no writes
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTP_PROXY": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "CHATBOT_TRACING": "false",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@dataclass
class Export:
    dest: str
    model_uri: str
    version: str | None
    adaptation: str


def is_remote(dest: str) -> bool:
    return "://" in dest and not dest.startswith("file://")


def prepare(model_uri: str, workdir: Path, adaptation: str = "frozen") -> tuple[Path, str | None]:
    """Download `model_uri` into `workdir/model` and pin its version and adaptation in MLmodel."""
    import mlflow
    from mlflow.models import Model

    if adaptation not in ADAPTATIONS:
        raise InvalidInput(f"--adaptation {adaptation!r}: choose one of {list(ADAPTATIONS)}", field="adaptation")
    version = resolve_version(model_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(workdir / "model")))
    if not (local / "MLmodel").is_file():
        raise InvalidInput(f"{model_uri} is not an MLflow model (no MLmodel file in it)", field="model_uri")
    model = Model.load(str(local / "MLmodel"))
    pyfunc = model.flavors.get("python_function")
    if not pyfunc or "chatbot" not in (model.metadata or {}):
        raise InvalidInput(f"{model_uri} is not an llmops-chatbot model (no chatbot metadata); register one with "
                           "`llmops-chatbot register-model`", field="model_uri")
    pyfunc["config"] = {**pyfunc.get("config", {}), "model_version": version or "", "adaptation": adaptation}
    model.save(str(local / "MLmodel"))
    info = {"model_uri": model_uri, "version": version, "adaptation": adaptation, "run_id": model.run_id,
            "model_id": getattr(model, "model_id", None)}
    (local / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return local, version


def export_model(model_uri: str, dest: str, adaptation: str = "frozen") -> Export:
    """Write the model directory to `dest` (a new or empty local directory, or an artifact-store URI)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    target = None if is_remote(dest) else Path(dest.removeprefix("file://")).resolve()
    if target is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"--dest {target} exists and is not an empty directory; choose a new one (an export "
                           "is never merged into an older one)", field="dest")
    with tempfile.TemporaryDirectory(prefix="llmops-chatbot-export-") as tmp:
        local, version = prepare(model_uri, Path(tmp), adaptation)
        if target is None:
            get_artifact_repository(dest).log_artifacts(str(local))
        else:
            shutil.copytree(local, target, dirs_exist_ok=True)
    return Export(dest=str(target or dest), model_uri=model_uri, version=version, adaptation=adaptation)


def check_offline(model_dir: str | Path, question: str = "What is MLflow used for?") -> dict:
    """Load the exported directory and answer `question` in a fresh process the way a pod would: no
    MLFLOW_TRACKING_URI, no CHATBOT_* settings, no network (a dead proxy), in an empty working directory that
    must stay empty. Returns the answer row; raises RuntimeError with the process output otherwise."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "CHATBOT_")) and k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env.update(OFFLINE_ENV)
    code = ("import json, sys, mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
            "row = m.predict(pd.DataFrame({'question': [sys.argv[2]]})).iloc[0].to_dict()\n"
            "row['sources'] = [dict(s) for s in row['sources']]\n"
            "print('ROW=' + json.dumps(row, default=str))\n")
    with tempfile.TemporaryDirectory(prefix="llmops-chatbot-export-check-") as cwd:
        proc = subprocess.run([sys.executable, "-c", code, str(Path(model_dir).resolve()), question], env=env,
                              cwd=cwd, capture_output=True, text=True, timeout=600)
        left = sorted(os.listdir(cwd))
    rows = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW=")]
    if proc.returncode or not rows:
        raise RuntimeError(f"the exported model did not load offline:\n{proc.stderr[-3000:]}")
    if left:
        raise RuntimeError(f"loading the exported model wrote {left} into the working directory")
    return json.loads(rows[0])
