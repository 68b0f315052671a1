"""`llmops-chatbot doctor`: what the project would use, each with its fix (wired in cli/main.py).

One check per part: tracking store and experiment, the registered model, the index against the documents, the
guardrail backend and why, the providers, the feedback database, the trace sink. Each prints `ok`, `warn`
(works, but not as you may expect) or `FAIL` (would break `make run`); the exit code is 1 when any check fails.
Nothing heavy loads (no model, no torch): the checks read stores and files only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    part: str
    status: str
    detail: str
    fix: str = ""


def tracking(settings) -> list[Check]:
    import mlflow

    from chatbot_model.config import default_tracking_uri, mask_url  # deferred: --help stays fast

    uri = settings.tracking_uri
    source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "default: the checkout's store"
    export = "" if uri.startswith(("http", "databricks")) or uri != default_tracking_uri() else \
        f"elsewhere (a notebook in another folder): export MLFLOW_TRACKING_URI={uri}"
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        return [Check("tracking store", WARN, f"{mask_url(uri)} ({source}) does not exist yet",
                      "`make run` creates it (or any command that logs)" + (f"; {export}" if export else "")),
                Check("experiment", OK, f"{settings.experiment_name} (created on first use); evaluations in "
                      f"{settings.eval_experiment_name}")]
    try:
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name(settings.experiment_name)
    except Exception as exc:  # noqa: BLE001 - reported
        return [Check("tracking store", FAIL, f"{mask_url(uri)} ({source}): {str(exc).splitlines()[0][:200]}",
                      "start the tracking server or fix MLFLOW_TRACKING_URI")]
    checks = [Check("tracking store", OK, f"{mask_url(uri)} ({source})", export)]
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if chosen:
        checks.append(Check("experiment", OK, f"id {chosen} (MLFLOW_EXPERIMENT_ID) for runs and traces"))
    else:
        where = f"id {experiment.experiment_id}" if experiment else "created on first use"
        checks.append(Check("experiment", OK, f"{settings.experiment_name} ({where}); evaluations in "
                            f"{settings.eval_experiment_name}", "MLFLOW_EXPERIMENT_NAME chooses another"))
    return checks


def registered_model(settings) -> list[Check]:
    import mlflow

    from chatbot_model.errors import NotFound  # deferred: --help stays fast
    from chatbot_model.lifecycle.model_uri import parse, resolve  # deferred: --help stays fast

    uri = settings.model_uri
    parsed = parse(uri)
    if parsed is None:
        return [Check("model", OK, f"{uri} (not a registry URI: loaded as is)")]
    try:
        if settings.tracking_uri.startswith("sqlite:///") and not Path(settings.tracking_uri[10:]).exists():
            raise NotFound(f"{uri}: the store does not exist yet")  # (opening it would create it)
        client = mlflow.MlflowClient(settings.tracking_uri)
        name, version = resolve(client, uri)
    except NotFound as exc:
        return [Check("model", WARN, str(exc),
                      "`make run` registers, evaluates and promotes one (`llmops-chatbot serve --ensure-model`)")]
    except Exception as exc:  # noqa: BLE001 - the store check above says why
        return [Check("model", WARN, f"{uri}: cannot read the registry ({str(exc).splitlines()[0][:160]})")]
    mv = client.get_model_version(name, version)
    aliases = ", ".join(f"@{a}" for a in (mv.aliases or [])) or "no alias"
    status = (mv.tags or {}).get("eval.status", "not evaluated")
    return [Check("model", OK, f"{uri} -> {name} version {version} (stage {mv.current_stage}, {aliases}; "
                  f"evaluation {status})")]


def index(settings) -> list[Check]:
    from chatbot_model.retrieval.rag import RAGPipeline, fingerprint, iter_documents  # deferred: --help stays fast

    docs = Path(settings.docs_path)
    if not docs.exists():
        return [Check("index", FAIL, f"documents {docs} do not exist", "set CHATBOT_DOCS_PATH to a file or folder")]
    try:
        expected = fingerprint(iter_documents(docs), RAGPipeline(settings).embedder_name, settings)
    except Exception as exc:  # noqa: BLE001 - a malformed docs file
        return [Check("index", FAIL, f"documents {docs}: {exc}", "fix the file (docs/answers.md shows the format)")]
    manifest = Path(settings.index_dir) / "manifest.json"
    if not manifest.exists():
        return [Check("index", WARN, f"no index in {settings.index_dir} (documents {docs}, fingerprint {expected})",
                      "`llmops-chatbot build-index` (`make run` builds it)")]
    found = json.loads(manifest.read_text()).get("fingerprint")
    if found != expected:
        return [Check("index", WARN, f"{settings.index_dir} is stale: fingerprint {found}, documents give {expected}",
                      "`llmops-chatbot build-index` (or the next start rebuilds it)")]
    return [Check("index", OK, f"{settings.index_dir} matches {docs} (fingerprint {expected})")]


def guardrail(settings) -> list[Check]:
    from chatbot_model.guardrail.core import HOW_TO_GET_TOXIC_BERT  # deferred: --help stays fast
    from chatbot_model.lifecycle.registry import resolve_guardrail_backend  # deferred: --help stays fast

    chosen = settings.guardrail_backend
    cached = resolve_guardrail_backend(settings.model_copy(update={"guardrail_backend": "auto"})) == "auto"
    where = f"toxic-bert {settings.toxic_bert_model!r} is {'available locally' if cached else 'not cached'}"
    if chosen == "auto":
        if cached:
            return [Check("guardrail", OK, f"auto -> toxic-bert, because {where}")]
        return [Check("guardrail", OK, f"auto -> embedded (the shipped classifier), because {where}",
                      f"to use toxic-bert, {HOW_TO_GET_TOXIC_BERT}")]
    if chosen == "toxic-bert" and not cached:
        return [Check("guardrail", FAIL, f"toxic-bert (CHATBOT_GUARDRAIL_BACKEND), but {where}",
                      f"{HOW_TO_GET_TOXIC_BERT}; or CHATBOT_GUARDRAIL_BACKEND=auto")]
    return [Check("guardrail", OK, f"{chosen} (CHATBOT_GUARDRAIL_BACKEND)")]


def providers(settings) -> list[Check]:
    from chatbot_model.providers import PROVIDERS  # deferred: --help stays fast

    checks = []
    for name, cls in PROVIDERS.items():
        provider = cls(settings)
        ready, why = provider.available()
        base = os.environ.get(cls.base_url_env_var) if cls.base_url_env_var else None
        if ready:
            checks.append(Check(f"provider {name}", OK, "ready" + (f" ({cls.base_url_env_var}={base})" if base else "")))
        else:
            checks.append(Check(f"provider {name}", OK, f"off: {why}; its route falls back to `local`",
                                f"set {cls.key_env_var} to use it" if cls.key_env_var else ""))
    return checks


def feedback_db(settings) -> list[Check]:
    from sqlalchemy.exc import SQLAlchemyError  # deferred: --help stays fast

    from chatbot_model.store import migrations  # deferred: --help stays fast
    from chatbot_model.store.db import Database, oneline  # deferred: --help stays fast

    if not settings.feedback_db_url:
        return [Check("feedback store", WARN, "off (CHATBOT_FEEDBACK_DB_URL is empty): ratings are not kept",
                      "set CHATBOT_FEEDBACK_DB_URL=sqlite:///.chatbot/feedback.db")]
    store = Database(settings.feedback_db_url)
    if store.sqlite_path and not Path(store.sqlite_path).expanduser().exists():
        return [Check("feedback store", OK, f"{store.masked_url}: no file yet; created at revision "
                      f"{migrations.head()} on first use")]
    engine = store.make_engine()
    try:
        with engine.connect() as conn:
            found = migrations.status(conn)
    except SQLAlchemyError as exc:
        return [Check("feedback store", FAIL, f"{store.masked_url}: {oneline(exc)}",
                      "start the database or fix CHATBOT_FEEDBACK_DB_URL")]
    finally:
        engine.dispose()
    return [Check("feedback store", OK if found.at_head else WARN, f"{store.masked_url}: {found.describe()}",
                  "" if found.at_head else "`llmops-chatbot db upgrade` (every process also upgrades on open)")]


def trace_sink(settings) -> list[Check]:
    from chatbot_model.config import mask_url  # deferred: --help stays fast

    if not settings.tracing:
        return [Check("traces", OK, "off (CHATBOT_TRACING=false)", "CHATBOT_TRACING=true records one trace per answer")]
    from chatbot_model.tracing.otlp import OTLP_PATH, resolve_sink  # deferred: --help stays fast

    queue = f"queue {settings.trace_queue_size} (drops counted in chatbot_traces_dropped_total)"
    uri = mask_url(settings.tracking_uri)
    if resolve_sink(settings.trace_sink, settings.tracking_uri) == "otlp":
        return [Check("traces", OK, f"OTLP/HTTP to {uri.rstrip('/')}{OTLP_PATH} (the tracking server writes them), {queue}")]
    fix = ("pip install opentelemetry-exporter-otlp-proto-http to send them over OTLP"
           if settings.tracking_uri.startswith("http") and settings.trace_sink == "auto" else "")
    return [Check("traces", OK, f"in-process MLflow writer to {uri}, {queue}", fix)]


CHECKS = (tracking, registered_model, index, guardrail, providers, feedback_db, trace_sink)


def run_checks(settings) -> list[Check]:
    out = []
    for check in CHECKS:
        try:
            out += check(settings)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            out.append(Check(check.__name__, FAIL, f"{type(exc).__name__}: {exc}"))
    return out


@click.command("doctor")
def doctor() -> None:
    """Check the store, experiment, model, index, guardrail, providers, feedback database and trace sink; print
    each with its fix. Exits 1 when something would break `make run`."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic

    results = run_checks(load_settings())
    for c in results:
        click.echo(f"{c.status:4s}  {c.part:16s} {c.detail}")
        if c.fix:
            click.echo(f"{'':22s}-> {c.fix}")
    failed = [c.part for c in results if c.status == FAIL]
    if failed:
        click.echo(f"{len(failed)} problem(s) would break `make run`: {', '.join(failed)}", err=True)
        raise SystemExit(1)
