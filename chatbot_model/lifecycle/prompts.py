"""Hint versions in the MLflow prompt registry: one prompt (`llmops-chatbot-hint`), one version per distinct hint.

- `register_hint(hint)` returns `prompts:/llmops-chatbot-hint/N`: the version holding exactly this text when
  there is one (the same hint is never registered twice), else a new version.
- Every logged model records the prompt version of its hint: tag `prompt_uri` on the model version and param
  `prompt_uri` on the run (registry.log_and_register).
- `promote_prompt(uri)` points the prompt alias `production` at it when a model version goes to Production, so
  `prompts:/llmops-chatbot-hint@production` is the hint of `models:/NAME@production`.
"""

from __future__ import annotations

import hashlib
import logging

log = logging.getLogger(__name__)
PROMPT_NAME = "llmops-chatbot-hint"
PRODUCTION_ALIAS = "production"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def register_hint(hint: str, name: str = PROMPT_NAME) -> str:
    """The URI of the prompt version holding `hint` (registered now when no version holds it)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    hint = hint.strip()
    try:
        versions = list(MlflowClient().search_prompt_versions(name))
    except MlflowException:  # no such prompt yet
        versions = []
    same = [v for v in versions if (v.template or "").strip() == hint]
    if same:
        version = min(int(v.version) for v in same)
        log.info("hint already registered as %s version %s", name, version)
        return f"prompts:/{name}/{version}"
    created = mlflow.genai.register_prompt(name=name, template=hint, tags={"hint_sha": _sha(hint)},
                                           commit_message="hint of a logged llmops-chatbot model")
    log.info("hint registered as %s version %s", name, created.version)
    return f"prompts:/{name}/{created.version}"


def parse_uri(uri: str) -> tuple[str, int] | None:
    """('name', N) of `prompts:/name/N`; None for anything else."""
    prefix = "prompts:/"
    if not uri or not uri.startswith(prefix):
        return None
    name, _, version = uri[len(prefix):].rpartition("/")
    return (name, int(version)) if name and version.isdigit() else None


def promote_prompt(uri: str, alias: str = PRODUCTION_ALIAS) -> bool:
    """Point `alias` of the prompt at the version of `uri`; False (and a warning) when it cannot."""
    import mlflow

    parsed = parse_uri(uri)
    if parsed is None:
        log.warning("no prompt version to promote (prompt_uri %r)", uri)
        return False
    try:
        mlflow.genai.set_prompt_alias(parsed[0], alias, parsed[1])
    except Exception as exc:  # noqa: BLE001 - the model promotion stands; the prompt alias is bookkeeping
        log.warning("could not move the prompt alias %s of %s: %s", alias, uri, exc)
        return False
    log.info("prompt %s@%s -> version %s", parsed[0], alias, parsed[1])
    return True


def link_to_model(uri: str, model_id: str) -> bool:
    """Link the prompt version of `uri` to a logged model (the MLflow UI lists it with the model)."""
    from mlflow import MlflowClient

    parsed = parse_uri(uri)
    if parsed is None:
        return False
    try:
        MlflowClient().link_prompt_version_to_model(parsed[0], str(parsed[1]), model_id)
    except Exception as exc:  # noqa: BLE001 - the tag prompt_uri records it anyway
        log.warning("could not link %s to model %s: %s", uri, model_id, exc)
        return False
    return True
