"""What the tests share (no tests here): waiting with a deadline, ending a process group, a free loopback port,
a live uvicorn on loopback, servers started as subprocesses, a fake scoring server, settings and service
builders. The service is expensive (embedder, index), so tests share one per module and wrap it."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

import pytest

from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.contract import CompletionRequest
from chatbot_model.server import create_app
from chatbot_model.server.backends import Backend, ServiceBackend
from chatbot_model.server.sessions import caller_fingerprint, session_ids
from tests.fake_llm_server import ANTHROPIC_PATH, OPENAI_PATH, LoopbackHTTPServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "artifacts" / "docs.json"

BASE = dict(guardrail_backend="embedded", provider_max_retries=0, provider_timeout_s=10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.05, proc=None, log=None):
    """`predicate()`'s first truthy value, polled until `timeout` seconds have passed; then an AssertionError
    naming `what`. A bound on waiting, never a speed claim: pick a timeout far above the expected time.
    HTTP errors count as "not yet" (a server still starting). With `proc`, fails at once when the process has
    exited; `log` (a path) puts the end of its output into the message."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}{_tail(log)}")
        try:
            value = predicate()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{_tail(log)}")
        time.sleep(interval)


def _tail(log, chars: int = 3000) -> str:
    if log is None or not Path(log).exists():
        return ""
    return ":\n" + Path(log).read_text(errors="replace")[-chars:]


def threads_now() -> set:
    """The threads alive now (for `started_since`)."""
    return set(threading.enumerate())


def started_since(before: set) -> list[str]:
    """Names of the threads alive now that were not alive in `before` (from `threads_now()`): what the code under
    test left running. Unlike a process-wide count, other tests' threads ending meanwhile do not change it."""
    return sorted(t.name for t in threading.enumerate() if t not in before and t.is_alive())


def responds(url: str, status: int = 200, timeout: float = 5.0) -> bool:
    """True when GET `url` answers `status` (a predicate for `wait_until`)."""
    return httpx.get(url, timeout=timeout).status_code == status


def kill_group(proc, grace: float = 20.0, first: int = signal.SIGTERM) -> None:
    """Ends `proc` and its children: `first` (SIGTERM) to its process group (started with
    `start_new_session=True`), then SIGKILL after `grace` seconds; reaps it. An exited process is only reaped."""
    try:
        os.killpg(proc.pid, first)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


@contextmanager
def server_process(args: list, env: dict, cwd, url: str, ready_path: str, log, timeout: float = 300):
    """`args` started in its own process group, output to `log`; yields the process once `url + ready_path`
    answers 200 (within `timeout`), then ends the group."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(a) for a in args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: responds(url + ready_path), f"{Path(str(args[0])).name} to answer {ready_path}",
                   timeout, interval=0.5, proc=proc, log=log)
        yield proc
    finally:
        kill_group(proc)


@contextmanager
def mlflow_models_serve(model_uri: str, env: dict, cwd, timeout: float = 180):
    """`mlflow models serve` of `model_uri` on a free loopback port; yields its base URL once /ping answers, then
    stops it by its process group (the mlflow pid and its uvicorn child)."""
    bindir = Path(sys.executable).parent  # mlflow execs `uvicorn` from PATH: the venv's bin goes first
    env = {**env, "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [bindir / "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-p", str(port),
            "--host", "127.0.0.1"]
    with server_process(args, env, cwd, url, "/ping", Path(cwd) / f"serve-{port}.log", timeout):
        yield url


_EMPTY_STORE: list[Path] = []


def tracking_store(directory) -> str:
    """`sqlite:///<directory>/mlflow.db`; when no store is there yet, a copy of an empty MLflow store, whose schema is
    made once per process (MLflow's migrations take seconds on every new store). A store already there is kept."""
    from mlflow.tracking import MlflowClient

    if not _EMPTY_STORE:
        template = Path(tempfile.mkdtemp(prefix="mlflow-empty-store-")) / "mlflow.db"
        atexit.register(shutil.rmtree, template.parent, True)
        MlflowClient(f"sqlite:///{template}").search_experiments()
        _EMPTY_STORE.append(template)
    db = Path(directory) / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_EMPTY_STORE[0], db)
    return f"sqlite:///{db}"


def make_settings(index_dir, store_uri: str, tmp_path, **overrides):
    return load_settings(**{**BASE, "index_dir": index_dir, "tracking_uri": store_uri,
                            "feedback_db_url": f"sqlite:///{tmp_path / 'feedback.db'}", **overrides})


def make_service(settings, providers=None):
    from chatbot_model.pipeline.service import LLMService

    configure_mlflow(settings)
    return LLMService.from_settings(settings, providers=providers)


def sibling_service(service, settings):
    """A service sharing `service`'s embedder, index and guardrail, with providers built from `settings`."""
    from chatbot_model.pipeline.adapter import ControlHintAdapter
    from chatbot_model.pipeline.router import HeuristicRouter
    from chatbot_model.pipeline.service import LLMService

    return LLMService(settings, guardrail=service.guardrail, rag=service.rag,
                      router=HeuristicRouter(settings.bias_towards_35),
                      adapter=ControlHintAdapter(service.adapter.hint))


def service_app(settings, service, **kw):
    return create_app(settings, backend=ServiceBackend(settings, service=service), **kw)


class LiveServer:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app, ready_timeout: float = 60.0):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start", ready_timeout)
        assert self.server.started, "uvicorn exited while starting"

    def wait_ready(self, timeout: float = 120.0) -> None:
        wait_until(lambda: responds(f"{self.url}/ready"), f"{self.url}/ready", timeout, interval=0.1)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(service, settings=None):
    """`service` behind a ready LiveServer (the service backend), closed at the end."""
    server = LiveServer(service_app(settings or service.settings, service))
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def contract_row(question: str, **fields) -> dict:
    row = {"question": question, "standalone_question": "", "answer": f"remote answer to {question}", "blocked": False,
           "abstained": False,
           "route": "gpt",
           "provider": "local", "model": "extractive-v1", "fallback": "", "latency_ms": 1.5,
           "sources": [{"id": "d1", "title": "Doc one", "source": "https://example.org/d1", "score": 0.9}],
           "trace_id": "tr-" + hashlib.md5(question.encode()).hexdigest(), "model_version": "", "error": ""}
    row.update(fields)
    return row


class FakeScoringServer:
    """A tiny `mlflow models serve` stand-in: /ping and /invocations with `dataframe_records`.

    `replies` queues raw (status, body) pairs; by default every question gets a `contract_row`. With `hold`, each
    /invocations waits until `release` is set, watching its connection: `arrived` is set when a request is in,
    `hung_up` when its caller closed the connection before the release (nothing is answered then)."""

    def __init__(self, delay: float = 0.0, hold: bool = False):
        self.delay = delay
        self.hold = hold
        self.arrived, self.release, self.hung_up = threading.Event(), threading.Event(), threading.Event()
        self.replies: deque = deque()
        self.requests: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                self._send(200 if self.path == "/ping" else 404, b"\n")

            def _closed_by_peer(self) -> bool:
                if not select.select([self.connection], [], [], 0)[0]:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _held_until_release(self) -> bool:
                """False when the caller hung up first."""
                while not outer.release.wait(0.01):
                    if self._closed_by_peer():
                        outer.hung_up.set()
                        return False
                return True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                outer.requests.append(body)
                outer.arrived.set()
                if outer.hold and not self._held_until_release():
                    return
                time.sleep(outer.delay)
                if outer.replies:
                    return self._send(*outer.replies.popleft())
                rows = [contract_row(r["question"]) for r in body["dataframe_records"]]
                self._send(200, {"predictions": rows})

        self.httpd = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_page_app_server(index_dir, tmp_path):
    """The chat page's server for the browser tests: the service backend on a ready LiveServer (the caller closes
    it) and its settings."""
    store = tracking_store(tmp_path)
    settings = make_settings(index_dir, store, tmp_path)
    server = LiveServer(service_app(settings, make_service(settings)))
    server.wait_ready()
    return server, settings


# ---------------------------------------------------------------- a headless browser
CHROMIUM = os.environ.get("LLMOPS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


REQUIRE_ALL = "LLMOPS_TEST_REQUIRE_ALL"  # .ci/run sets it to 1: CI installs every tool, so none may be missing


def unavailable(reason: str) -> None:
    """Skip a test whose optional tool is missing (`reason`: what is missing and how to get it); under
    LLMOPS_TEST_REQUIRE_ALL=1 fail instead, so a failed install in CI cannot hide the tests users rely on."""
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: nothing may be skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, how: str):
    """The module `name` imported, or `unavailable` saying `how` to install it."""
    if importlib.util.find_spec(name) is None:
        unavailable(f"{name} is not installed: {how}")
    return importlib.import_module(name)


def chromium() -> str:
    """Debian's chromium for Playwright (which never downloads a browser); fails, never skips: CI installs it."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail(f"chromium not found at {CHROMIUM}: install it with `apt-get install -y --no-install-recommends "
                    "chromium` (.ci/run does) or set LLMOPS_TEST_CHROMIUM", pytrace=False)
    return path


# ---------------------------------------------------------------- a client asking all the time (rollout)
class ChatClient(threading.Thread):
    """Sends questions to a TestClient one after another until stopped; records every status and answering
    version."""

    def __init__(self, http, session_id: str | None = None):
        super().__init__(daemon=True)
        self.http, self.session_id = http, session_id
        self.statuses: list[int] = []
        self.versions: list[str] = []
        self.stop = threading.Event()
        self.answered = threading.Condition()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            body = {"question": f"question {n}"}
            if self.session_id:  # one the app issued (tests.helpers.new_session)
                body["session_id"] = self.session_id
            r = self.http.post("/chat", json=body)
            with self.answered:
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.versions.append(r.json()["model_version"])
                self.answered.notify_all()

    def wait_for(self, predicate, timeout: float = 60) -> None:
        with self.answered:
            assert self.answered.wait_for(lambda: predicate(self), timeout), self.statuses[-5:]


def wait_released(backend, n: int) -> None:
    """The release of an old version runs in its own thread: wait for it (bounded; no timing asserted)."""
    wait_until(lambda: backend.champion.released >= n
               and not any(t.name.startswith("release-") for t in threading.enumerate()), "the old version's release")


# ---------------------------------------------------------------- providers against the fake server
REMOTE = {
    "openai": {"path": OPENAI_PATH, "model": "gpt-4o-mini", "key": "sk-test", "env": "OPENAI_API_KEY"},
    "anthropic": {"path": ANTHROPIC_PATH, "model": "claude-3-5-sonnet-latest", "key": "sk-ant-test",
                  "env": "ANTHROPIC_API_KEY"},
}


def provider_keys(server) -> dict:
    """Settings that send OpenAI and Anthropic calls to the fake server `server`, with test keys."""
    return dict(openai_api_key="sk-test", openai_base_url=server.openai_base_url,
                anthropic_api_key="sk-ant-test", anthropic_base_url=server.anthropic_base_url)


def settings_for(server, *, retries=2, timeout=5.0, **extra):
    values = dict(**provider_keys(server), provider_timeout_s=timeout, provider_max_retries=retries)
    values.update(extra)
    return load_settings(**values)


def remote(name, server, **kw):
    from chatbot_model.providers import build_provider

    provider = build_provider(name, settings_for(server, **kw))
    provider.retry_wait_min, provider.retry_wait_max = 0.01, 0.05  # keep the tests fast
    return provider


def request_for(name, **kw):
    values = dict(system="You answer from the sources.", prompt="Sources: [1] ...\nQuestion: what is an alias?",
                  question="what is an alias?", sources=[], model=REMOTE[name]["model"])
    values.update(kw)
    return CompletionRequest(**values)


# ---------------------------------------------------------------- small corpora
SERVICE_CORPUS = [
    {"id": "aliases", "title": "Model aliases", "source": "docs/aliases.md",
     "text": "MLflow aliases are mutable named references to a model version. "
             "Load an aliased model with the URI models:/name@alias. Moving an alias redeploys without new code. "
             "MlflowClient.set_registered_model_alias sets an alias. The registry UI shows each alias beside its "
             "version."},
    {"id": "faiss", "title": "FAISS indexes", "source": "docs/faiss.md",
     "text": "IndexFlatIP performs exact inner product search over all vectors. "
             "HNSW is an approximate graph index that trades a little recall for speed."},
    {"id": "hint", "title": "The hint", "source": "docs/hint.md",
     "text": "The control hint opens every system prompt. Negative feedback makes it more factual and grounded."},
]
TOXIC_QUESTION = "You are a worthless idiot and I will hurt you, you stupid piece of garbage"
RAG_CORPUS = [
    {"id": "aliases", "title": "Model aliases", "source": "a.md",
     "text": "MLflow aliases are mutable named references to a model version. Load one with models:/name@alias."},
    {"id": "faiss", "title": "FAISS indexes", "source": "b.md",
     "text": "IndexFlatIP performs exact inner product search. HNSW is an approximate graph-based index."},
    {"id": "guardrail", "title": "Guardrail", "source": "c.md",
     "text": "The guardrail blocks toxic questions before any model is called. It also checks every answer."},
]


# ---------------------------------------------------------------- the registry and `mlflow` CLI
EXPERIMENT = "llmops-chatbot"
CHECKOUT_STATE = ("mlflow.db", "mlruns", "mlartifacts", ".chatbot")  # what `mlflow run` must not write here


def make_versions(client, n: int, name: str = "llmops-chatbot") -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=f"file:///tmp/model-{i}").version) for i in range(n)]


def mlflow_cli(project, *args, timeout=900) -> subprocess.CompletedProcess:
    """The venv's `mlflow` with `project["env"]` in `project["root"]`. `timeout` bounds a hang only: a whole
    evaluation in `mlflow run -e evaluate` took over 240 s on a loaded 2-core machine."""
    return subprocess.run([str(Path(sys.executable).parent / "mlflow"), *args], env=project["env"],
                          cwd=project["root"], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the guardrail's training data (scripts/)
def scripts_on_path() -> None:
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))


def guardrail_training_texts() -> list[str]:
    """Every text the shipped guardrail was trained on, generated as scripts/train_guardrail.py generates it."""
    scripts_on_path()
    from guardrail_templates import template_rows
    from near_copies import all_eval_texts
    from train_guardrail import IDENTITY_SENTENCES

    texts = [json.loads(line)["text"] for line in (ROOT / "scripts" / "guardrail_supplement.jsonl").read_text()
             .splitlines() if line.strip()]
    spec = importlib.util.spec_from_file_location("guardrail_benign", ROOT / "scripts" / "guardrail_benign.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained, _ = module.split_benign(module.benign_corpus())
    templates = template_rows(all_eval_texts() + IDENTITY_SENTENCES)
    return texts + [text for _, _, text in trained] + [r["text"] for r in templates]


# ---------------------------------------------------------------- a backend whose load fails at first
CANARY = "Canary-Pw-7f3a9"  # a password that must never show in a response, a log or /health


class FlakyBackend(Backend):
    """A real Backend whose `_load` fails `failures` times (as a down tracking store would), then succeeds."""

    name = "flaky"

    def __init__(self, settings, failures: int):
        super().__init__(settings)
        self.failures = failures
        self.calls = 0

    def _load(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"tracking store postgresql://mlflow:{CANARY}@db:5432/mlflow is down")

    def _predict(self, questions):
        return [{"answer": "ok", "route": "gpt", "provider": "local", "model": "m", "trace_id": "tr-flaky"}
                for _ in questions]


def new_session(client, key: str | None = None) -> str:
    """A session id the app under test issued (as its first answer would return), bound to `key` if given."""
    return session_ids(client.app).issue(caller_fingerprint(key))
