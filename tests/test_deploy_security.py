"""Security of the deployment, checked offline (docs/security.md maps each finding to its test): the registry
only the pipeline writes, NetworkPolicies, the chatbot's own database role, required secrets, hardened KServe,
the same uvicorn limits everywhere, the alias rollout's API access (RBAC, its token, its egress). tests/test_deploy.py renders both kustomizations and validates every
document with kubernetes-validate; tests/test_registry_access.py runs the basic-auth tracking server."""

from __future__ import annotations

import pytest

def _rendered():
    from tests.test_deploy import K8S, OVERLAY, _render

    return {"base": _render(K8S), "overlay": _render(OVERLAY)}


@pytest.fixture(scope="module")
def rendered():
    return _rendered()


def _pods(docs) -> dict[str, dict]:
    """name -> pod template labels of every workload."""
    out = {}
    for d in docs:
        spec = d.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            out[d["metadata"]["name"]] = template["metadata"]["labels"]
    return out


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policy(docs, name):
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


def _admitted(policy, pods) -> tuple[set, set]:
    """(the workloads the policy guards, the workloads it lets in)."""
    guarded = {n for n, labels in pods.items() if _matches(policy["spec"]["podSelector"], labels)}
    peers = [p["podSelector"] for rule in policy["spec"]["ingress"] for p in rule["from"]]
    assert all(set(p) == {"podSelector"} for rule in policy["spec"]["ingress"] for p in rule["from"])  # no ipBlock
    return guarded, {n for n, labels in pods.items() if any(_matches(s, labels) for s in peers)}


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_only_the_wrapper_reaches_the_model_pods(rendered, which):
    """The finding: port 8080 /invocations on the model pods skips the API key, reachable from any pod."""
    docs = rendered[which]
    guarded, admitted = _admitted(_policy(docs, "llmops-chatbot-model-ingress"), _pods(docs))
    assert guarded == {"llmops-chatbot-model"} and admitted == {"llmops-chatbot"}
    assert _policy(docs, "llmops-chatbot-model-ingress")["spec"]["ingress"][0]["ports"] == [
        {"port": 8080, "protocol": "TCP"}]


def test_only_the_chatbot_and_the_pipeline_reach_the_tracking_server_and_postgres(rendered):
    docs = rendered["overlay"]
    pods = _pods(docs)
    pods["a-pipeline-job"] = {"app.kubernetes.io/component": "pipeline"}  # how the pipeline's pods are labelled
    pods["some-other-app"] = {"app.kubernetes.io/name": "other"}
    guarded, admitted = _admitted(_policy(docs, "llmops-mlflow-ingress"), pods)
    assert guarded == {"llmops-mlflow"}
    assert admitted == {"llmops-chatbot", "llmops-chatbot-model", "a-pipeline-job", "llmops-mlflow-users",
                        "llmops-alias-rollout"}
    guarded, admitted = _admitted(_policy(docs, "llmops-postgres-ingress"), pods)
    assert guarded == {"llmops-postgres"}
    assert admitted == {"llmops-mlflow", "llmops-chatbot", "llmops-chatbot-model", "llmops-chatbot-retention"}


def _container(docs, name):
    d = next(d for d in docs if d["metadata"]["name"] == name and d["kind"] in ("Deployment", "Job", "CronJob"))
    spec = d["spec"].get("jobTemplate", {}).get("spec", d["spec"])
    return spec["template"]["spec"]["containers"][0]


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_tracking_server_runs_basic_auth_and_serving_pods_only_read(rendered):
    """The finding: whoever reached the tracking server (no auth) could register a model - code - that every
    serving pod loads at its next alias move. Now MLflow's basic-auth app runs with NO_PERMISSIONS by default;
    the serving pods are `chatbot-reader` (tests/test_registry_access.py proves what it may not do on a real
    server); the writer's and admin's passwords are given to no serving pod."""
    import configparser

    from tests.test_deploy import OVERLAY

    docs = rendered["overlay"]
    server = _container(docs, "llmops-mlflow")
    assert "--app-name=basic-auth" in server["args"]
    env = _env(server)
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow-auth/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["secretKeyRef"] == {"name": "llmops-mlflow-auth", "key": "ADMIN_PASSWORD"}
    ini = configparser.ConfigParser()
    ini.read(OVERLAY / "basic_auth.ini")
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert ini["mlflow"]["database_uri"].startswith("sqlite:////var/lib/mlflow/auth/")
    mounts = {m["mountPath"] for m in server["volumeMounts"]}
    assert {"/var/lib/mlflow/auth", "/etc/mlflow-auth"} <= mounts
    for name in ("llmops-chatbot", "llmops-chatbot-model"):
        env = _env(_container(docs, name))
        assert env["MLFLOW_TRACKING_USERNAME"] == "chatbot-reader", name
        assert env["MLFLOW_TRACKING_PASSWORD"]["secretKeyRef"] == {"name": "llmops-mlflow-auth",
                                                                   "key": "READER_PASSWORD"}
        assert env["CHATBOT_EXPERIMENT_NAME"] == "llmops-chatbot-traces"  # the only experiment it may write
        refs = {str(v) for v in env.values()}
        assert not any("WRITER_PASSWORD" in r or "ADMIN_PASSWORD" in r for r in refs), name
    job = _container(docs, "llmops-mlflow-users")
    assert job["command"][:2] == ["llmops-chatbot", "registry-access"]


def test_the_chatbot_uses_its_own_database_role_not_the_superuser(rendered):
    from tests.test_deploy import OVERLAY

    docs = rendered["overlay"]
    for name in ("llmops-chatbot", "llmops-chatbot-model", "llmops-chatbot-retention"):
        env = _env(_container(docs, name))
        assert env["CHATBOT_FEEDBACK_DB_URL"].startswith("postgresql://$(CHATBOT_DB_USER):$(CHATBOT_DB_PASSWORD)@")
        assert "POSTGRES_PASSWORD" not in env and "POSTGRES_USER" not in env, name
    script = (OVERLAY / "20-chatbot-role.sh").read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script
    assert "ALTER DATABASE chatbot_feedback OWNER TO" in script and "REVOKE ALL ON DATABASE mlflow FROM PUBLIC" in script
    assert ":'password'" in script  # a psql variable, quoted by psql: no SQL built from the Secret's text
    init = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("llmops-postgres-init"))
    assert sorted(init["data"]) == ["10-chatbot-feedback.sql", "20-chatbot-role.sh"]


def test_retention_runs_nightly_in_the_cluster(rendered):
    cron = next(d for d in rendered["overlay"] if d["kind"] == "CronJob"
                and d["metadata"]["name"] == "llmops-chatbot-retention")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert _container(rendered["overlay"], cron["metadata"]["name"])["command"] == [
        "llmops-chatbot", "conversations", "prune"]


ROLLOUT = "llmops-alias-rollout"
ROLLOUT_RULES = [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["llmops-chatbot-model"],
                  "verbs": ["get", "patch"]}]


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_the_only_api_access_is_the_alias_rollouts_get_and_patch_of_the_model_deployment(rendered, which):
    """RBAC: no ClusterRole or ClusterRoleBinding; the one Role (namespaced) allows only `get` and `patch` on the
    Deployment llmops-chatbot-model and is bound only to the alias rollout's ServiceAccount."""
    docs = rendered[which]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles, bindings = [d for d in docs if d["kind"] == "Role"], [d for d in docs if d["kind"] == "RoleBinding"]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    if which == "base":
        assert not roles and not bindings and not accounts
        return
    assert [r["metadata"]["name"] for r in roles] == [ROLLOUT] and roles[0]["rules"] == ROLLOUT_RULES
    assert [a["metadata"]["name"] for a in accounts] == [ROLLOUT]
    assert accounts[0]["automountServiceAccountToken"] is False
    (binding,) = bindings
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLLOUT}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": ROLLOUT}]  # this namespace's


def _cronjob_pod(docs, name):
    d = next(d for d in docs if d["metadata"]["name"] == name and d["kind"] == "CronJob")
    return d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _token_mounts(pod: dict) -> dict[str, list[str]]:
    """container -> its mounts of a volume carrying a service-account token."""
    token_volumes = {v["name"] for v in pod.get("volumes", [])
                     if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))}
    return {c["name"]: [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in token_volumes]
            for c in pod.get("initContainers", []) + pod["containers"]}


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_only_the_alias_rollouts_kubectl_container_holds_an_api_token(rendered, which):
    """No pod automounts a token or runs as another ServiceAccount; the alias rollout's token is projected into
    its kubectl container alone (the init container, which runs our code against the tracking server, has none)."""
    holders = {}
    for d in rendered[which]:
        spec = d.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if not template:
            continue
        pod = template["spec"]
        assert pod.get("automountServiceAccountToken") is False, d["metadata"]["name"]
        holders.update({(d["metadata"]["name"], c): paths for c, paths in _token_mounts(pod).items() if paths})
        if d["metadata"]["name"] != ROLLOUT:
            assert pod.get("serviceAccountName", "default") == "default", d["metadata"]["name"]
    if which == "base":
        assert not holders
        return
    assert holders == {(ROLLOUT, "patch"): ["/var/run/secrets/kubernetes.io/serviceaccount"]}
    pod = _cronjob_pod(rendered[which], ROLLOUT)
    assert pod["serviceAccountName"] == ROLLOUT
    (patch,) = pod["containers"]
    assert patch["command"] == ["/bin/kubectl"] and patch["args"][:3] == ["patch", "deployment", "llmops-chatbot-model"]
    token = next(v for v in pod["volumes"] if "projected" in v)["projected"]["sources"][0]["serviceAccountToken"]
    assert "audience" not in token and token["expirationSeconds"] <= 3600  # the API server's, short-lived


def test_the_alias_rollout_pods_reach_only_the_tracking_server_dns_and_the_api(rendered):
    """Egress of the alias rollout's pods: the tracking server's pods on its Service port, kube-dns on 53, and TCP
    443/6443 (the Kubernetes API, whose address is the cluster's); nothing else."""
    docs = rendered["overlay"]
    pods = _pods(docs)
    policy = _policy(docs, f"{ROLLOUT}-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert {n for n, labels in pods.items() if _matches(policy["spec"]["podSelector"], labels)} == {ROLLOUT}
    tracking, dns, api = policy["spec"]["egress"]
    port = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "llmops-mlflow")[
        "spec"]["ports"][0]["port"]
    assert [set(p) for p in tracking["to"]] == [{"podSelector"}]
    assert {n for n, labels in pods.items() if _matches(tracking["to"][0]["podSelector"], labels)} == {"llmops-mlflow"}
    assert tracking["ports"] == [{"port": port, "protocol": "TCP"}]
    assert dns["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert "to" not in api and sorted((p["port"], p["protocol"]) for p in api["ports"]) == [(443, "TCP"), (6443, "TCP")]


def test_the_inferenceservice_runs_hardened():
    import yaml

    from tests.test_deploy import K8S

    isvc = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    predictor = isvc["spec"]["predictor"]
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert predictor["automountServiceAccountToken"] is False
    container = predictor["model"]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False and container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in predictor["model"]["volumeMounts"]


def test_uvicorn_runs_with_the_same_limits_everywhere(rendered):
    """The finding: uvicorn ran without a concurrency limit or keep-alive/header limits."""
    from dockerfile_parse import DockerfileParser

    from chatbot_model.cli.serve import UVICORN_LIMITS, uvicorn_kwargs
    from tests.test_deploy import ROOT

    wanted = [x for pair in UVICORN_LIMITS.items() for x in pair]

    def has_limits(command):
        return all(command[command.index(flag) + 1] == value for flag, value in UVICORN_LIMITS.items())

    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    cmd = __import__("json").loads(next(i["value"] for i in reversed(parser.structure) if i["instruction"] == "CMD"))
    assert cmd[0] == "uvicorn" and has_limits(cmd), cmd
    for which in ("base", "overlay"):
        command = _container(rendered[which], "llmops-chatbot")["command"]
        assert has_limits(command), (which, command)
    assert len(wanted) == 10 and uvicorn_kwargs()["limit_concurrency"] == 256
    import inspect

    import uvicorn

    assert set(uvicorn_kwargs()) <= set(inspect.signature(uvicorn.Config).parameters)
