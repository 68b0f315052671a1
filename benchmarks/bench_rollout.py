"""Benchmark 7: a rollout under constant load. The wrapper (`llmops-chatbot serve`, its own process, in-process
backend following `@production` every CHATBOT_ALIAS_POLL_S) answers closed-loop clients while the alias moves
1 -> 2 -> 1 -> 2 in the registry.

Per move: swap time (alias moved -> first answer by the new version: poll delay + load + warm-up), latency p50 /
p99 and errors of the load in the swap window (from the move to 2 s after the first new answer), and the server's
RSS before the move, at its peak during the swap, and after the old version was released. Steady-state latency
before the first move is the reference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import DOCS, ROOT, free_port, main, process_rss_mb, questions

NAME = "llmops-chatbot"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


def register(tmp: Path) -> tuple[str, list[str]]:
    from mlflow import MlflowClient

    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register

    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    settings = load_settings(tracking_uri=store, index_dir=tmp / "index", docs_path=DOCS, feedback_db_url="",
                             guardrail_backend="embedded")
    versions = [log_and_register(settings).version,
                log_and_register(settings, hint="Answer in one short paragraph and cite the sources.").version]
    MlflowClient(store).set_registered_model_alias(NAME, "production", versions[0])
    return store, versions


class Load:
    """`clients` closed-loop clients; every request kept as (start, end, status, version)."""

    def __init__(self, url: str, clients: int):
        self.url, self.records, self.stop = url, [], threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        self.qs = questions(200)

    def _run(self, i: int) -> None:
        import httpx

        with httpx.Client(timeout=60) as http:
            n = i
            while not self.stop.is_set():
                n += len(self.threads)
                start = time.monotonic()
                try:
                    r = http.post(f"{self.url}/chat", json={"question": self.qs[n % len(self.qs)]})
                    status = r.status_code
                    version = r.json().get("model_version") if status == 200 else None
                except httpx.HTTPError as exc:
                    status, version = type(exc).__name__, None
                with self.lock:
                    self.records.append((start, time.monotonic(), status, version))

    def first_answer_by(self, version: str, after: float) -> float | None:
        with self.lock:
            ends = [end for start, end, _, v in self.records if v == version and start >= after]
        return min(ends) if ends else None

    def window(self, start: float, end: float) -> dict:
        with self.lock:
            rows = [r for r in self.records if start <= r[0] < end]
        ms = [(e - s) * 1e3 for s, e, status, _ in rows if status == 200]
        return {"requests": len(rows), "errors": sum(1 for r in rows if r[2] != 200),
                "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99), "max_ms": percentile(ms, 1.0)}


class Memory(threading.Thread):
    """The server's RSS every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic(), process_rss_mb(self.pid)))

    def between(self, start: float, end: float) -> list[float]:
        return [mb for t, mb in self.samples if start <= t < end]


def run(quick: bool) -> dict:
    import httpx
    from mlflow import MlflowClient

    poll_s, clients = 1.0, 4
    steady_s, settle_s = (5, 8) if quick else (15, 20)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    store, (v1, v2) = register(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(MLFLOW_TRACKING_URI=store, PYTHONPATH=str(ROOT), CHATBOT_ALIAS_POLL_S=str(poll_s),
               CHATBOT_GUARDRAIL_BACKEND="embedded", CHATBOT_INDEX_DIR=str(tmp / "index"),
               CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp / 'feedback.db'}", CHATBOT_TRACING="false")
    log = open(tmp / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "chatbot_model.cli.main", "serve", "--port", str(port),
                               "--log-level", "warning"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the server did not become ready:\n" + (tmp / "server.log").read_text()[-3000:])
        memory = Memory(server.pid)
        memory.start()
        load = Load(url, clients)
        for thread in load.threads:
            thread.start()
        time.sleep(steady_s)
        client = MlflowClient(store)
        moves, start = [], time.monotonic()
        before = load.window(start - steady_s, start)
        for target in (v2, v1, v2):
            rss_before = memory.between(time.monotonic() - 3, time.monotonic())
            moved = time.monotonic()
            client.set_registered_model_alias(NAME, "production", target)
            first = None
            while first is None and time.monotonic() - moved < 300:
                time.sleep(0.05)
                first = load.first_answer_by(target, moved)
            time.sleep(settle_s)  # the old version is released when its last request ends
            end = time.monotonic()
            health = httpx.get(f"{url}/health").json()
            moves.append({
                "to_version": target,
                "swap_s (alias moved -> first answer by it)": None if first is None else round(first - moved, 2),
                "load_during_swap": load.window(moved, (first or end) + 2),
                "rss_mb": {"before": round(max(rss_before), 1) if rss_before else None,
                           "peak_during": round(max(memory.between(moved, (first or end) + 2)), 1),
                           "after_release": round(min(memory.between(end - 3, end)), 1)},
                "serving_after": health["model_version"], "swaps": health["rollout"]["swaps"],
            })
        load.stop.set()
        memory.stop.set()
        for thread in load.threads:
            thread.join(60)
        total = load.window(0, time.monotonic() + 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()
    return {"clients": clients, "poll_s": poll_s, "tracing": False, "steady_before_first_move": before,
            "moves": moves, "all_requests": total}


if __name__ == "__main__":
    main("rollout", run)
