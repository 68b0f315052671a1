"""Who may change the registry: on a tracking server run with MLflow's basic-auth app
(`mlflow server --app-name basic-auth`, k8s/overlays/tracking-postgres), a read-only user for the serving pods
and a writer for the pipeline.

- the writer (the pipeline: register, evaluate, promote, adapt) gets MANAGE on the registered model, on the
  experiment its versions are logged in and on the hint prompt (`lifecycle/prompts.py`);
- the reader (the wrapper and model pods) gets READ on both, so it loads the model but cannot register a
  version, move an alias or overwrite a logged model's files (the model is code: whoever writes it runs code in
  every serving pod), READ on the hint prompt, and EDIT on the traces experiment only (traces and feedback
  assessments).

With the server's `default_permission = NO_PERMISSIONS`, any other user gets nothing. `grant_access` is
idempotent: the k8s Job `llmops-mlflow-users` runs `llmops-chatbot registry-access` after every deploy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    reader: str
    reader_password: str
    writer: str
    writer_password: str
    model_name: str = "llmops-chatbot"
    model_experiment: str = "llmops-chatbot"
    traces_experiment: str = "llmops-chatbot-traces"
    prompt_name: str = "llmops-chatbot-hint"  # lifecycle/prompts.py PROMPT_NAME


def _ensure_user(auth, name: str, password: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(name, password)
        log.info("created user %r", name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(name, password)  # the Secret is the source of truth


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def _ensure_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _grant(auth, user: str, kind: str, resource: str, permission: str) -> None:
    """Grant, replacing an earlier grant of the same user on the same resource."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(user, kind, resource, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(user, kind, resource)
        auth.grant_user_permission(user, kind, resource, permission)


def grant_access(tracking_uri: str, access: Access) -> dict[str, dict[str, str]]:
    """Create (or update) both users and grant their permissions; run as the server's admin
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). Returns {user: {resource: permission}}."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    _ensure_user(auth, access.reader, access.reader_password)
    _ensure_user(auth, access.writer, access.writer_password)
    _ensure_model(client, access.model_name)
    models = _experiment_id(client, access.model_experiment)
    traces = _experiment_id(client, access.traces_experiment)
    grants = {
        access.writer: {("registered_model", access.model_name): "MANAGE", ("experiment", models): "MANAGE",
                        ("experiment", traces): "MANAGE", ("prompt", access.prompt_name): "MANAGE"},
        access.reader: {("registered_model", access.model_name): "READ", ("experiment", models): "READ",
                        ("experiment", traces): "EDIT", ("prompt", access.prompt_name): "READ"},
    }
    for user, resources in grants.items():
        for (kind, resource), permission in resources.items():
            _grant(auth, user, kind, resource, permission)
    return {user: {f"{k}:{r}": p for (k, r), p in resources.items()} for user, resources in grants.items()}
