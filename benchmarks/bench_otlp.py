"""Benchmark of tracing to a tracking server over OTLP (not a test): the serving process's CPU per answer with
tracing on and off, and the share of traces the server stored within 15 s.

    python benchmarks/bench_otlp.py [--quick]

A local `mlflow server` (its own SQLite store in a temp dir) is the tracking URI. A model is logged, registered and
promoted there; then `llmops-chatbot serve` runs twice (CHATBOT_TRACING=true, then false), each time with 8
closed-loop /chat clients for 30 s (10 s with --quick). CPU is the serving process's utime+stime from
/proc/PID/stat over the load window, divided by the answers served. With tracing on, the traces of the answers
are counted in the server 15 s after the load stops (`mlflow.search_traces`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import main, questions

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def start(args, env, cwd, url, path, log):
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{args[:3]} exited:\n{Path(log).read_text()[-3000:]}")
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{args[:3]} not ready")


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def load(url: str, seconds: float, qs: list[str]) -> tuple[int, int, list[str]]:
    answered, errors, trace_ids, lock = [0], [0], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int):
        with httpx.Client(timeout=30) as c:
            i = k
            while time.monotonic() < deadline:
                r = c.post(f"{url}/chat", json={"question": qs[i % len(qs)]})
                i += CLIENTS
                with lock:
                    if r.status_code == 200:
                        answered[0] += 1
                        trace_ids.append(r.json().get("trace_id") or "")
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered[0], errors[0], trace_ids


def run(quick: bool) -> dict:
    seconds = 10 if quick else 30
    tmp = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    server = f"http://127.0.0.1:{free_port()}"
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_") and k not in (
        "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", MLFLOW_TRACKING_URI=server, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               CHATBOT_INDEX_DIR=str(tmp / "index"), CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp / 'feedback.db'}",
               CHATBOT_GUARDRAIL_BACKEND="embedded", CHATBOT_ALIAS_POLL_S="0")
    mlflow_proc = start([str(bindir / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
                         "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port",
                         server.rsplit(":", 1)[1], "--workers", "1"], env, tmp, server, "/health", tmp / "mlflow.log")
    out: dict = {"clients": CLIENTS, "seconds": seconds}
    try:
        subprocess.run([sys.executable, "-c", (
            "from chatbot_model.config import load_settings, configure_mlflow; "
            "from chatbot_model.lifecycle.registry import log_and_register, promote; s = load_settings(); "
            "configure_mlflow(s); v = log_and_register(s, 'llmops-chatbot'); "
            "promote('llmops-chatbot', 'Production', v.version, force=True, reason='benchmark')")],
            env=env, cwd=tmp, check=True, capture_output=True)
        qs = questions()
        for tracing in ("true", "false"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start([sys.executable, "-m", "chatbot_model.cli.main", "serve", "--port", str(port)],
                         {**env, "CHATBOT_TRACING": tracing}, tmp, url, "/ready", tmp / f"serve-{tracing}.log")
            try:
                load(url, 3, qs)  # warm-up
                metrics_before = httpx.get(f"{url}/metrics").text
                cpu0 = cpu_seconds(proc.pid)
                answered, errors, trace_ids = load(url, seconds, qs)
                cpu = cpu_seconds(proc.pid) - cpu0
                row = {"answers": answered, "errors": errors, "answers_per_s": round(answered / seconds, 1),
                       "cpu_ms_per_answer": round(1000 * cpu / max(answered, 1), 2)}
                if tracing == "true":
                    time.sleep(15)
                    import mlflow

                    mlflow.set_tracking_uri(server)
                    exp = mlflow.MlflowClient().get_experiment_by_name("llmops-chatbot").experiment_id
                    stored = {t.info.trace_id for t in mlflow.search_traces(
                        locations=[exp], return_type="list", max_results=100_000, include_spans=False)}
                    ids = [t for t in trace_ids if t]
                    row["traces_stored_within_15s"] = sum(t in stored for t in ids)
                    row["trace_share_stored"] = round(row["traces_stored_within_15s"] / max(len(ids), 1), 3)
                    row["dropped_metric"] = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
                                             if line.startswith("chatbot_traces_dropped_total")]
                    del metrics_before
                out[f"tracing_{'on' if tracing == 'true' else 'off'}"] = row
            finally:
                stop(proc)
    finally:
        stop(mlflow_proc)
    return out


if __name__ == "__main__":
    main("otlp", run)
