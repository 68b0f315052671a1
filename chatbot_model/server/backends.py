"""Where answers come from. One small base class, one registry dict.

- `in-process`: `mlflow.pyfunc.load_model(CHATBOT_MODEL_URI)` in this process, following the alias when it moves
  and serving a challenger alias to a share of sessions (`server/rollout.py`).
- `remote`: POST `{CHATBOT_SCORING_URL}/invocations` of an `mlflow models serve` endpoint, cancelled (its connection
  closed) when the request's deadline is (the client hung up).
- `service`: an `LLMService` without MLflow packaging (tests, development); same rows.

Every backend returns rows of the one contract, `contract.AnswerRow` (the pyfunc's output columns).
`predict` is blocking; the routes run it in a worker thread. `predict(questions, histories)` carries each
question's conversation (validated messages) to the model: `answer_many(histories=)` in the service, the
pyfunc's `history` column in-process and over `/invocations`; a question without one is sent exactly as before.
`stream` answers one question as event dicts
(`chatbot_model.pipeline.streaming`): the service streams, the in-process model through its pyfunc `predict_stream`,
and the remote backend cannot (`mlflow models serve` does not stream pyfunc models): it sends the whole answer
as one delta.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator

from chatbot_model.config import Settings, configure_mlflow, mask_secrets, mask_url
from chatbot_model.contract import OUTPUT_COLUMNS, AnswerRow
from chatbot_model.errors import ChatbotError, ConfigError, InvalidInput, unknown_name
from chatbot_model.lifecycle.model_uri import parse
from chatbot_model.pipeline.service import LLMService
from chatbot_model.providers import runner
from chatbot_model.providers.deadline import REQUEST_DEADLINE
from chatbot_model.server import rollout
from chatbot_model.server.errors import (BackendFailed, BackendTimeout, BackendUnavailable, ClientClosedRequest,
                                         ModelNotLoaded)
from chatbot_model.server.rollout import assign

log = logging.getLogger(__name__)


def normalise_row(row: dict, question: str) -> dict:
    """A contract row (`contract.AnswerRow`) as plain values; `question` fills a row that lacks one."""
    return AnswerRow.model_validate({"question": question, **row}).to_record()


class Backend(ABC):
    """Answers a batch of questions. `load()` runs once in a worker thread; failures are kept, not raised.

    A failing `_load` (the tracking store is down at start, the model is not registered yet) is retried with
    exponential backoff (CHATBOT_MODEL_LOAD_RETRY_INITIAL_S doubling up to CHATBOT_MODEL_LOAD_RETRY_MAX_S) until it
    succeeds, CHATBOT_MODEL_LOAD_MAX_ATTEMPTS is reached (0 = forever) or the app closes. `clock` and `sleep` are
    injectable (tests drive the backoff without waiting).
    """

    name: ClassVar[str]
    loads_model: ClassVar[bool] = True  # False: nothing to load, readiness is probed
    routes_sessions: ClassVar[bool] = False  # True: `_predict` also gets the request's session_id

    def __init__(self, settings: Settings):
        self.settings = settings
        self.load_error: str | None = None
        self.loaded = threading.Event()  # set when the first load attempt finished, successfully or not
        self.settled = threading.Event()  # set when load() returned: loaded, gave up, or closed
        self.load_attempts = 0
        self.next_attempt_at: float | None = None  # clock() time of the next attempt while retrying
        self.started_at: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self._closing = threading.Event()
        self.sleep: Callable[[float], Any] = self._closing.wait  # returns at once when the app closes
        self._ready = False

    # lifecycle
    def load(self) -> None:
        import tenacity

        s = self.settings
        self.started_at = self.clock()
        give_up = (tenacity.stop_after_attempt(s.model_load_max_attempts) if s.model_load_max_attempts
                   else tenacity.stop_never)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(give_up, lambda _state: self._closing.is_set()),
            wait=tenacity.wait_exponential(multiplier=s.model_load_retry_initial_s, max=s.model_load_retry_max_s),
            sleep=lambda seconds: self.sleep(seconds), before_sleep=self._before_retry, reraise=True)
        try:
            retrying(self._attempt)
        except Exception:  # noqa: BLE001 - gave up: the server stays up and reports it on /health and /ready
            self.next_attempt_at = None
            if not self._closing.is_set():
                log.error("backend=%s gave up loading after %d attempts: %s", self.name, self.load_attempts,
                          self.load_error)
        finally:
            self.loaded.set()
            self.settled.set()

    def _attempt(self) -> None:
        if self._closing.is_set():  # the app closed while waiting: no further attempt
            raise ModelNotLoaded("the server is shutting down")
        self.load_attempts += 1
        started = time.perf_counter()
        try:
            self._load()
        except Exception as exc:
            self._ready, self.load_error = False, mask_secrets(f"{type(exc).__name__}: {exc}")
            log.error("backend=%s load attempt %d failed: %s", self.name, self.load_attempts, self.load_error)
            raise
        finally:
            self.loaded.set()
        self._ready, self.load_error, self.next_attempt_at = True, None, None
        log.info("backend=%s loaded in %.1fs (attempt %d)", self.name, time.perf_counter() - started,
                 self.load_attempts)

    def _before_retry(self, state) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        self.next_attempt_at = self.clock() + wait
        log.warning("backend=%s retries loading in %.1fs (attempt %d failed)", self.name, wait, self.load_attempts)

    @property
    def retrying(self) -> bool:
        """The first attempt failed and another one is scheduled."""
        return self.loaded.is_set() and not self.settled.is_set() and not self._ready

    def next_attempt_in(self) -> float | None:
        """Seconds until the next load attempt (None when none is scheduled)."""
        at = self.next_attempt_at
        return None if at is None or not self.retrying else max(0.0, at - self.clock())

    def without_model_for(self) -> float:
        """Seconds this backend has been up without a model (0 once loaded, or when it loads none)."""
        if not self.loads_model or self._ready or self.started_at is None:
            return 0.0
        return max(0.0, self.clock() - self.started_at)

    def healthy(self) -> bool:
        """False after CHATBOT_UNHEALTHY_AFTER_S without a model: a liveness probe should restart the process."""
        return self.without_model_for() < self.settings.unhealthy_after_s

    def not_ready_reason(self) -> str:
        """Why /chat cannot answer: loading, retrying (last error, next attempt) or gave up."""
        if self.loading:
            return f"the model is still loading (attempt {max(self.load_attempts, 1)})"
        if self.retrying:
            wait = self.next_attempt_in()
            when = f"the next one is in {wait:.0f}s" if wait is not None else "retrying now"
            return f"the model could not be loaded ({self.load_error}); attempt {self.load_attempts} failed, {when}"
        if self.load_error:
            return (f"no model is loaded ({self.load_error}); gave up after {self.load_attempts} attempts: check "
                    "CHATBOT_MODEL_URI and MLFLOW_TRACKING_URI, then restart")
        return "the backend cannot answer: not ready"

    def _load(self) -> None:
        """Load what answering needs. Raise with a message saying how to fix it."""

    def ready(self) -> bool:
        return self._ready

    def ready_now(self) -> bool:
        """`ready()` without blocking: what the probes (/health, /ready, /metrics) ask on the event loop."""
        return self._ready

    @property
    def loading(self) -> bool:
        return not self.loaded.is_set()

    def close(self) -> None:
        """Stop retrying the load and release clients; the app calls it on shutdown."""
        self._closing.set()

    # answering
    def predict(self, questions: list[str], histories: list[list[dict] | None] | None = None,
                session_id: str | None = None) -> list[dict]:
        """Rows of the contract; `histories[i]`: the earlier turns of question i (a list of {role, content});
        `session_id` picks the version for backends that route sessions (champion/challenger)."""
        self._check_ready()
        histories = list(histories) if histories is not None and any(histories) else None
        routing = {"session_id": session_id} if self.routes_sessions else {}
        rows = (self._predict(list(questions), histories, **routing) if histories
                else self._predict(list(questions), **routing))
        if len(rows) != len(questions):
            raise BackendFailed(f"the backend returned {len(rows)} rows for {len(questions)} questions")
        # rows already in the contract's columns (the pyfunc's, the service's) pass as they are
        return [row if tuple(row) == OUTPUT_COLUMNS else normalise_row(row, q) for row, q in zip(rows, questions)]

    def _check_ready(self) -> None:
        if self.loads_model and not self._ready:
            if self.loading:
                raise ModelNotLoaded("the model is still loading; retry in a few seconds (see /ready)")
            raise ModelNotLoaded(f"{self.not_ready_reason()} (see /ready; CHATBOT_MODEL_URI, MLFLOW_TRACKING_URI)")

    @abstractmethod
    def _predict(self, questions: list[str], histories: list[list[dict] | None] | None = None) -> list[dict]:
        """Rows in the contract, in input order; `histories` (None: no question has one) aligned with them.
        Backends with `routes_sessions` also get `session_id`."""

    def stream(self, question: str, history: list | None = None, session_id: str | None = None) -> Iterator[dict]:
        """One answer as event dicts: sources, text deltas, then the final row (`{"event": "final", ...row}`).
        Closing the iterator early stops the answer. This default answers whole and sends the answer as one
        delta (a backend that cannot stream)."""
        row = self.predict([question], None if history is None else [history], session_id=session_id)[0]
        yield {"event": "sources", "sources": row["sources"]}
        yield {"event": "delta", "text": row["answer"]}
        yield {"event": "final", **row}

    def _relay(self, events: Iterator[dict], question: str) -> Iterator[dict]:
        """Event dicts with the final row normalised to the contract; closes `events` when stopped early."""
        try:
            for event in events:
                if event.get("event") == "final":
                    event = {"event": "final", **normalise_row({k: v for k, v in event.items() if k != "event"},
                                                               question)}
                yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def info(self) -> dict:
        """What /health shows: backend name, model URI and version, guardrail, providers."""
        return {"backend": self.name, "ready": self.ready_now(), "loading": self.loading, "load_error": self.load_error,
                "load_attempts": self.load_attempts, "next_load_attempt_in_s": self.next_attempt_in()}


def _describe(obj: Any) -> dict:
    """`describe()` of an LLMService (or of an object holding one as `.service`), without secrets."""
    for candidate in (obj, getattr(obj, "service", None), getattr(obj, "_service", None)):
        describe = getattr(candidate, "describe", None)
        if callable(describe):
            try:
                d = describe()
            except Exception:  # noqa: BLE001 - information only
                return {}
            return {k: d[k] for k in ("guardrail", "guardrail_reason", "providers", "embedder") if k in d}
    return {}


class ServiceBackend(Backend):
    """An in-memory `LLMService` (built from settings, or injected)."""

    name = "service"

    def __init__(self, settings: Settings, service: Any | None = None):
        super().__init__(settings)
        self.service = service

    def _load(self) -> None:
        if self.service is None:
            if self.settings.tracing:
                configure_mlflow(self.settings)
            self.service = LLMService.from_settings(self.settings)

    def _predict(self, questions: list[str], histories: list[list[dict] | None] | None = None) -> list[dict]:
        return [result.to_row() for result in self.service.answer_many(questions, histories=histories)]

    def stream(self, question: str, history: list | None = None, session_id: str | None = None) -> Iterator[dict]:
        self._check_ready()
        return self._relay((event.to_dict() for event in self.service.stream(question, history)), question)

    def info(self) -> dict:
        return {**super().info(), "model_uri": None, "model_version": None,
                **(_describe(self.service) if self.service is not None else {})}


class InProcessBackend(Backend):
    """The registered pyfunc model, loaded into this process, following its alias (`server/rollout.py`).

    Every CHATBOT_ALIAS_POLL_S seconds (0 = never) the registry is asked where CHATBOT_MODEL_URI points; a new
    version is loaded and warmed beside the serving one and swapped in without failing or delaying a request.
    With CHATBOT_CHALLENGER_ALIAS, a second alias of the same model answers CHATBOT_CHALLENGER_SHARE of the
    sessions (sticky per session_id). `poll()` is the poll loop's step (tests call it directly)."""

    name = "in-process"
    routes_sessions = True

    def __init__(self, settings: Settings, model: Any | None = None, *, loader: Callable[[str], Any] | None = None,
                 resolver: Callable[[str], Callable[[], str | None]] | None = None):
        super().__init__(settings)
        self.model = model  # an injected model (tests): served as is, never reloaded
        parsed = parse(settings.model_uri)
        self.registered_name = parsed[0] if parsed else None
        if settings.challenger_alias and self.registered_name is None:
            raise ConfigError(f"CHATBOT_CHALLENGER_ALIAS needs a registry CHATBOT_MODEL_URI (models:/NAME@alias), got "
                              f"{mask_url(settings.model_uri)}")
        make_loader = loader or (rollout.registry_loader(self.registered_name) if self.registered_name else None)
        make_resolver = resolver or rollout.registry_resolver
        self.champion = rollout.AliasFollower(settings.model_uri, "champion", loader=make_loader,
                                              resolver=make_resolver(settings.model_uri), poll_s=settings.alias_poll_s)
        self.challenger = None
        if settings.challenger_alias:
            uri = f"models:/{self.registered_name}@{settings.challenger_alias}"
            self.challenger = rollout.AliasFollower(uri, "challenger", loader=make_loader,
                                                    resolver=make_resolver(uri), poll_s=settings.alias_poll_s,
                                                    idle_when=lambda: self.champion.version, fallback=self.champion)
        self.poll_wait: Callable[[float], Any] = self._closing.wait  # injectable: tests drive polls themselves
        self._poller: threading.Thread | None = None

    @property
    def version(self) -> str | None:
        """The champion's version (what CHATBOT_MODEL_URI serves now)."""
        return self.champion.version

    def followers(self) -> list:
        return [f for f in (self.champion, self.challenger) if f is not None]

    def _load(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.settings.tracking_uri)
        if self.champion.current is not None:  # loaded already (load() called again): keep serving it
            return
        uri = self.settings.model_uri
        try:
            version = self.champion.resolver()
            if version is None and self.registered_name:
                raise LookupError(f"{self.registered_name} has no such alias or version")
        except Exception as exc:  # noqa: BLE001 - a missing model is explained below
            raise ModelNotLoaded(f"{mask_url(uri)} not found in {mask_url(self.settings.tracking_uri)} ({exc}); "
                                 "register and promote one (`make run` does) or set CHATBOT_MODEL_URI") from None
        if self.model is not None:
            self.champion.start(version, self.model)
        elif version is None:  # not a registry URI (runs:/, a path): loaded as is, nothing to follow
            self.champion.start(None, mlflow.pyfunc.load_model(uri))
        else:  # ratings of its answers are attributed to the version it resolved to
            self.champion.start(version)
        if self.challenger is not None:
            self.challenger.poll()
        self._start_polling()

    def _start_polling(self) -> None:
        if self.settings.alias_poll_s <= 0 or self.model is not None or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="rollout-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self.poll_wait(self.settings.alias_poll_s):
            self.poll()

    def poll(self) -> list[threading.Thread]:
        """One poll of every followed alias; returns the loading threads it started."""
        threads = []
        for follower in self.followers():
            try:
                thread = follower.poll()
            except Exception:  # noqa: BLE001 - the poll loop must survive anything
                log.exception("%s: poll failed", follower.role)
                continue
            if thread is not None:
                threads.append(thread)
        return threads

    def pick(self, session_id: str | None):
        """The follower answering this session: the challenger for its sticky share, else the champion."""

        challenger = self.challenger
        if (challenger is not None and challenger.version is not None
                and challenger.version != self.champion.version
                and assign(session_id, self.settings.challenger_share)):
            return challenger
        return self.champion

    def _predict(self, questions: list[str], histories: list[list[dict] | None] | None = None,
                 session_id: str | None = None) -> list[dict]:
        import pandas as pd

        columns = {"question": questions, **({"history": [h or [] for h in histories]} if histories else {})}
        with self.pick(session_id).use() as loaded:
            try:
                frame = loaded.model.predict(pd.DataFrame(columns))
            except Exception as exc:  # noqa: BLE001 - translated
                raise _model_error(exc) from exc
            version = loaded.version
        rows = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame)
        for row in rows:  # a version logged before rows carried model_version: the one it was loaded as
            if not row.get("model_version") and version:
                row["model_version"] = version
        return rows

    def stream(self, question: str, history: list | None = None, session_id: str | None = None) -> Iterator[dict]:
        """Through the `predict_stream` of the version serving this session (MLflow's schema enforcement
        included); the version is held until the stream ends."""
        self._check_ready()
        data = {"question": question, **({"history": history} if history else {})}
        return self._relay(self._stream_on(self.pick(session_id), data), question)

    @staticmethod
    def _stream_on(follower, data: dict) -> Iterator[dict]:
        with follower.use() as loaded:
            for event in _translated(lambda: loaded.model.predict_stream(data)):
                if event.get("event") == "final" and not event.get("model_version") and loaded.version:
                    event = {**event, "model_version": loaded.version}
                yield event

    def info(self) -> dict:
        champion = self.champion.status()
        out = {**super().info(), "model_uri": mask_url(self.settings.model_uri), "model_version": self.version,
               "alias_target": champion["alias_target"], "rollout": champion,
               "challenger": None if self.challenger is None
               else {**self.challenger.status(), "share": self.settings.challenger_share}}
        current = self.champion.current
        if current is not None and current.model is not None:
            try:
                out.update(_describe(current.model.unwrap_python_model()))
            except Exception:  # noqa: BLE001 - not a python model
                pass
        return out


class RemoteBackend(Backend):
    """An `mlflow models serve` endpoint: POST /invocations with `dataframe_records`.

    Calls are made with an `httpx.AsyncClient` on the provider loop (`providers/runner.py`), under
    CHATBOT_BACKEND_TIMEOUT_S in total; when the request's deadline is cancelled (the client hung up), the task is
    cancelled: httpx closes the connection, so the scoring server sees it go, and `ClientClosedRequest` is raised."""

    name = "remote"
    loads_model = False
    probe_ttl_s = 2.0

    def __init__(self, settings: Settings, client: Any | None = None):
        super().__init__(settings)
        if not settings.scoring_url:
            raise ConfigError("the remote backend needs CHATBOT_SCORING_URL (the `mlflow models serve` URL)")
        self.base_url = settings.scoring_url.rstrip("/")
        self.shown_url = mask_url(self.base_url)  # what messages and /health show (no password)
        self._client = client  # an httpx.AsyncClient (tests inject one); built on first use otherwise
        self._probe: tuple[float, bool] = (0.0, False)
        self._pinging = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            import httpx

            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            self._client = httpx.AsyncClient(timeout=self.settings.backend_timeout_s, limits=limits)
        return self._client

    def _call(self, method: str, url: str, limit_s: float, **kwargs) -> Any:
        """One request on the provider loop, cancelled after `limit_s` seconds or with the request's deadline
        (TimeoutError either way: `runner.run`)."""
        client = self.client
        return runner.run(lambda: client.request(method, url, **kwargs), limit_s, deadline=REQUEST_DEADLINE.get())

    def _load(self) -> None:
        ok = self._ping()
        self._probe = (time.monotonic(), ok)
        if not ok:
            raise BackendUnavailable(f"{self.shown_url}/ping does not answer; start `mlflow models serve` there or "
                                     "fix CHATBOT_SCORING_URL")

    def _ping(self) -> bool:
        try:
            limit = min(2.0, self.settings.backend_timeout_s)
            return self._call("GET", f"{self.base_url}/ping", limit, timeout=limit).is_success
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def ready(self) -> bool:
        at, ok = self._probe
        if time.monotonic() - at > self.probe_ttl_s:
            ok = self._ping()
            self._probe = (time.monotonic(), ok)
        return ok

    def ready_now(self) -> bool:
        """The last /ping result; when it is stale, a ping starts in a thread of its own (one at a time), so a
        probe never waits on the scoring server or on the request pool (`_load` records the first ping)."""
        at, ok = self._probe
        if time.monotonic() - at > self.probe_ttl_s and self._pinging.acquire(blocking=False):
            def ping():
                try:
                    self.ready()
                finally:
                    self._pinging.release()

            threading.Thread(target=ping, name="scoring-ping", daemon=True).start()
        return ok

    def not_ready_reason(self) -> str:
        if self.loading or self.retrying or self.load_error:
            return super().not_ready_reason()
        return (f"the scoring server at {self.shown_url} does not answer /ping; start `mlflow models serve` there "
                "or fix CHATBOT_SCORING_URL")

    def _predict(self, questions: list[str], histories: list | None = None) -> list[dict]:
        import httpx

        records = [{"question": q} for q in questions]
        if histories is not None and any(histories):  # the pyfunc's optional `history` column
            records = [{**r, "history": list(h or [])} for r, h in zip(records, histories)]
        payload = {"dataframe_records": records}
        try:
            response = self._call("POST", f"{self.base_url}/invocations", self.settings.backend_timeout_s,
                                  json=payload)
        except (TimeoutError, httpx.TimeoutException):  # the total limit, or cancelled with the request
            deadline = REQUEST_DEADLINE.get()
            if deadline is not None and deadline.cancelled.is_set():
                log.info("client hung up: the call to the scoring server was cancelled")
                raise ClientClosedRequest("the client hung up; the call to the scoring server was cancelled") from None
            raise BackendTimeout(f"the scoring server did not answer within {self.settings.backend_timeout_s:g}s; "
                                 "raise CHATBOT_BACKEND_TIMEOUT_S or scale it") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach the scoring server at {self.shown_url} ({type(exc).__name__}); "
                                     "check CHATBOT_SCORING_URL") from None
        if response.status_code == 400:
            raise InvalidInput(_remote_message(response))
        if not response.is_success:
            raise BackendFailed(f"the scoring server answered {response.status_code}: {_remote_message(response)}")
        try:
            predictions = response.json()["predictions"]
        except (ValueError, KeyError, TypeError):
            raise BackendFailed("the scoring server's reply has no `predictions`; is CHATBOT_SCORING_URL an "
                                "`mlflow models serve` endpoint?") from None
        if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
            raise BackendFailed("the scoring server's `predictions` are not rows of fields")
        if len(predictions) != len(questions):
            raise BackendFailed(f"the scoring server returned {len(predictions)} rows for {len(questions)} questions")
        return [normalise_row(p, q) for p, q in zip(predictions, questions)]  # JSON from another process

    def close(self) -> None:
        super().close()
        client, self._client = self._client, None
        if client is not None:
            try:
                runner.run(client.aclose, 5.0)
            except Exception:  # noqa: BLE001 - shutting down: the connections go with the process
                log.debug("scoring client not closed cleanly", exc_info=True)

    def info(self) -> dict:
        return {**super().info(), "ready": self.ready_now(), "scoring_url": self.shown_url,
                "model_uri": None, "model_version": None}


def _model_error(exc: Exception) -> Exception:
    """A pyfunc model's failure at the HTTP edge: MlflowException(INVALID_PARAMETER_VALUE) is bad input."""
    if isinstance(exc, ChatbotError):
        return exc
    if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
        return InvalidInput(getattr(exc, "message", str(exc)))
    return BackendFailed(f"the model failed: {type(exc).__name__}: {exc}")


def _translated(make: Callable[[], Iterator[dict]]) -> Iterator[dict]:
    """The items of `make()` with the model's failures translated (`_model_error`)."""
    events = None
    try:
        events = make()
        yield from events
    except Exception as exc:  # noqa: BLE001 - translated
        raise _model_error(exc) from exc
    finally:
        if events is not None and hasattr(events, "close"):
            events.close()


def _remote_message(response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body)[:300]
    except ValueError:
        return response.text[:300]


BACKENDS: dict[str, type[Backend]] = {
    "in-process": InProcessBackend,
    "remote": RemoteBackend,
    "service": ServiceBackend,
}


def build_backend(name: str, settings: Settings, **kwargs) -> Backend:
    try:
        cls = BACKENDS[name]
    except (KeyError, TypeError):
        raise unknown_name("serving backend", name, BACKENDS) from None
    return cls(settings, **kwargs)
