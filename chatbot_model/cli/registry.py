"""`llmops-chatbot register-model` and `promote-model` (also the MLproject entry points `register_model`,
`promote_model`; the CLI accepts either spelling).

Under `mlflow run`, MLFLOW_RUN_ID names the run MLflow created: both commands log into it (their parameters
and the registered/promoted version), so each `mlflow run` is one run with what it did.
"""

from __future__ import annotations

import os

import click

from chatbot_model.lifecycle.model_uri import STAGES


def _blank(value):
    return value if value not in (None, "", "latest") else None


@click.command("register-model")
@click.option("--name", default=None, help="Registered model name (default: CHATBOT_REGISTERED_MODEL_NAME, llmops-chatbot).")
@click.option("--docs", default=None, help="Knowledge base docs.json to ship (default: CHATBOT_DOCS_PATH, artifacts/docs.json).")
@click.option("--hint-file", default=None, help="Hint file to ship (default: CHATBOT_HINT_PATH, artifacts/adapter_hint.txt).")
def register_model(name: str | None, docs: str | None, hint_file: str | None) -> None:
    """Log the chatbot as an MLflow pyfunc model and register it as a new version of NAME."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.lifecycle.registry import log_and_register  # deferred: loads numpy, pydantic

    result = log_and_register(load_settings(), _blank(name), _blank(docs), _blank(hint_file))
    click.echo(f"registered {result.name} version {result.version}")
    click.echo(f"  version uri:  {result.version_uri}")
    click.echo(f"  run uri:      {result.run_uri}")
    click.echo(f"  logged model: {result.model_uri}")
    click.echo(f"  tags:         {', '.join(f'{k}={v}' for k, v in sorted(result.tags.items()))}")
    click.echo(f"next: llmops-chatbot promote-model --name {result.name} --stage Staging --version {result.version}")


@click.command("promote-model")
@click.option("--name", default=None, help="Registered model name (default: CHATBOT_REGISTERED_MODEL_NAME, llmops-chatbot).")
@click.option("--stage", required=True, type=click.Choice(list(STAGES), case_sensitive=False),
              help="Target stage; the alias of the same name (staging/production) moves with it.")
@click.option("--version", default=None, help="Version to promote (default: the latest).")
@click.option("--force", is_flag=True,
              help="Production: promote even when the gate refuses (never evaluated, failed, worse than "
                   "Production); recorded as promotion.forced* tags on the version.")
@click.option("--reason", default=None, help="Why --force was needed (tag promotion.forced_reason).")
def promote_model(name: str | None, stage: str, version: str | None, force: bool, reason: str | None) -> None:
    """Move a version of NAME to STAGE (archiving the previous holder) and set the matching alias.

    To Production only a version whose evaluation passed (`llmops-chatbot evaluate`) and that is not worse
    than the current Production version beyond the tolerance; Staging has no gate."""

    import mlflow
    from mlflow import MlflowClient

    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.lifecycle.gate import EvaluationGate, PromotionRefused  # deferred: loads pydantic
    # deferred: loads numpy, pydantic
    from chatbot_model.lifecycle.registry import feedback_store_of, name_step_run, promote, use_store

    settings = load_settings()
    name = _blank(name) or settings.registered_model_name
    use_store(settings)
    gate = EvaluationGate(MlflowClient(), name, force=force, feedback_store=feedback_store_of(settings))
    try:
        result = promote(name, stage, _blank(version), gate=gate, force=force, reason=_blank(reason),
                         settings=settings)
    except PromotionRefused:
        for line in gate.lines:
            click.echo(line)
        raise
    for line in gate.lines:
        click.echo(line)
    forced = result.forced  # the promotion.forced* tags promote() recorded
    if forced:
        click.echo(f"WARNING: promotion forced over the gate: {gate.refusal}", err=True)
        click.echo(f"  recorded on version {result.version}: promotion.forced=true, "
                   f"promotion.forced_by={forced['promotion.forced_by']}")
    elif force and result.stage == "Production":
        click.echo("--force: the gate passed anyway; nothing was overridden")
    if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: record what was promoted on its run
        with mlflow.start_run():
            name_step_run(f"promote-{name}")
            mlflow.log_params({"promoted_model": name, "promoted_version": result.version,
                               "promoted_stage": result.stage})
            mlflow.set_tags({"promoted_version": result.version, "archived_versions": ",".join(result.archived),
                             **(forced or {})})
    state = "" if result.changed else " (already there: nothing changed)"
    archived = f"; archived version(s) {', '.join(result.archived)}" if result.archived else ""
    click.echo(f"{name} version {result.version} -> {result.stage}, alias @{result.alias}{archived}{state}")
    for uri in result.uris:
        click.echo(f"  {uri}")


@click.command("registry-access")
@click.option("--reader", envvar="MLFLOW_READER_USERNAME", default="chatbot-reader", show_default=True,
              help="Read-only user of the serving pods (env MLFLOW_READER_USERNAME).")
@click.option("--writer", envvar="MLFLOW_WRITER_USERNAME", default="pipeline-writer", show_default=True,
              help="User of the pipeline that registers and promotes (env MLFLOW_WRITER_USERNAME).")
@click.option("--traces-experiment", default="llmops-chatbot-traces", show_default=True,
              help="Experiment the serving pods write traces to (their CHATBOT_EXPERIMENT_NAME).")
def registry_access(reader: str, writer: str, traces_experiment: str) -> None:
    """On a basic-auth tracking server: create the reader and writer users (passwords from the environment:
    MLFLOW_READER_PASSWORD, MLFLOW_WRITER_PASSWORD) and grant them their permissions, as the admin
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). Idempotent; see docs/security.md."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.lifecycle.registry_access import Access, grant_access  # deferred: loads mlflow

    missing = [v for v in ("MLFLOW_READER_PASSWORD", "MLFLOW_WRITER_PASSWORD") if not os.environ.get(v)]
    if missing:
        raise click.ClickException(f"set {' and '.join(missing)} (the users' passwords, from a Secret)")
    settings = load_settings()
    granted = grant_access(settings.tracking_uri, Access(
        reader=reader, reader_password=os.environ["MLFLOW_READER_PASSWORD"], writer=writer,
        writer_password=os.environ["MLFLOW_WRITER_PASSWORD"], model_name=settings.registered_model_name,
        model_experiment=settings.experiment_name, traces_experiment=traces_experiment))
    for user, resources in granted.items():
        click.echo(f"{user}: " + ", ".join(f"{r} {p}" for r, p in resources.items()))
