"""KServe with its real MLflow runtime: k8s/kserve/inferenceservice.yaml checked against the KServe SDK's own
InferenceService models (every field known, types and required fields as the SDK declares them), and the
exported model served by MLServer + mlserver-mlflow on 127.0.0.1 (its own virtualenv, `make mlserver-venv`)
answering a V2 inference request, with the manifest's environment and no tracking server."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import ROOT, free_port, kill_group, responds, tracking_store, unavailable, wait_until
from tests.mlflow_state import forget_mlflow

MANIFEST = ROOT / "k8s" / "kserve" / "inferenceservice.yaml"
MLSERVER_VENV = Path(os.environ.get("MLSERVER_VENV", ROOT / ".venv-mlserver"))
NAME = "llmops-chatbot"
NATIVE = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def _kserve_models():
    """`kserve.models` without `kserve/__init__.py`, which starts importing the model server (grpc, ...): the
    SDK is installed without its dependencies (see the Makefile)."""
    if "kserve.models" in sys.modules:
        return sys.modules["kserve.models"]
    spec = importlib.util.find_spec("kserve")
    if spec is None:
        unavailable("the KServe SDK is not installed: pip install --no-deps kserve==0.21.0 (make install-test does)")
    package = importlib.util.module_from_spec(spec)  # the package object, its __init__ not run
    sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


def build(data, type_name: str, where: str = "InferenceService"):
    """`data` as the SDK model `type_name`; unknown fields, wrong types and missing required fields fail."""
    import kubernetes.client.models as k8s

    if type_name.startswith("list["):
        assert isinstance(data, list), f"{where}: expected a list, got {data!r}"
        return [build(item, type_name[5:-1], f"{where}[{i}]") for i, item in enumerate(data)]
    if type_name.startswith(("dict(", "dict[")):  # the SDK writes dict(str, T), the Kubernetes client dict[str, T]
        inner = re.match(r"dict[(\[]([^,]*), (.*)[)\]]$", type_name).group(2)
        assert isinstance(data, dict), f"{where}: expected a mapping, got {data!r}"
        return {key: build(value, inner, f"{where}.{key}") for key, value in data.items()}
    if type_name == "object":  # IntOrString, quantities
        return data
    if type_name in NATIVE:
        assert isinstance(data, NATIVE[type_name]), f"{where}: expected {type_name}, got {data!r}"
        return data
    cls = getattr(_kserve_models(), type_name, None) or getattr(k8s, type_name)
    assert isinstance(data, dict), f"{where}: expected a {type_name} mapping, got {data!r}"
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{where}: {type_name} has no field {unknown}; known: {sorted(fields)}"
    return cls(**{fields[key]: build(value, cls.openapi_types[fields[key]], f"{where}.{key}")
                  for key, value in data.items()})


@pytest.fixture(scope="module")
def manifest() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_inferenceservice_matches_the_kserve_sdk_schema(manifest):
    isvc = build(manifest, "V1beta1InferenceService")
    assert (isvc.api_version, isvc.kind) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = isvc.spec.predictor.model
    assert model.model_format.name == "mlflow" and model.protocol_version == "v2"
    assert model.storage_uri.startswith(("s3://", "gs://", "pvc://", "https://"))
    assert model.resources.requests["cpu"] and model.resources.limits["memory"]
    assert model.readiness_probe.http_get.path == f"/v2/models/{isvc.metadata.name}/ready"
    assert model.liveness_probe.http_get.path == "/v2/health/live"
    env = {e.name: e.value for e in model.env}
    assert env["CHATBOT_TRACING"] == "false" and env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("path, bad", [
    (("spec", "predictor", "model"), {"protocolVersoin": "v2"}),
    (("spec", "predictor", "model", "readinessProbe", "httpGet"), {"paht": "/"}),
    (("spec", "predictor", "model", "env", 0), {"name": None}),
])
def test_the_schema_check_catches_mistakes(manifest, path, bad):
    doc = copy.deepcopy(manifest)
    target = doc
    for key in path:
        target = target[key]
    target.update(bad)
    with pytest.raises((AssertionError, ValueError)):
        build(doc, "V1beta1InferenceService")


# ---------------------------------------------------------------- MLServer, the runtime KServe runs
@pytest.fixture(scope="module")
def mlserver_bin() -> Path:
    """MLServer's own virtualenv, made by `make mlserver-venv` when missing (~3 min once, then reused)."""
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if not (MLSERVER_VENV / ".installed").exists():
        proc = subprocess.run(["make", "-C", str(ROOT), "mlserver-venv", f"MLSERVER_VENV={MLSERVER_VENV}",
                               ],
                              capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert mlserver.exists(), f"{mlserver} missing: run `make mlserver-venv`"
    return mlserver


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shipped_index) -> Path:
    """A registered Production model exported as KServe loads it."""
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.export import export_model
    from chatbot_model.lifecycle.registry import log_and_register, promote

    root = tmp_path_factory.mktemp("kserve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracking_store(root))
        mp.setenv("CHATBOT_INDEX_DIR", str(shipped_index))
        mp.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{root / 'feedback.db'}")
        mp.chdir(root)
        version = log_and_register(load_settings())
        promote(NAME, "Production", version.version, force=True, reason="kserve test")
        done = export_model(f"models:/{NAME}@production", str(root / "export"))
        forget_mlflow()
    assert done.version == version.version
    return Path(done.dest)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mlserver_mlflow_runtime_answers_a_v2_request(mlserver_bin, exported, manifest, tmp_path):
    """`mlserver start` with the MLflow runtime on the exported directory, the manifest's env, no
    MLFLOW_TRACKING_URI and no CHATBOT_* settings of the host."""
    pod = tmp_path / "pod"  # MLServer's working directory (tmp_path holds the test's own tracking store)
    repo = pod / "models" / NAME
    repo.mkdir(parents=True)
    (repo / "model-settings.json").write_text(
        f'{{"name": "{NAME}", "implementation": "mlserver_mlflow.MLflowRuntime", '
        f'"parameters": {{"uri": "{exported}"}}}}')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CHATBOT_", "MLSERVER_"))}
    env.update({e["name"]: e["value"] for e in manifest["spec"]["predictor"]["model"]["env"]})
    env.update(MLSERVER_HOST="127.0.0.1", MLSERVER_HTTP_PORT=str(port), MLSERVER_GRPC_PORT=str(free_port()),
               MLSERVER_METRICS_PORT=str(free_port()), MLSERVER_PARALLEL_WORKERS="0",
               PATH=f"{mlserver_bin.parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH="")
    log = open(tmp_path / "mlserver.log", "w")
    proc = subprocess.Popen([str(mlserver_bin), "start", str(pod / "models")], env=env, cwd=pod,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: responds(f"{base}/v2/models/{NAME}/ready"), "MLServer to load the model", 900,
                   interval=1, proc=proc, log=tmp_path / "mlserver.log")
        questions = ["What is MLflow used for?", "How do I register a model version?"]
        request = {"inputs": [{"name": "question", "shape": [len(questions)], "datatype": "BYTES",
                               "data": questions}]}
        response = httpx.post(f"{base}/v2/models/{NAME}/infer", json=request, timeout=300)
        assert response.status_code == 200, response.text[:2000] + (tmp_path / "mlserver.log").read_text()[-3000:]
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        from chatbot_model.contract import OUTPUT_COLUMNS

        assert set(OUTPUT_COLUMNS) <= set(outputs), sorted(outputs)
        answers, asked = outputs["answer"]["data"], outputs["question"]["data"]
        assert asked == questions and all(a.strip() for a in answers)
        assert "MLflow" in answers[0] and outputs["provider"]["data"] == ["local", "local"]
        assert outputs["error"]["data"] == ["", ""]
        metadata = httpx.get(f"{base}/v2/models/{NAME}", timeout=10).json()
        # the signature's inputs: the question and the optional conversation history (a request without it is a
        # single-turn question, as above)
        assert [i["name"] for i in metadata["inputs"]] == ["question", "history"]
    finally:
        kill_group(proc, grace=30)
        log.close()
    assert sorted(p.name for p in pod.iterdir()) == ["models"], "the model wrote state into the working directory"


def test_export_refuses_a_non_empty_destination(tmp_path):
    from chatbot_model.errors import InvalidInput
    from chatbot_model.lifecycle.export import export_model

    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old.txt").write_text("an older export")
    with pytest.raises(InvalidInput, match="exists and is not an empty directory"):
        export_model("models:/llmops-chatbot@production", str(tmp_path / "dest"))
