"""Where answers come from. One small base class, one registry dict.

- `in-process`: `mlflow.pyfunc.load_model(CHATBOT_MODEL_URI)` in this process.
- `remote`: POST `{CHATBOT_SCORING_URL}/invocations` of an `mlflow models serve` endpoint.
- `service`: an `LLMService` without MLflow packaging (tests, development); same rows.

Every backend returns rows of the one contract, `contract.AnswerRow` (the pyfunc's output columns).
`predict` is blocking; the routes run it in a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from chatbot_model.config import Settings
from chatbot_model.contract import AnswerRow
from chatbot_model.errors import ChatbotError, ConfigError, InvalidInput, unknown_name
from chatbot_model.server.errors import BackendFailed, BackendTimeout, BackendUnavailable, ModelNotLoaded

log = logging.getLogger(__name__)


def normalise_row(row: dict, question: str) -> dict:
    """A contract row (`contract.AnswerRow`) as plain values; `question` fills a row that lacks one."""
    return AnswerRow.model_validate({"question": question, **row}).to_record()


class Backend(ABC):
    """Answers a batch of questions. `load()` runs once in a worker thread; failures are kept, not raised."""

    name: ClassVar[str]
    loads_model: ClassVar[bool] = True  # False: nothing to load, readiness is probed

    def __init__(self, settings: Settings):
        self.settings = settings
        self.load_error: str | None = None
        self.loaded = threading.Event()  # set when load() finished, successfully or not
        self._ready = False

    # lifecycle
    def load(self) -> None:
        started = time.perf_counter()
        try:
            self._load()
            self._ready, self.load_error = True, None
            log.info("backend=%s loaded in %.1fs", self.name, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - the server stays up and reports it on /health
            self._ready, self.load_error = False, f"{type(exc).__name__}: {exc}"
            log.error("backend=%s could not load: %s", self.name, self.load_error)
        finally:
            self.loaded.set()

    def _load(self) -> None:
        """Load what answering needs. Raise with a message saying how to fix it."""

    def ready(self) -> bool:
        return self._ready

    @property
    def loading(self) -> bool:
        return not self.loaded.is_set()

    def close(self) -> None:
        """Release clients; the app calls it on shutdown."""

    # answering
    def predict(self, questions: list[str]) -> list[dict]:
        if self.loads_model and not self._ready:
            if self.loading:
                raise ModelNotLoaded("the model is still loading; retry in a few seconds (see /ready)")
            raise ModelNotLoaded(f"no model is loaded ({self.load_error}); see /health, check "
                                 "CHATBOT_MODEL_URI and MLFLOW_TRACKING_URI, then restart")
        rows = self._predict(list(questions))
        if len(rows) != len(questions):
            raise BackendFailed(f"the backend returned {len(rows)} rows for {len(questions)} questions")
        return [normalise_row(r, q) for r, q in zip(rows, questions)]

    @abstractmethod
    def _predict(self, questions: list[str]) -> list[dict]:
        """Rows in the contract, in input order."""

    def info(self) -> dict:
        """What /health shows: backend name, model URI and version, guardrail, providers."""
        return {"backend": self.name, "ready": self.ready(), "loading": self.loading, "load_error": self.load_error}


def _describe(obj: Any) -> dict:
    """`describe()` of an LLMService (or of an object holding one as `.service`), without secrets."""
    for candidate in (obj, getattr(obj, "service", None), getattr(obj, "_service", None)):
        describe = getattr(candidate, "describe", None)
        if callable(describe):
            try:
                d = describe()
            except Exception:  # noqa: BLE001 - information only
                return {}
            return {k: d[k] for k in ("guardrail", "providers", "embedder") if k in d}
    return {}


class ServiceBackend(Backend):
    """An in-memory `LLMService` (built from settings, or injected)."""

    name = "service"

    def __init__(self, settings: Settings, service: Any | None = None):
        super().__init__(settings)
        self.service = service

    def _load(self) -> None:
        if self.service is None:
            from chatbot_model.config import configure_mlflow
            from chatbot_model.service import LLMService

            if self.settings.tracing:
                configure_mlflow(self.settings)
            self.service = LLMService.from_settings(self.settings)

    def _predict(self, questions: list[str]) -> list[dict]:
        rows = []
        for result in self.service.answer_many(questions):
            row = result.to_dict()
            rows.append(row)
        return rows

    def info(self) -> dict:
        return {**super().info(), "model_uri": None, "model_version": None,
                **(_describe(self.service) if self.service is not None else {})}


class InProcessBackend(Backend):
    """The registered pyfunc model, loaded into this process."""

    name = "in-process"

    def __init__(self, settings: Settings, model: Any | None = None):
        super().__init__(settings)
        self.model = model
        self.version: str | None = None

    def _load(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.settings.tracking_uri)
        uri = self.settings.model_uri
        try:
            from chatbot_model.model_uri import resolve_version

            self.version = resolve_version(uri)
        except Exception as exc:  # noqa: BLE001 - a missing model is explained below
            raise ModelNotLoaded(f"{uri} not found in {self.settings.tracking_uri} ({exc}); register and promote "
                                 "one (`make run` does) or set CHATBOT_MODEL_URI") from None
        if self.model is None:  # ratings of its answers are attributed to the version it resolved to
            self.model = mlflow.pyfunc.load_model(uri, model_config={"model_version": self.version})

    def _predict(self, questions: list[str]) -> list[dict]:
        import pandas as pd

        try:
            frame = self.model.predict(pd.DataFrame({"question": questions}))
        except ChatbotError:
            raise
        except Exception as exc:  # MlflowException(INVALID_PARAMETER_VALUE) for bad input
            if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
                raise InvalidInput(getattr(exc, "message", str(exc))) from exc
            raise BackendFailed(f"the model failed: {type(exc).__name__}: {exc}") from exc
        if hasattr(frame, "to_dict"):
            return frame.to_dict("records")
        return list(frame)

    def info(self) -> dict:
        out = {**super().info(), "model_uri": self.settings.model_uri, "model_version": self.version}
        if self.model is not None:
            try:
                out.update(_describe(self.model.unwrap_python_model()))
            except Exception:  # noqa: BLE001 - not a python model
                pass
        return out


class RemoteBackend(Backend):
    """An `mlflow models serve` endpoint: POST /invocations with `dataframe_records`."""

    name = "remote"
    loads_model = False
    probe_ttl_s = 2.0

    def __init__(self, settings: Settings, client: Any | None = None):
        super().__init__(settings)
        if not settings.scoring_url:
            raise ConfigError("the remote backend needs CHATBOT_SCORING_URL (the `mlflow models serve` URL)")
        self.base_url = settings.scoring_url.rstrip("/")
        self._client = client
        self._probe: tuple[float, bool] = (0.0, False)

    @property
    def client(self):
        if self._client is None:
            import httpx

            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            self._client = httpx.Client(timeout=self.settings.backend_timeout_s, limits=limits)
        return self._client

    def _load(self) -> None:
        if not self._ping():
            raise BackendUnavailable(f"{self.base_url}/ping does not answer; start `mlflow models serve` there or "
                                     "fix CHATBOT_SCORING_URL")

    def _ping(self) -> bool:
        try:
            return self.client.get(f"{self.base_url}/ping", timeout=min(2.0, self.settings.backend_timeout_s)).is_success
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def ready(self) -> bool:
        at, ok = self._probe
        if time.monotonic() - at > self.probe_ttl_s:
            ok = self._ping()
            self._probe = (time.monotonic(), ok)
        return ok

    def _predict(self, questions: list[str]) -> list[dict]:
        import httpx

        payload = {"dataframe_records": [{"question": q} for q in questions]}
        try:
            response = self.client.post(f"{self.base_url}/invocations", json=payload)
        except httpx.TimeoutException:
            raise BackendTimeout(f"the scoring server did not answer within {self.settings.backend_timeout_s:g}s; "
                                 "raise CHATBOT_BACKEND_TIMEOUT_S or scale it") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach the scoring server at {self.base_url} ({type(exc).__name__}); "
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
        return predictions

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def info(self) -> dict:
        return {**super().info(), "ready": self.ready(), "scoring_url": self.base_url,
                "model_uri": None, "model_version": None}


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
