"""Shared pieces of the server tests (no tests here): a live uvicorn on loopback, a fake scoring server, a
service builder. The service is expensive (embedder, index), so tests share one per module and wrap it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.server import create_app
from chatbot_model.server.backends import ServiceBackend
from tests.fake_llm_server import LoopbackHTTPServer

BASE = dict(guardrail_backend="embedded", provider_max_retries=0, provider_timeout_s=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_models_serve(model_uri: str, env: dict, cwd, timeout: float = 180):
    """`mlflow models serve` of `model_uri` on a free loopback port; yields its base URL once /ping answers, then
    stops it by its process group (the mlflow pid and its uvicorn child)."""
    bindir = Path(sys.executable).parent  # mlflow execs `uvicorn` from PATH: the venv's bin goes first
    env = {**env, "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}"}
    port = free_port()
    log = Path(cwd) / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bindir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                                 "-p", str(port), "--host", "127.0.0.1"], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, "mlflow models serve exited:\n" + log.read_text()[-4000:]
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping:\n" + log.read_text()[-2000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


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
        deadline = time.monotonic() + ready_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/ready").status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s: {httpx.get(f'{self.url}/health').json()}")

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

    `replies` queues raw (status, body) pairs; by default every question gets a `contract_row`."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                outer.requests.append(body)
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
        self.httpd.shutdown()
        self.httpd.server_close()


def new_session(client, key: str | None = None) -> str:
    """A session id the app under test issued (as its first answer would return), bound to `key` if given."""
    from chatbot_model.server.sessions import caller_fingerprint, session_ids

    return session_ids(client.app).issue(caller_fingerprint(key))
