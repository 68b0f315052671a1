"""One workspace: which store and experiment every entry point uses, and what to say when a model is not there.

- Without MLFLOW_TRACKING_URI the store is the checkout's `mlflow.db` (`config.default_tracking_uri`), from any
  working directory; `load_model` loads a registry URI from it and, when the store has no such model, says
  which store it looked in and what to export.
- `mlflow run` creates its run before our command starts, in the "Default" experiment unless given
  `--experiment-name`/MLFLOW_EXPERIMENT_NAME. `adopt_project_run` moves the step into the project's experiment
  (`evaluate`: the evaluation experiment): a new run there carries the step's parameters and results, and the
  stub run MLflow created says where it went (tag `llmops_chatbot.moved_to` and its note).
"""

from __future__ import annotations

import logging
import os

from chatbot_model.config import Settings, default_tracking_uri, ensure_experiment, load_settings, mask_url
from chatbot_model.errors import NotFound
from chatbot_model.lifecycle.model_uri import parse

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_ID = "0"
MOVED_TAG = "llmops_chatbot.moved_to"
_KEPT_TAGS = ("mlflow.source.", "mlflow.project.", "mlflow.user", "mlflow.gitRepoURL", "mlflow.runName")


def step_experiment(settings: Settings, step: str) -> str:
    """The experiment a step logs to: evaluation apart from the chat traces."""
    return settings.eval_experiment_name if step == "evaluate" else settings.experiment_name


def adopt_project_run(step: str, settings: Settings | None = None) -> str | None:
    """Inside `mlflow run` with no experiment chosen (its run is in "Default"): start the step's run in the
    project's experiment, point MLFLOW_RUN_ID/MLFLOW_EXPERIMENT_ID at it and tag the stub. Returns the new
    run id, or None when nothing moved (no `mlflow run`, an experiment was chosen, or it is already right)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or os.environ.get("MLFLOW_EXPERIMENT_NAME") \
            or os.environ.get("MLFLOW_EXPERIMENT_ID", DEFAULT_EXPERIMENT_ID) != DEFAULT_EXPERIMENT_ID:
        return None
    import mlflow
    from mlflow.entities import Param, RunTag

    settings = settings or load_settings()
    client = mlflow.MlflowClient(settings.tracking_uri)
    stub = client.get_run(run_id)
    if stub.info.experiment_id != DEFAULT_EXPERIMENT_ID:
        return None
    name = step_experiment(settings, step)
    experiment_id = ensure_experiment(name, settings.tracking_uri)
    if experiment_id == DEFAULT_EXPERIMENT_ID:  # CHATBOT_EXPERIMENT_NAME=Default: keep MLflow's run
        return None
    tags = {k: v for k, v in stub.data.tags.items() if k.startswith(_KEPT_TAGS)}
    run = client.create_run(experiment_id, run_name=stub.info.run_name,
                            tags={**tags, "llmops_chatbot.mlflow_run_stub": run_id})
    if stub.data.params:  # the -P parameters `mlflow run` logged
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in stub.data.params.items()])
    note = (f"This `mlflow run` step ran as run {run.info.run_id} in experiment '{name}' (the project's "
            "workspace); give `--experiment-name` or MLFLOW_EXPERIMENT_NAME to choose the experiment yourself.")
    client.log_batch(run_id, tags=[RunTag(MOVED_TAG, f"{name}/{run.info.run_id}"),
                                   RunTag("mlflow.note.content", note)])
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    log.info("mlflow run %s: step %s runs as %s in experiment %s", run_id, step, run.info.run_id, name)
    return run.info.run_id


def finish_adopted_run(run_id: str, failed: bool, tracking_uri: str) -> None:
    """End the adopted run if the command left it running (it may never have opened it)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
    except Exception as exc:  # noqa: BLE001 - the command's outcome stands
        log.warning("could not end run %s: %s", run_id, exc)


def missing_model_hint(model_uri: str, tracking_uri: str) -> str:
    """What to set when `model_uri` is not in the store at `tracking_uri` (empty when nothing to add)."""
    parsed = parse(model_uri)
    if parsed is None:
        return ""
    project = default_tracking_uri()
    hint = f"the store {mask_url(tracking_uri)} has no registered model {parsed[0]!r}"
    if tracking_uri.rstrip("/") != project:
        hint += (f"; the project's store is {project}: `export MLFLOW_TRACKING_URI={project}` (or "
                 f"`mlflow.set_tracking_uri(\"{project}\")`) before loading")
    else:
        hint += ("; register one (`llmops-chatbot register-model`, or `make run`), or point MLFLOW_TRACKING_URI at "
                 "the store that holds it")
    return hint


def load_model(model_uri: str = "models:/llmops-chatbot@production", **kwargs):
    """`mlflow.pyfunc.load_model` from the project's store (MLFLOW_TRACKING_URI when set, else the checkout's
    `mlflow.db`, not the working directory's); a missing model raises NotFound saying what to set."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = os.environ.get("MLFLOW_TRACKING_URI") or load_settings().tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri, **kwargs)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and parse(model_uri):
            client = mlflow.MlflowClient(uri)
            if not client.search_registered_models(f"name='{parse(model_uri)[0]}'"):
                raise NotFound(f"cannot load {model_uri}: {missing_model_hint(model_uri, uri)}") from None
        raise
