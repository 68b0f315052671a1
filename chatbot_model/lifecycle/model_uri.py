"""Which registered version a `models:/` URI names. The alias is the source of truth; stages are the fallback.

    models:/NAME@alias       the alias's version
    models:/NAME/N           version N
    models:/NAME/latest      the highest version (MLflow's own meaning of `latest`)
    models:/NAME/Production  the `production` alias when set, else the highest version in that stage

MLflow deprecates stages; `promote` keeps both in step, so the alias and the stage agree for versions it moved.
A version moved in the UI by alias only is still found; one moved by stage only, too. No call here uses the
deprecated `get_latest_versions`.
"""

from __future__ import annotations

import re

from chatbot_model.errors import NotFound

STAGES = {"Staging": "staging", "Production": "production"}  # stage -> the alias that names it

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))/?$")


def parse(model_uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, ref) of a registry URI; None for any other URI (runs:/, a path, models:/m-<id>)."""
    m = _MODEL_URI.match(model_uri or "")
    if not m:
        return None
    return m["name"], m["alias"], m["ref"]


def version_by_alias(client, name: str, alias: str):
    """The ModelVersion the alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def version_in_stage(client, name: str, stage: str):
    """The `stage.lower()` alias's version, else the highest version whose stage is `stage`; None when none."""
    found = version_by_alias(client, name, stage.lower())
    if found is not None:
        return found
    holders = [v for v in _versions(client, name) if (v.current_stage or "").lower() == stage.lower()]
    return holders[-1] if holders else None


def production_version(client, name: str):
    """The version serving as Production (`@production`, else the Production stage), or None."""
    return version_in_stage(client, name, "Production")


def resolve(client, model_uri: str) -> tuple[str, str] | None:
    """(name, version) a registry URI points at; None when `model_uri` is not a registry URI.

    Raises NotFound, saying what to do, when the URI is a registry URI that points at nothing."""
    parsed = parse(model_uri)
    if parsed is None:
        return None
    name, alias, ref = parsed
    if alias:
        found = version_by_alias(client, name, alias)
        if found is None:
            raise NotFound(f"{model_uri}: {name} has no alias {alias!r}; promote a version first "
                           f"(`llmops-chatbot promote-model --name {name} --stage Production`) or see `mlflow ui`")
        return name, str(found.version)
    if ref.isdigit():
        return name, ref
    if ref.lower() == "latest":
        versions = _versions(client, name)
        if not versions:
            raise NotFound(f"{model_uri}: {name} has no version; register one (`llmops-chatbot register-model`)")
        return name, str(versions[-1].version)
    found = version_in_stage(client, name, ref)
    if found is None:
        raise NotFound(f"{model_uri}: no version of {name} has the alias {ref.lower()!r} or is in stage {ref}; "
                       f"promote one first (`llmops-chatbot promote-model --name {name} --stage {ref}`)")
    return name, str(found.version)


def resolve_version(model_uri: str, client=None) -> str | None:
    """The version number a registry URI points at (None for other URIs), with the current tracking store."""
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    found = resolve(client, model_uri)
    return found[1] if found else None
