"""The feedback store: one row per human rating, durable and shared, attached to its MLflow trace.

The rows live in the database of `store.db` (`CHATBOT_FEEDBACK_DB_URL`; a SQLite file by default, PostgreSQL in
production), table `feedback` (`store.tables`).

Attaching to MLflow (`mlflow.log_feedback`, name `user_rating`, value True/False, source HUMAN with the session
id as source id, the comment as rationale, `{"feedback_id": row id}` as metadata) happens after the row is
committed. If the tracking store is down or the trace is not there yet, the row stays unsynced (`synced_at` is
NULL) and is attached later: by the next `record` (a few rows whose next try is due), by the store's background
worker (`record(..., background=True)`: the server's way, no attach or flush in the request), or by `sync()` /
`llmops-chatbot sync-feedback`. Tries back off (CHATBOT_FEEDBACK_RETRY_AFTER_S doubling up to ..._RETRY_CAP_S); a rating whose trace
is still not found after CHATBOT_FEEDBACK_MAX_ATTEMPTS tries is marked orphaned (`orphaned_at`, terminal: the trace was dropped
or lost) and no longer retried. No rating is attached twice: a row is claimed by an atomic UPDATE
before it is attached (a lease, so a crashed claimer is retried later), and before a retry logs, the trace's
assessments are checked for one carrying the row's `feedback_id` (the crash-after-log case; a first try logs at
once).

One rating per trace and session: a second rating of the same trace from the same session replaces the first
(same row, new rating, comment and time; attached again, overriding the first one's assessment in MLflow), so
the adaptation and `feedback compare` count each rater's opinion of an answer once. Reads count the newest row of
each (trace, session) in any case (rows from before this rule, or two first ratings racing).

The adaptation state derived from these rows (router bias and hint) lives in `pipeline/adaptation.py`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlparse

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from chatbot_model.config import Settings
from chatbot_model.contract import MAX_COMMENT_CHARS
from chatbot_model.errors import InvalidInput
from chatbot_model.store.db import Database, delete_older_than
from chatbot_model.store.tables import feedback_table
from chatbot_model.tracing import writer as tracing
from chatbot_model.tracing.otlp import is_server

log = logging.getLogger(__name__)

RATINGS = ("up", "down")
ASSESSMENT_NAME = "user_rating"

@dataclass(frozen=True)
class FeedbackRow:
    """One stored rating (a plain copy of the row)."""

    id: int
    created_at: datetime
    trace_id: str | None
    session_id: str | None
    route: str | None
    provider: str | None
    model: str | None
    model_version: str | None
    rating: str
    comment: str | None
    synced_at: datetime | None
    assessment_id: str | None
    sync_error: str | None
    orphaned_at: datetime | None = None

    @property
    def positive(self) -> bool:
        return self.rating == "up"


@dataclass
class SyncReport:
    """What one `sync()` did: attached now, found already attached, still pending (with the last error), marked
    orphaned now (their trace was still not found after `max_attempts` tries)."""

    attached: int = 0
    already: int = 0
    pending: int = 0
    orphaned: int = 0
    last_error: str | None = None
    helper_cpu_s: float = field(default=0.0, compare=False, repr=False)  # CPU of attach threads besides the caller


def _utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _naive_utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


class FeedbackStore:
    """Ratings in a SQL database; `record` writes one and attaches it to its MLflow trace (best effort)."""

    def __init__(self, url: str = "", *, attach: bool = True, clock: Callable[[], float] = time.time,
                 database: Database | None = None, settings: Settings | None = None):
        self.database = database or Database(url)
        tuning = settings or Settings.model_construct()  # the defaults, without reading the environment
        self.lease_s = tuning.feedback_lease_s
        self.retry_after_s = tuning.feedback_retry_after_s
        self.retry_cap_s = tuning.feedback_retry_cap_s
        self.max_attempts = tuning.feedback_max_attempts
        self.auto_retry_limit = tuning.feedback_retries_per_record
        self.background_batch = tuning.feedback_sync_batch
        self.background_interval_s = tuning.feedback_sync_interval_s
        self.background_share = tuning.feedback_sync_share
        self.attach_workers = tuning.feedback_attach_workers
        self.connect_timeout_s = tuning.tracking_probe_timeout_s
        self.url = self.database.url
        self.attach = attach
        self.clock = clock  # epoch seconds; tests inject one
        self._lock = threading.Lock()
        self._worker: BackgroundSync | None = None
        self._commit = threading.Condition()  # group commit of concurrent inserts (`_insert`)
        self._waiting: list[_Slot] = []
        self._writing = False

    def __repr__(self) -> str:
        return f"FeedbackStore({self.database.masked_url!r})"

    @property
    def engine(self) -> Engine:
        """The database's engine, its schema migrated to the newest revision on first use."""
        return self.database.engine

    # ------------------------------------------------------------ writing
    def record(self, *, trace_id: str | None, rating: str, comment: str | None = None,
               session_id: str | None = None, route: str | None = None, provider: str | None = None,
               model: str | None = None, model_version: str | None = None, background: bool = False) -> int:
        """Store one rating ("up" or "down"); returns the row id (the earlier row's when it replaces this trace and
        session's earlier rating). Then attach it (and a few older ones), or with
        `background`, leave that to this store's background worker (no MLflow call in the caller's thread)."""
        if rating not in RATINGS:
            raise InvalidInput(f"rating must be one of {list(RATINGS)}, got {rating!r}")
        if trace_id is not None and (not isinstance(trace_id, str) or not trace_id.strip()):
            raise InvalidInput(f"trace_id must be a non-empty string (the trace id of the answer), got {trace_id!r}")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
            raise InvalidInput(f"comment must be a string of at most {MAX_COMMENT_CHARS} characters")
        now = self.clock()
        row_id = self._insert(dict(
            created_at=_naive_utc(now), created_ts=now, trace_id=trace_id, session_id=session_id,
            route=route, provider=provider, model=model,
            model_version=None if model_version is None else str(model_version),
            rating=rating, comment=comment or None, sync_attempts=0))
        log.info("feedback %s stored: %s on trace %r", row_id, rating, trace_id)
        if background:
            tracing.note_activity()
            if trace_id:
                self.background().notify()
        elif self.attach and trace_id:
            if self._sync_rows([row_id]).attached:
                self._retry_older(exclude=row_id)
        return int(row_id)

    def _insert(self, values: dict) -> int:
        """Insert one row and return its id once committed. Concurrent callers share transactions (group
        commit): whoever finds no write in progress writes every row waiting, in one transaction, and wakes
        their callers; each caller returns only after its own row is committed (or raises its error)."""
        slot = _Slot(values)
        with self._commit:
            self._waiting.append(slot)
            while not slot.done:
                if self._writing:
                    self._commit.wait()
                    continue
                batch, self._waiting = self._waiting, []
                self._writing = True
                self._commit.release()
                try:
                    try:
                        with self.engine.begin() as conn:
                            ids = [_write(conn, s.values) for s in batch]
                        for s, row_id in zip(batch, ids):
                            s.row_id = int(row_id)
                    except BaseException as exc:  # the whole transaction failed: every caller in it learns why
                        for s in batch:
                            s.error = exc
                finally:
                    self._commit.acquire()
                    self._writing = False
                    for s in batch:
                        s.done = True
                    self._commit.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.row_id

    def _retry_older(self, exclude: int) -> None:
        """The automatic retry: a few unsynced rows whose next try is due."""
        ids = [i for i in self.due_ids(self.auto_retry_limit + 1) if i != exclude][:self.auto_retry_limit]
        if ids:
            self._sync_rows(ids)

    def retry_delay(self, attempts: int) -> float:
        """Seconds between a row's try number `attempts` and the next automatic one."""
        return min(self.retry_after_s * 2 ** max(attempts - 1, 0), self.retry_cap_s)

    def due_ids(self, limit: int) -> list[int]:
        """Pending rows (oldest first) never tried, or whose backoff since the last try has passed."""
        t = feedback_table
        now = self.clock()
        due: list[int] = []
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.sync_attempts, t.c.attempted_at).where(*_pending(t))
                                .order_by(t.c.id).limit(max(limit * 20, 500)))
            for row_id, attempts, attempted_at in rows:
                if attempted_at is None or attempted_at + self.retry_delay(attempts or 0) <= now:
                    due.append(int(row_id))
                    if len(due) >= limit:
                        break
        return due

    def sync_due(self, limit: int | None = None) -> SyncReport:
        """One pass of the background worker: try the due rows, without flushing this process's traces."""
        return self._sync_rows(self.due_ids(limit or self.background_batch), flush=False)

    def background(self) -> "BackgroundSync":
        """This store's background attach worker (one thread, started on first use)."""
        with self._lock:
            if self._worker is None or self._worker.stopped:
                self._worker = BackgroundSync(self)
            return self._worker

    def stop_background(self, timeout: float = 10.0) -> None:
        """Stop the background worker, if any (pending rows stay in the database for the next one)."""
        if self._worker is not None:
            self._worker.stop(timeout)

    # ------------------------------------------------------------ attaching to MLflow traces
    def sync(self, limit: int | None = None, ids: list[int] | None = None) -> SyncReport:
        """Attach every unsynced rating (oldest first; or those of `ids`) to its trace; failures stay pending.

        A server that must answer fast can store with `FeedbackStore(url, attach=False)` and run
        `sync(ids=[row_id])` in a background task.
        """
        t = feedback_table
        query = select(t.c.id).where(*_pending(t)).order_by(t.c.id)
        if ids is not None:
            query = query.where(t.c.id.in_([int(i) for i in ids]))
        with self.engine.connect() as conn:
            ids = conn.execute(query if limit is None else query.limit(limit)).scalars().all()
        return self._sync_rows(list(ids))

    def _claim(self, row_id: int) -> dict | None:
        """Atomically take a row for attaching; None when it is synced or another process holds it."""
        t = feedback_table
        now = self.clock()
        with self.engine.begin() as conn:
            taken = conn.execute(update(t).where(
                t.c.id == row_id, t.c.synced_at.is_(None), t.c.orphaned_at.is_(None),
                (t.c.claimed_at.is_(None)) | (t.c.claimed_at < now - self.lease_s))
                .values(claimed_at=now, attempted_at=now, sync_attempts=t.c.sync_attempts + 1)).rowcount
            if taken != 1:
                return None
            return dict(conn.execute(select(t).where(t.c.id == row_id)).mappings().one())

    def _finish(self, row_id: int, *, assessment_id: str | None = None, error: str | None = None,
                orphaned: bool = False) -> None:
        t = feedback_table
        values = {"claimed_at": None, "sync_error": error}
        if orphaned:
            values["orphaned_at"] = _naive_utc(self.clock())
        if error is None:
            values.update(synced_at=_naive_utc(self.clock()), assessment_id=assessment_id)
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == row_id).values(**values))

    def _sync_rows(self, ids: list[int], flush: bool = True) -> SyncReport:
        """Attach the rows of `ids` that can be claimed; to a tracking server, `attach_workers` at a time (each
        attach is two round trips that mostly wait on the server)."""
        report = SyncReport()
        if not ids:
            return report
        reachable, why = self._tracking_reachable()
        if reachable and flush:
            _flush_traces()
        workers = min(self.attach_workers, len(ids)) if reachable and self._tracking_is_server() else 1
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="feedback-attach") as pool:
                outcomes = list(pool.map(lambda row_id: self._sync_one(row_id, why), ids))
            report.helper_cpu_s = sum(cpu for _, _, cpu in outcomes)
        else:
            outcomes = [self._sync_one(row_id, why) for row_id in ids]
        for outcome, message, _ in outcomes:
            if outcome is not None:
                setattr(report, outcome, getattr(report, outcome) + 1)
            if message is not None:
                report.last_error = message
        return report

    def _sync_one(self, row_id: int, unreachable: str | None) -> tuple[str | None, str | None, float]:
        """Claim and attach one row: (the `SyncReport` count it adds to or None when not claimed, its error, the
        CPU seconds this thread spent)."""
        started = time.thread_time()
        outcome, message = self._attach_claimed(row_id, unreachable)
        return outcome, message, time.thread_time() - started

    def _attach_claimed(self, row_id: int, unreachable: str | None) -> tuple[str | None, str | None]:
        row = self._claim(row_id)
        if row is None:
            return None, None
        if unreachable:
            self._finish(row_id, error=unreachable)
            return "pending", unreachable
        try:
            assessment_id, fresh = _attach(row)
        except Exception as exc:  # tracking store down, trace not found yet, ...
            message = f"{type(exc).__name__}: {exc}"[:500]
            if _not_found(exc) and row["sync_attempts"] >= self.max_attempts:
                log.warning("feedback %s orphaned: trace %s still not found after %d tries", row_id,
                            row["trace_id"], row["sync_attempts"])
                self._finish(row_id, error=message, orphaned=True)
                return "orphaned", message
            (log.info if _not_found(exc) else log.warning)(  # not written yet is routine under load
                "feedback %s not attached to trace %s yet: %s", row_id, row["trace_id"], message)
            self._finish(row_id, error=message)
            return "pending", message
        self._finish(row_id, assessment_id=assessment_id)
        return ("attached" if fresh else "already"), None

    @staticmethod
    def _tracking_is_server() -> bool:
        import mlflow

        return is_server(mlflow.get_tracking_uri())

    def _tracking_reachable(self) -> tuple[bool, str | None]:
        """A quick TCP probe of an http(s) tracking server (MLflow's own retries would take minutes)."""
        import mlflow

        uri = mlflow.get_tracking_uri()
        if not is_server(uri):
            return True, None
        parsed = urlparse(uri)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=self.connect_timeout_s).close()
            return True, None
        except OSError as exc:
            return False, f"tracking server {parsed.scheme}://{parsed.hostname}:{port} unreachable: {exc}"

    # ------------------------------------------------------------ reading
    def ratings(self, since: datetime | None = None, model_version: str | None = None) -> list[FeedbackRow]:
        """Stored ratings, oldest first, one per trace and session (the newest); `since` (naive = UTC) and
        `model_version` filter."""
        t = feedback_table
        query = select(t).where(_counted(t)).order_by(t.c.id)
        if since is not None:
            since_ts = (since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp()
            query = query.where(t.c.created_ts >= since_ts)
        if model_version is not None:
            query = query.where(t.c.model_version == str(model_version))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [FeedbackRow(id=r["id"], created_at=_utc(r["created_at"]), trace_id=r["trace_id"],
                            session_id=r["session_id"], route=r["route"], provider=r["provider"],
                            model=r["model"], model_version=r["model_version"], rating=r["rating"],
                            comment=r["comment"], synced_at=_utc(r["synced_at"]),
                            assessment_id=r["assessment_id"], sync_error=r["sync_error"],
                            orphaned_at=_utc(r["orphaned_at"])) for r in rows]

    def stats(self) -> dict:
        """Counts (one rating per trace and session): total, by rating, by route / model / model version (each
        split by rating), unsynced (still to attach), orphaned (their trace never arrived)."""
        t = feedback_table
        out: dict = {"total": 0, "by_rating": {r: 0 for r in RATINGS}, "by_route": {}, "by_model": {},
                     "by_version": {}, "unsynced": 0, "orphaned": 0}
        with self.engine.connect() as conn:
            for key, column in (("by_route", t.c.route), ("by_model", t.c.model), ("by_version", t.c.model_version)):
                for value, rating, n in conn.execute(
                        select(column, t.c.rating, func.count()).where(_counted(t)).group_by(column, t.c.rating)):
                    out[key].setdefault(value if value is not None else "(none)", {r: 0 for r in RATINGS})[rating] = n
            for rating, n in conn.execute(select(t.c.rating, func.count()).where(_counted(t)).group_by(t.c.rating)):
                out["by_rating"][rating] = n
                out["total"] += n
            out["unsynced"] = conn.execute(select(func.count()).where(*_pending(t))).scalar_one()
            out["orphaned"] = conn.execute(select(func.count()).where(t.c.orphaned_at.is_not(None))).scalar_one()
        return out

    def rating_times(self, *, since_ts: float | None = None, until_ts: float | None = None,
                     model_version: str | None = None) -> list[tuple[float, str]]:
        """(created_ts, rating) of the ratings the adaptation counts, oldest first.

        Ratings of blocked answers are left out (the router and the hint took no part); `since_ts` and
        `until_ts` (epoch seconds, both inclusive) bound the window; `model_version` keeps the ratings given to
        that version only (None: every rating).
        """
        t = feedback_table
        query = (select(t.c.created_ts, t.c.rating).where((t.c.route.is_(None)) | (t.c.route != "blocked"), _counted(t))
                 .order_by(t.c.created_ts, t.c.id))
        if since_ts is not None:
            query = query.where(t.c.created_ts >= float(since_ts))
        if until_ts is not None:
            query = query.where(t.c.created_ts <= float(until_ts))
        if model_version is not None:
            query = query.where(t.c.model_version == str(model_version))
        with self.engine.connect() as conn:
            return [(float(ts), rating) for ts, rating in conn.execute(query)]

    def prune(self, older_than_days: float) -> int:
        """Delete ratings older than `older_than_days` (0 or less: none); returns how many were deleted."""
        deleted = delete_older_than(self.engine, feedback_table, older_than_days, self.clock())
        if deleted:
            log.info("pruned %d ratings older than %g days", deleted, older_than_days)
        return deleted

    def dispose(self) -> None:
        self.stop_background()
        self.database.dispose()


class _Slot:
    """One row waiting for its group commit."""

    __slots__ = ("values", "done", "row_id", "error")

    def __init__(self, values: dict):
        self.values, self.done, self.row_id, self.error = values, False, 0, None


def _same_rater(t, values: dict):
    """The rows of the same trace and session as `values` (a NULL session matches NULL)."""
    session = values.get("session_id")
    return (t.c.trace_id == values["trace_id"],
            t.c.session_id.is_(None) if session is None else t.c.session_id == session)


def _write(conn, values: dict) -> int:
    """Insert a rating, or replace the same trace and session's earlier one (kept: its id and, as the assessment
    the new rating overrides, its assessment id)."""
    t = feedback_table
    if values.get("trace_id") is not None:
        earlier = conn.execute(select(t.c.id).where(*_same_rater(t, values)).order_by(t.c.id.desc()).limit(1)
                               ).scalar()
        if earlier is not None:
            conn.execute(update(t).where(t.c.id == earlier).values(
                **values, synced_at=None, sync_error=None, claimed_at=None, attempted_at=None, orphaned_at=None))
            log.info("feedback %s: trace %r rated again by its session: replaced", earlier, values["trace_id"])
            return int(earlier)
    return int(conn.execute(t.insert().values(**values)).inserted_primary_key[0])


def _counted(t):
    """Rows that count: without a trace, or the newest of their trace and session."""
    newest = select(func.max(t.c.id)).where(t.c.trace_id.is_not(None)).group_by(t.c.trace_id, t.c.session_id)
    return t.c.trace_id.is_(None) | t.c.id.in_(newest.scalar_subquery())


def _pending(t) -> tuple:
    """Rows still to attach: a trace id, not synced, not orphaned."""
    return t.c.synced_at.is_(None), t.c.orphaned_at.is_(None), t.c.trace_id.is_not(None)


def _not_found(exc: Exception) -> bool:
    """The tracking store answered that the trace does not exist (as opposed to failing to answer)."""
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


class BackgroundSync:
    """One daemon thread that attaches a store's pending ratings: woken by each `record(background=True)` and
    every `background_interval_s` for due retries; at most `background_batch` rows per pass. Failures stay
    pending (see `FeedbackStore`); the thread never raises."""

    def __init__(self, store: FeedbackStore):
        self.store = store
        self.passes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback-sync", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.store.background_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return

            started = time.thread_time()  # paced on CPU: waiting for a tracking server costs the process nothing
            try:
                report = self.store.sync_due()
            except Exception as exc:  # the feedback database is down: the rows are safe, try again later
                log.warning("background feedback sync failed: %s: %s", type(exc).__name__, exc)
                report = None
            self.passes += 1
            if report is not None and (report.attached or report.already or report.pending or report.orphaned):
                spent = time.thread_time() - started + report.helper_cpu_s
                tracing.pace(spent, self.store.background_share, self._stop)
                self._wake.set()  # more may be due: look again after the pause

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current pass (waits at most `timeout` s)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _flush_traces(timeout: float = 10.0) -> None:
    """Trace export is asynchronous: write this process's queued traces before attaching to them (bounded)."""

    try:
        tracing.flush(timeout)
    except Exception as exc:  # flushing is a courtesy; the attach below reports the real problem
        log.debug("could not flush the trace queue: %s", exc)


def _attach(row: dict) -> tuple[str | None, bool]:
    """Attach `row` (claimed: `sync_attempts` counts this try) to its trace; returns (assessment id, True if
    logged now / False if it already was). A first try logs at once (one call to the tracking store; a missing
    trace makes it raise as the lookup would); a retry first looks for its own assessment."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType
    from mlflow.tracing.client import TracingClient

    marker, rated = str(row["id"]), repr(float(row["created_ts"]))
    if row["sync_attempts"] > 1:  # an earlier try may have logged it and failed before recording so: look first
        info = TracingClient().get_trace_info(row["trace_id"])  # raises when the trace is not there (yet)
        for assessment in info.assessments or []:
            meta = assessment.metadata or {}
            if (assessment.name == ASSESSMENT_NAME and meta.get("feedback_id") == marker
                    and meta.get("rated_ts", rated) == rated):
                return assessment.assessment_id, False
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=row["session_id"] or "anonymous")
    metadata = {"feedback_id": marker, "rated_ts": rated, "route": row["route"] or "",
                "model_version": row["model_version"] or ""}
    if row.get("assessment_id"):  # a replaced rating: the earlier assessment is marked overridden
        assessment = mlflow.override_feedback(trace_id=row["trace_id"], assessment_id=row["assessment_id"],
                                              value=row["rating"] == "up", rationale=row["comment"] or None,
                                              source=source, metadata=metadata)
    else:
        assessment = mlflow.log_feedback(trace_id=row["trace_id"], name=ASSESSMENT_NAME, value=row["rating"] == "up",
                                         source=source, rationale=row["comment"] or None, metadata=metadata)
    log.info("feedback %s attached to trace %r as %s", row["id"], row["trace_id"], assessment.assessment_id)
    return assessment.assessment_id, True


__all__ = ["ASSESSMENT_NAME", "RATINGS", "BackgroundSync", "FeedbackRow", "FeedbackStore", "SyncReport"]

