"""CLI commands of the feedback store: `feedback stats` and `sync-feedback` (wired in cli.py)."""

from __future__ import annotations

import click


def _store_and_settings():
    from chatbot_model.config import load_settings
    from chatbot_model.errors import ConfigError
    from chatbot_model.feedback import FeedbackStore

    settings = load_settings()
    if not settings.feedback_db_url:
        raise ConfigError("no feedback store: set CHATBOT_FEEDBACK_DB_URL (e.g. sqlite:///.chatbot/feedback.db)")
    return FeedbackStore(settings.feedback_db_url, attach=False), settings


@click.group("feedback")
def feedback() -> None:
    """The human feedback store: counts and the adaptation state derived from it."""


@feedback.command("stats")
@click.option("--model-version", help="Derive the adaptation state from this model version's ratings only.")
def stats(model_version: str | None) -> None:
    """Counts by route, model and model version; the current bias_towards_35 and hint."""
    from chatbot_model.adaptation import AdaptationRule

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
