"""Retention that runs by itself: every CHATBOT_RETENTION_INTERVAL_S the server deletes conversation turns older
than CHATBOT_CONVERSATION_RETENTION_DAYS and ratings older than CHATBOT_FEEDBACK_RETENTION_DAYS (in a worker
thread; a failure is logged and retried at the next interval). Every replica may run it: the deletes are
idempotent. With PostgreSQL in the cluster a CronJob also runs `llmops-chatbot conversations prune`
(k8s/overlays/tracking-postgres/retention-cronjob.yaml)."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from chatbot_model.server.conversation import conversation_store
from chatbot_model.server.deps import _open_feedback_store, settings_of

log = logging.getLogger(__name__)


def prune_once(app) -> dict[str, int]:
    """Delete what is past its retention now; returns how many turns and ratings went."""
    settings = settings_of(app)
    if not settings.feedback_db_url:
        return {"turns": 0, "ratings": 0}
    feedback = _open_feedback_store(app.state, settings)
    turns = conversation_store(app)
    return {"turns": turns.prune(settings.conversation_retention_days) if turns is not None else 0,
            "ratings": feedback.prune(settings.feedback_retention_days)}


async def retention_loop(app, interval_s: float) -> None:
    """`prune_once` every `interval_s` seconds until cancelled, the first time one interval after start (never
    while the process starts up: opening the database migrates it, and Alembic's context is process-global, so
    it must not overlap MLflow's own store migrations in the loading thread)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            done = await run_in_threadpool(prune_once, app)
            if any(done.values()):
                log.info("retention: deleted %d conversation turns and %d ratings", done["turns"], done["ratings"])
        except Exception as exc:  # noqa: BLE001 - the database is down: try again next time
            log.warning("retention: prune failed (%s); retrying in %g s", type(exc).__name__, interval_s)


def start(app) -> asyncio.Task | None:
    interval = settings_of(app).retention_interval_s
    if not interval:
        return None
    return asyncio.get_running_loop().create_task(retention_loop(app, interval), name="retention")
