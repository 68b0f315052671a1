"""CLI commands of the feedback store: `feedback stats`, `feedback compare` and `sync-feedback` (wired in cli/main.py)."""

from __future__ import annotations

import click

from chatbot_model.errors import ConfigError, NotFound
from chatbot_model.lifecycle.comparison import table, verdict, version_stats
from chatbot_model.lifecycle.model_uri import version_by_alias
from chatbot_model.pipeline.adaptation import AdaptationRule


def _store_and_settings():
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.store.feedback import FeedbackStore  # deferred: loads numpy, pydantic, sqlalchemy

    settings = load_settings()
    if not settings.feedback_db_url:
        raise ConfigError("no feedback store: set CHATBOT_FEEDBACK_DB_URL (e.g. sqlite:///.chatbot/feedback.db)")
    return FeedbackStore(settings.feedback_db_url, attach=False, settings=settings), settings


@click.group("feedback")
def feedback() -> None:
    """The human feedback store: counts and the adaptation state derived from it."""


@feedback.command("stats")
@click.option("--model-version", help="Derive the adaptation state from this model version's ratings only.")
def stats(model_version: str | None) -> None:
    """Counts by route, model and model version; the current bias_towards_35 and hint."""

    store, settings = _store_and_settings()
    counts = store.stats()
    click.echo(f"feedback store: {store!r}")
    click.echo(f"ratings: {counts['total']} (up {counts['by_rating']['up']}, down {counts['by_rating']['down']}), "
               f"not yet attached to traces: {counts['unsynced']}, orphaned (trace never arrived): {counts['orphaned']}")
    for key, title in (("by_route", "route"), ("by_model", "model"), ("by_version", "model version")):
        click.echo(f"by {title}:")
        if not counts[key]:
            click.echo("  (none)")
        for name, n in sorted(counts[key].items()):
            click.echo(f"  {name:32s} up {n['up']:6d}  down {n['down']:6d}")
    state = AdaptationRule.from_settings(settings).compute(store, model_version=model_version)
    click.echo(f"bias_towards_35: {state.bias_towards_35:.3f} (base {settings.bias_towards_35:.2f}; decayed up "
               f"{state.decayed_up:.2f}, down {state.decayed_down:.2f}, "
               f"half-life {settings.adaptation_half_life_h:g} h)")
    click.echo(f"hint: {state.hint!r} ({'grounded' if state.grounded else 'default'}; negative share "
               f"{state.negative_share:.2f}, grounded from {settings.adaptation_grounded_share:.2f})")


@feedback.command("compare")
@click.option("--name", default=None, help="Registered model name (default: CHATBOT_REGISTERED_MODEL_NAME).")
@click.option("--champion", "champion", default=None, help="Champion version (default: the `production` alias's).")
@click.option("--challenger", "challenger", default=None,
              help="Challenger version (default: the CHATBOT_CHALLENGER_ALIAS alias's, else `staging`'s).")
@click.option("--min-ratings", default=30, show_default=True, type=click.IntRange(min=1),
              help="Ratings each version needs before a verdict.")
@click.option("--max-traces", default=5000, show_default=True, type=click.IntRange(min=0),
              help="Newest traces read per version for block/abstention rates and latency (0: skip traces).")
def compare(name: str | None, champion: str | None, challenger: str | None, min_ratings: int, max_traces: int) -> None:
    """Champion vs challenger on live feedback: ratings with 95% Wilson intervals, block and abstention rates,
    latency, and whether the challenger is better, worse or not yet distinguishable (two-proportion z-test at 5%,
    at least --min-ratings each; see chatbot_model/lifecycle/comparison.py)."""
    import mlflow
    from mlflow import MlflowClient

    store, settings = _store_and_settings()
    name = name or settings.registered_model_name
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    alias = settings.challenger_alias or "staging"
    picked = {}
    for role, given, from_alias in (("champion", champion, "production"), ("challenger", challenger, alias)):
        if given is None:
            found = version_by_alias(client, name, from_alias)
            if found is None:
                raise NotFound(f"{name} has no alias {from_alias!r}: pass --{role} VERSION, or set the alias "
                               "(`llmops-chatbot promote-model` or the MLflow UI)")
            given = str(found.version)
        picked[role] = str(given)
    experiments = []
    if max_traces:
        experiment = client.get_experiment_by_name(settings.experiment_name)
        experiments = [experiment.experiment_id] if experiment is not None else []
    rows = [version_stats(store, v, role, client=client, experiment_ids=experiments, max_traces=max_traces)
            for role, v in picked.items()]
    click.echo(f"{name}: champion version {picked['champion']} vs challenger version {picked['challenger']}")
    for line in table(rows):
        click.echo(line)
    result = verdict(rows[0], rows[1], min_ratings)
    click.echo(f"verdict: challenger {result.outcome} ({result.reason})")


@click.command("sync-feedback")
@click.option("--limit", type=click.IntRange(min=1), help="Attach at most this many ratings (oldest first).")
def sync_feedback(limit: int | None) -> None:
    """Attach every rating not yet on its MLflow trace (tracking store was down, trace not exported yet).

    Exits 1 while ratings are still pending; a rating whose trace is still missing after the store's
    `max_attempts` tries is marked orphaned and reported, and no longer fails the run."""
    import mlflow

    store, settings = _store_and_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    report = store.sync(limit=limit)
    click.echo(f"attached {report.attached}, already attached {report.already}, still pending {report.pending}, "
               f"orphaned now {report.orphaned}")
    orphaned = store.stats()["orphaned"]
    if orphaned:
        click.echo(f"orphaned ratings (trace never arrived after {store.max_attempts} tries; kept, not retried): "
                   f"{orphaned}")
    if report.pending:
        click.echo(f"last error: {report.last_error}")
        raise SystemExit(1)
