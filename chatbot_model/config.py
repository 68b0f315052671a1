"""One settings object for every knob (env prefix `CHATBOT_`), validated when built, never at import.

Provider keys keep their usual names (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `OPENAI_BASE_URL`,
`ANTHROPIC_BASE_URL`) and the tracking store reads `MLFLOW_TRACKING_URI`, so existing setups work as they are.
"""

from __future__ import annotations

import json

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import (AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbot_model.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARTIFACTS = PROJECT_ROOT / "artifacts"
GUARDRAIL_BACKENDS = ("auto", "toxic-bert", "embedded", "openai-moderation")
SERVING_BACKENDS = ("in-process", "remote")
EMBEDDING_BACKENDS = ("auto", "torch", "onnx")  # chatbot_model.retrieval.embedder
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")  # chatbot_model.retrieval.index
TRACE_SINKS = ("auto", "otlp", "mlflow")  # chatbot_model.tracing.otlp
NAMED_CHOICES = {  # setting -> (what it names, the valid names): one validator, one message shape
    "guardrail_backend": ("guardrail backend", GUARDRAIL_BACKENDS),
    "embedding_backend": ("embedding backend", EMBEDDING_BACKENDS),
    "index_type": ("index type", INDEX_TYPES),
    "serving_backend": ("serving backend", SERVING_BACKENDS),
    "trace_sink": ("trace sink", TRACE_SINKS),
}


MASK = "***"
_SECRET_QUERY_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key", re.IGNORECASE)
# free text: `scheme://user:` then the password up to the last `@` of the word (it may hold `/`, `?`, `#` or an
# unencoded `@`); over-masking a `host:port/path@x` that has no password is the safe way to be wrong
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*:)(?P<password>\S*)(?P<at>@)")


def _mask_userinfo(url: str) -> str:
    """The password of `url` as `***`. A URL with one `@` is parsed by SQLAlchemy's `make_url` (the parser the
    stores use: a password holding `/`, `?` or `#` is found as they find it) and rendered with the password
    hidden; with more than one `@` (an unencoded `@`, or one in the path) the userinfo is ambiguous and the
    free-text rule masks up to the last `@`; what `make_url` cannot parse (models:/..., runs:/...) too."""
    from sqlalchemy.engine import make_url

    if url.count("@") == 1:
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads
            parsed = None
        if parsed is not None and parsed.password is not None:
            return parsed.render_as_string(hide_password=True)
    return mask_secrets(url)


def mask_url(url: str | None) -> str | None:
    """`url` with its password shown as `***` (user:pass@ and secret query values such as `?password=`).

    Works for SQLAlchemy URLs (`postgresql://u:p@h/db`, `sqlite://u:p@/x.db`), http(s) URLs and MLflow URIs;
    text that is not a URL comes back unchanged. Use it wherever a URL is printed or logged."""
    if not url or ("://" not in url and "?" not in url):
        return url
    masked = _mask_userinfo(url) if "://" in url else url
    try:
        query = urlsplit(masked).query
    except ValueError:  # not a URL after all
        return masked
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_QUERY_KEYS.search(k) for k, _ in pairs):
        safe = urlencode([(k, MASK if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*")
        masked = masked.replace(f"?{query}", f"?{safe}", 1)
    return masked


def mask_secrets(text: str) -> str:
    """Free text (an error message, a log line) with every `scheme://user:PASSWORD@` password masked."""
    return _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text) if "://" in text else text


def default_tracking_uri() -> str:
    """The store used without MLFLOW_TRACKING_URI: `mlflow.db` in the checkout (the folder holding MLproject),
    whatever the working directory, so a notebook elsewhere finds the registered model; an installed package
    without a checkout uses `./mlflow.db`."""
    if (PROJECT_ROOT / "MLproject").is_file():
        return f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    return "sqlite:///mlflow.db"


def told_experiment() -> bool:
    """True when the caller chose the MLflow experiment (MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID)."""
    return bool(os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID"))


def _artifact(name: str) -> Path:
    """`artifacts/NAME` of the checkout, else of the working directory (an installed wheel)."""
    for base in (DEFAULT_ARTIFACTS, Path.cwd() / "artifacts"):
        if (base / name).exists():
            return base / name
    return DEFAULT_ARTIFACTS / name


def _json_artifact(name: str) -> dict:
    """The JSON object in `artifacts/NAME` ({} when there is none)."""
    path = _artifact(name)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return {}


class Settings(BaseSettings):
    """Effective configuration. `llmops-chatbot config` prints it with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix="CHATBOT_", extra="ignore", validate_default=True, populate_by_name=True
    )

    # knowledge base and retrieval
    docs_path: Path = Field(default_factory=lambda: _artifact("docs.json"), description="knowledge base: file or folder")
    index_dir: Path = Field(Path(".chatbot/index"), description="where the FAISS index and chunk store persist")
    embedding_model: str = Field("", description="sentence-transformers id or path; empty = the embedded all-MiniLM-L6-v2")
    chunk_size: int = Field(800, ge=100, le=20000, description="characters per chunk")
    chunk_overlap: int = Field(120, ge=0, description="characters shared by neighbouring chunks")
    top_k: int = Field(3, ge=1, le=50, description="sources retrieved per question")
    abstain_below: float = Field(0.30, ge=-1, le=1, description="without an abstention model: answer \"not "
                                 "covered\" when the best retrieval score (cosine) is below this; -1 = never")
    abstain_model: dict = Field(default_factory=lambda: _json_artifact("abstention.json"), description="the "
                                "calibrated \"not covered\" model (retrieval/abstention.py), JSON; "
                                "scripts/calibrate_abstention.py; {} = the abstain_below floor")
    lexical_weight: float = Field(0.3, ge=0, le=5, description="weight of the BM25 side (normalised to the best "
                                  "document) added to the cosine when ranking documents; 0 = dense only")
    index_type: str = Field("auto", description="faiss index: auto (exact below 20,000 chunks, IVF above), flat, "
                            "hnsw or ivf")
    embedding_backend: str = Field("auto", description="embedder runtime: auto (ONNX Runtime when its export "
                                   "reproduces the model, else torch), torch or onnx")
    embedding_threads: int = Field(0, ge=0, le=64, description="ONNX Runtime threads per query; 0 = cores, at most 4")
    embedding_cache_dir: Path | None = Field(None, description="where ONNX exports are cached; "
                                             "unset = ~/.cache/llmops-chatbot")
    hnsw_m: int = Field(32, ge=4, le=128, description="hnsw: graph neighbours per vector")
    hnsw_ef_search: int = Field(128, ge=8, le=4096, description="hnsw: candidates explored per query")
    ivf_nprobe: int = Field(0, ge=0, le=65536, description="ivf: lists probed per query; 0 = chosen by size")

    # guardrail
    guardrail_backend: str = Field("auto", description="the classifier that checks questions and answers: auto "
                                   "(toxic-bert when it loads, else embedded), toxic-bert or embedded")
    toxic_bert_model: str = Field("unitary/toxic-bert", description="hub id or local directory of toxic-bert")
    guardrail_threshold: float = Field(0.5, gt=0, lt=1, description="unsafe when any label >= threshold")
    guardrail_load_timeout_s: float = Field(10.0, gt=0, description="auto: how long to try loading toxic-bert")
    guardrail_moderation_model: str = Field("omni-moderation-latest",
                                            description="openai-moderation: the model of OpenAI's moderation endpoint")
    guardrail_moderation_timeout_s: float = Field(2.0, gt=0, description="openai-moderation: total time limit of one "
                                                  "moderation call; past it the embedded classifier decides")

    # routing and prompting
    gpt_model: str = Field("gpt-4o-mini", description="model of the `gpt` route (OpenAI)")
    claude_model: str = Field("claude-3-5-sonnet-latest", description="model of the `claude` route (Anthropic)")
    bias_towards_35: float = Field(0.3, ge=0, le=1, description="starting router bias towards Claude 3.5 Sonnet")
    hint_path: Path = Field(default_factory=lambda: _artifact("adapter_hint.txt"), description="the default hint")
    max_question_chars: int = Field(4000, ge=1, description="longest question accepted")
    history_max_messages: int = Field(6, ge=0, le=100, description="earlier messages (user and assistant) of a "
                                      "conversation that go with a question; older ones are left out")
    history_max_chars: int = Field(6000, ge=0, description="character budget of those earlier messages; the "
                                   "oldest are left out first")

    # providers
    provider_timeout_s: float = Field(15.0, gt=0, description="total time limit of one provider call attempt "
                                      "(the whole reply, not per read); the request budget caps it")
    provider_max_retries: int = Field(2, ge=0, le=10, description="retries of a retryable provider error")
    request_budget_s: float = Field(20.0, gt=0, description="time for every provider call of one request or batch: "
                                    "retries, Retry-After waits and fallbacks share it, and the local answerer "
                                    "still answers within it; keep it below CHATBOT_BACKEND_TIMEOUT_S")
    local_reserve_s: float = Field(1.0, ge=0, description="part of the request budget kept for the local "
                                   "answerer; remote providers get the rest")
    retry_after_max_s: float = Field(10.0, ge=0, description="longest Retry-After honoured before a retry; a "
                                     "longer one (or one beyond the budget) skips the provider until then")
    breaker_failures: int = Field(5, ge=1, description="circuit breaker: failures (timeouts, 5xx, 429, broken "
                                  "connections) within breaker_window_s that open a provider's circuit")
    breaker_window_s: float = Field(60.0, gt=0, description="circuit breaker: seconds over which failures count")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="circuit breaker: seconds a provider is skipped once "
                                      "open; then one probe request decides (401/403 disable it until the key "
                                      "changes)")
    max_answer_tokens: int = Field(512, ge=16, description="max tokens a remote model may answer")
    provider_max_concurrency: int = Field(8, ge=1, le=256, description="provider calls of one batch (pyfunc "
                                          "`predict` of many rows) in flight at once")
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY", "CHATBOT_OPENAI_API_KEY"),
                                             description="turns on the `gpt` route's provider; unset = it falls back")
    openai_base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_BASE_URL", "CHATBOT_OPENAI_BASE_URL"),
                                        description="any OpenAI-compatible server (vLLM, Ollama, ...); unset = OpenAI")
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CHATBOT_ANTHROPIC_API_KEY"),
                                                description="turns on the `claude` route's provider; unset = it falls back")
    anthropic_base_url: str | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "CHATBOT_ANTHROPIC_BASE_URL"),
                                           description="a proxy in front of Anthropic's API; unset = Anthropic")

    # MLflow
    tracking_uri: str = Field(
        default_factory=default_tracking_uri,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CHATBOT_TRACKING_URI"),
        description="MLflow tracking store; unset = `mlflow.db` in the checkout (the folder holding MLproject), "
                    "whatever the working directory (an installed package without a checkout: ./mlflow.db)",
    )
    experiment_name: str = Field("llmops-chatbot", validation_alias=AliasChoices("MLFLOW_EXPERIMENT_NAME",
                                                                                 "CHATBOT_EXPERIMENT_NAME"),
                                 description="MLflow experiment of every command's runs, chat sessions and "
                                 "traces (`mlflow run` included); MLFLOW_EXPERIMENT_ID chooses one by id")
    eval_experiment_name: str = Field("llmops-chatbot-eval", description="MLflow experiment of `evaluate` runs "
                                      "and their per-question traces, apart from users' chat traces "
                                      "(MLFLOW_EXPERIMENT_NAME/ID, when set, win)")
    tracing: bool = Field(True, description="record one MLflow trace per request")
    trace_sink: str = Field("auto", description="where traces are written: auto (OTLP to the tracking server when "
                            "MLFLOW_TRACKING_URI is http(s), else the in-process MLflow writer), otlp or mlflow")
    trace_queue_size: int = Field(2_000, ge=1, description="traces waiting for the background exporter (~6 KB each); when "
                                  "full, new traces are dropped and counted (chatbot_traces_dropped_total)")
    trace_export_share: float = Field(0.15, gt=0, le=1, description="most of the CPU the trace exporter thread "
                                      "may use while requests keep coming (1 = no limit)")
    registered_model_name: str = Field("llmops-chatbot", description="name in the MLflow model registry")

    # serving (FastAPI wrapper)
    model_uri: str = Field("models:/llmops-chatbot@production", description="model the in-process backend loads")
    serving_backend: str = Field("in-process", description="in-process (load model_uri) or remote (scoring_url)")
    scoring_url: str | None = Field(None, description="remote backend: base URL of `mlflow models serve`")
    backend_timeout_s: float = Field(60.0, gt=0, description="timeout of one backend call")
    api_key: SecretStr | None = Field(None, description="when set, /chat, /feedback and /v1 need it as a bearer "
                                      "token, and so do /metrics and the API docs unless opened below")
    session_secret: SecretStr | None = Field(None, description="signs the session ids the server issues (at least "
                                             "16 characters); unset: a random secret per process, so replicas "
                                             "must share one for a conversation to continue on another replica")
    max_body_bytes: int = Field(65536, ge=1024, description="largest request body accepted")
    body_read_timeout_s: float = Field(10.0, ge=0, description="a request body must arrive within this many "
                                       "seconds, else 408 (0 = no limit; headers: the ingress's timeout)")
    max_concurrent_chats: int = Field(32, ge=0, description="/chat and /v1 answers in progress at once in this "
                                      "process; more get 503 with Retry-After (0 = no cap; keep it below the "
                                      "40 worker threads so /feedback still has threads)")
    feedback_rate_per_minute: int = Field(30, ge=0, description="ratings one client (API key, else IP address) "
                                          "may send per minute to this process; more get 429 (0 = no limit)")
    protect_metrics: bool | None = Field(None, description="/metrics needs the API key; unset: it does whenever "
                                         "CHATBOT_API_KEY is set; false: /metrics is public")
    public_docs: bool | None = Field(None, description="/docs, /redoc and /openapi.json: unset: public without "
                                     "CHATBOT_API_KEY, behind it with one; true: public; false: behind the key, "
                                     "and off when no key is set")
    model_load_retry_initial_s: float = Field(1.0, gt=0, description="first wait before retrying a failed model load")
    model_load_retry_max_s: float = Field(60.0, gt=0, description="longest wait between model load attempts")
    model_load_max_attempts: int = Field(0, ge=0, description="model load attempts before giving up; 0 = forever")
    unhealthy_after_s: float = Field(300.0, gt=0, description="/health turns 503 `unhealthy` after this long without "
                                     "a model (a liveness probe then restarts the pod)")
    # rollouts (server/rollout.py): follow the alias, champion/challenger
    alias_poll_s: float = Field(30.0, ge=0, description="in-process backend: seconds between registry polls of the "
                                "served alias; when it moves, the new version is loaded, warmed and swapped in (0 = off)")
    challenger_alias: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$", description="a second alias of the "
                                         "served model (e.g. staging) answering CHATBOT_CHALLENGER_SHARE of sessions")
    challenger_share: float = Field(0.1, ge=0, le=1, description="share of sessions (sticky per session_id) the "
                                    "challenger answers")
    # OpenAI-compatible API (/v1)
    allow_client_system_prompt: bool = Field(False, description="/v1/chat/completions: a caller's system message "
                                             "replaces the hint (in-process backends); off: it is ignored")

    # human feedback
    feedback_db_url: str = Field("sqlite:///.chatbot/feedback.db", description="SQLAlchemy URL of the feedback store")
    adaptation_refresh_s: float = Field(5.0, ge=0, description="how often processes re-read the adaptation state")
    adaptation_half_life_h: float = Field(24.0, gt=0, description="hours after which a rating weighs half as much")
    adaptation_bias_gain: float = Field(0.3, ge=0, le=1, description="most that feedback can raise bias_towards_35")
    adaptation_grounded_share: float = Field(0.3, gt=0, lt=1, description="decayed share of thumbs down that "
                                             "switches to the grounded hint")
    # attaching stored ratings to their MLflow traces (store/feedback.py)
    feedback_retry_after_s: float = Field(30.0, ge=0, description="first automatic retry of a rating not yet "
                                          "attached to its trace, then doubling ...")
    feedback_retry_cap_s: float = Field(600.0, ge=0, description="... up to this many seconds between retries")
    feedback_max_attempts: int = Field(12, ge=1, description="tries whose trace is not found before a rating is "
                                       "marked orphaned (~1 h of backoff at the defaults)")
    feedback_lease_s: float = Field(120.0, gt=0, description="a rating claimed for attaching is retried by another "
                                    "process after this long (its claimer crashed)")
    feedback_retries_per_record: int = Field(10, ge=0, description="older unattached ratings a synchronous "
                                             "`record` retries")
    feedback_sync_batch: int = Field(200, ge=1, description="ratings the background attach worker tries per pass")
    feedback_sync_interval_s: float = Field(5.0, gt=0, description="the background attach worker also wakes this "
                                            "often for due retries")
    feedback_attach_workers: int = Field(4, ge=1, description="ratings attached at once to an http(s) tracking "
                                         "server (each attach mostly waits on it); 1 with a local store")
    feedback_sync_share: float = Field(0.15, gt=0, le=1, description="most of the CPU the attach worker may use "
                                       "while requests keep coming (1 = no limit)")
    tracking_probe_timeout_s: float = Field(2.0, gt=0, description="TCP reachability probe of an http(s) tracking "
                                            "server before attaching ratings")

    # conversations (chatbot_model/store/conversations.py, followup.py)
    conversation_retention_days: float = Field(30.0, ge=0, description="conversation turns older than this are "
                                               "deleted by the server's retention task and by `llmops-chatbot "
                                               "conversations prune`; 0 = keep them")
    feedback_retention_days: float = Field(365.0, ge=0, description="ratings older than this are deleted by the "
                                           "server's retention task and `llmops-chatbot conversations prune`; "
                                           "0 = keep them")
    retention_interval_s: float = Field(3600.0, ge=0, description="how often the server prunes conversation turns "
                                        "and ratings past their retention (0 = never: prune with the CLI or a "
                                        "CronJob)")
    condense_timeout_s: float = Field(5.0, gt=0, description="longest a remote provider may take to rewrite a "
                                      "follow-up into a standalone question; then the offline rule decides")

    @field_validator(*NAMED_CHOICES)
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        kind, choices = NAMED_CHOICES[info.field_name]
        if value not in choices:
            raise ValueError(f"unknown {kind} {value!r}; choose one of {list(choices)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})")
        if self.request_budget_s >= self.backend_timeout_s:
            raise ValueError(f"request_budget_s ({self.request_budget_s:g}) must be below backend_timeout_s "
                             f"({self.backend_timeout_s:g}) so the answer (the local one at worst) arrives before the "
                             "backend gives up; lower CHATBOT_REQUEST_BUDGET_S")
        if self.local_reserve_s >= self.request_budget_s:
            raise ValueError(f"local_reserve_s ({self.local_reserve_s:g}) must be below request_budget_s "
                             f"({self.request_budget_s:g}); lower CHATBOT_LOCAL_RESERVE_S")
        if self.trace_sink == "otlp" and not self.tracking_uri.startswith(("http://", "https://")):
            raise ValueError(f"CHATBOT_TRACE_SINK=otlp needs an http(s) tracking server as MLFLOW_TRACKING_URI, not "
                             f"{mask_url(self.tracking_uri)}; set one, or CHATBOT_TRACE_SINK=auto")
        if self.serving_backend == "remote" and not self.scoring_url:
            raise ValueError("serving_backend 'remote' needs CHATBOT_SCORING_URL (the `mlflow models serve` URL)")
        if self.protect_metrics and not (self.api_key and self.api_key.get_secret_value()):
            raise ValueError("CHATBOT_PROTECT_METRICS=true needs CHATBOT_API_KEY (the key /metrics then requires); "
                             "set one, or leave /metrics public")
        if self.session_secret is not None and 0 < len(self.session_secret.get_secret_value()) < 16:
            raise ValueError("CHATBOT_SESSION_SECRET needs at least 16 characters (e.g. `openssl rand -hex 32`)")
        return self

    def masked(self) -> dict[str, str]:
        """Every setting as text: secrets shown as set/unset only, passwords in URLs as `***` (`mask_url`)."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "****** (set)"
            elif value is None:
                value = "(unset)"
            out[name] = mask_url(str(value))
        return out


def load_settings(**overrides) -> Settings:
    """Build and validate settings; a bad value becomes a `ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"CHATBOT_{field.upper()}" if field in Settings.model_fields else field
            problems.append(f"{env}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def artifact_root(tracking_uri: str) -> str | None:
    """A local artifact root beside a sqlite store (`mlartifacts/` next to the db file); None for servers."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlartifacts").as_uri()


def ensure_experiment(name: str, tracking_uri: str | None = None) -> str:
    """The id of experiment `name`, created (with a local artifact root for sqlite) when missing."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri or mlflow.get_tracking_uri()))
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def _experiment_exists(experiment_id: str, tracking_uri: str) -> bool:
    import mlflow

    try:
        return mlflow.MlflowClient(tracking_uri).get_experiment(experiment_id) is not None
    except mlflow.exceptions.MlflowException:
        return False


def configure_mlflow(settings: Settings, experiment_name: str | None = None) -> str:
    """Point MLflow at the configured store and experiment: MLFLOW_EXPERIMENT_ID when set, else
    `experiment_name` (default: the settings' experiment). Returns the experiment id.
    """
    import mlflow

    uri = settings.tracking_uri
    os.environ["MLFLOW_TRACKING_URI"] = uri  # subprocesses (mlflow run, models serve) see the same store
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # local copies: bars are only noise
    mlflow.set_tracking_uri(uri)
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")  # also set by mlflow.set_experiment: maybe of another store
    experiment_id = chosen if chosen and _experiment_exists(chosen, uri) else ensure_experiment(
        experiment_name or settings.experiment_name, uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
