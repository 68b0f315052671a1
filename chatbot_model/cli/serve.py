"""`llmops-chatbot serve`: the FastAPI wrapper under uvicorn (light at the top: click and the settings)."""

from __future__ import annotations

import errno
import socket

import click

from chatbot_model.config import SERVING_BACKENDS, configure_mlflow, load_settings, mask_url
from chatbot_model.lifecycle.gate import EvaluationGate
from chatbot_model.lifecycle.loop import evaluate_model
from chatbot_model.lifecycle.model_uri import resolve_version
from chatbot_model.lifecycle.registry import log_and_register, promote

# uvicorn's limits, the same wherever the server runs (`serve` below, the Dockerfile's CMD and the k8s wrapper
# Deployment's command; tests/test_security.py keeps the three equal). uvicorn has no header-read timeout: a
# client trickling its headers holds a connection until --limit-concurrency is reached, so the ingress in front
# enforces one (docs/security.md); the body is read within CHATBOT_BODY_READ_TIMEOUT_S (server/middleware.py).
UVICORN_LIMITS = {
    "--limit-concurrency": "256",                 # connections and tasks at once; beyond: 503 at once
    "--backlog": "512",                           # pending TCP connections the kernel queues
    "--timeout-keep-alive": "5",                  # an idle keep-alive connection is closed after 5 s
    "--h11-max-incomplete-event-size": "16384",   # request line + headers at most 16 KiB
    "--timeout-graceful-shutdown": "20",          # then open connections are closed (k8s grace period: 30 s)
}


def uvicorn_kwargs() -> dict:
    """UVICORN_LIMITS as `uvicorn.run` keyword arguments."""
    return {flag.removeprefix("--").replace("-", "_"): int(value) for flag, value in UVICORN_LIMITS.items()}


def ensure_registered_model(settings) -> str | None:
    """Register, evaluate and promote the default model when `settings.model_uri` does not resolve; returns
    what it did. The promotion goes through the evaluation gate like any other (no --force): a default model
    that fails its evaluation is not served, and the error says why."""
    configure_mlflow(settings)
    try:
        if resolve_version(settings.model_uri):
            return None
    except Exception:  # noqa: BLE001 - missing model or alias: register one below
        pass
    from mlflow import MlflowClient

    registered = log_and_register(settings)
    report = evaluate_model(settings, registered.version_uri)
    gate = EvaluationGate(MlflowClient(), registered.name)
    promotion = promote(registered.name, "Production", registered.version, gate=gate, settings=settings)
    return (f"registered {registered.name} version {promotion.version}, evaluated it ({report.status}, run "
            f"{report.run_id}) and promoted it to {promotion.stage}")


def check_port_free(host: str, port: int) -> None:
    """Fail at once, before anything is registered or loaded, when HOST:PORT cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host!r}: {exc.strerror}; pass an address such as "
                                   "`--host 127.0.0.1` (or `make run HOST=127.0.0.1`)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            other = port + 100 if port + 100 <= 65535 else 8100
            what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise click.ClickException(f"port {port} on {host} {what}; choose another with `make run PORT={other}` "
                                       "or `llmops-chatbot serve --port N`") from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--backend", type=click.Choice(SERVING_BACKENDS), default=None,
              help="in-process (load the model here) or remote (an `mlflow models serve` URL); "
                   "default: CHATBOT_SERVING_BACKEND.")
@click.option("--model-uri", default=None, help="Model to load in-process (default: CHATBOT_MODEL_URI).")
@click.option("--scoring-url", default=None, help="Remote backend base URL (default: CHATBOT_SCORING_URL).")
@click.option("--ensure-model", is_flag=True,
              help="In-process: register and promote the default model first when the registry has none.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(host: str, port: int, backend: str | None, model_uri: str | None, scoring_url: str | None,
          ensure_model: bool, log_level: str) -> None:
    """Serve /chat, /feedback, /health, /ready, /metrics and the chat page at http://HOST:PORT/."""
    check_port_free(host, port)
    import uvicorn

    from chatbot_model.server.main import create_app  # deferred: loads fastapi, opentelemetry, prometheus_client

    overrides = {"serving_backend": backend, "model_uri": model_uri, "scoring_url": scoring_url}
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    if ensure_model and settings.serving_backend == "in-process":
        done = ensure_registered_model(settings)
        if done:
            click.echo(done)
    click.echo(f"chat page: http://{host}:{port}/  (backend {settings.serving_backend}, "
               f"{mask_url(settings.model_uri if settings.serving_backend == 'in-process' else settings.scoring_url)})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, **uvicorn_kwargs())
