"""Soak of the server with tracing on (not a test; `make soak`): bounded, loopback only.

    python benchmarks/soak.py [--duration 600] [--clients 8] [--feedback-clients 1] [--feedback-seconds 20]
                              [--tracking-server]

Starts `llmops-chatbot serve --ensure-model` on 127.0.0.1 in a scratch directory (its own sqlite MLflow store,
index and feedback DB; the default settings, so tracing is on), then for `--duration` seconds runs `--clients`
concurrent /chat loops and `--feedback-clients` /feedback loops (about 10 ratings/s each) on the answers' trace
ids. Prints progress every 60 s, then: throughput, p50/p95/p99, errors, server RSS at start and end, traces
dropped (/metrics), and the traces and ratings in the stores. Then `--feedback-seconds` of /feedback from 8
clients back to back (ratings/s), and a SIGTERM with the time the server takes to exit (drains its traces).
Results also go to benchmarks/results/soak.json (soak-tracking-server.json with --tracking-server).

`--tracking-server`: the MLflow store is a local `mlflow server` in its own process (SQLite under the scratch
directory), so traces go over OTLP and ratings attach over its REST API, as in production. After the load ends
the soak counts, in the server's store, the answers' traces stored within 15 s and the ratings given during
the load attached as assessments within 60 s, before the /feedback burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import httpx

from common import free_port, process_rss_mb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = ["MLflow tracing", "the model registry", "FAISS", "the guardrail", "model serving", "the router",
          "feedback", "the local provider", "Docker images", "the adapter hint", "promotion to Production",
          "Kubernetes", "batch scoring", "evaluation", "the chat page", "retrieval"]
FORMS = ["What is {}?", "How do I use {}?", "Explain {} briefly.", "Where is {} configured?", "Why does {} matter?",
         "How does {} work in this project?"]






def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def dropped(base: str) -> dict:
    out = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("chatbot_traces_dropped_total{"):
            out[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def start_tracking_server(work: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port`, its store `tracking.db` and artifacts under `work`."""
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{work / 'tracking.db'}", "--artifacts-destination",
           str(work / "artifacts"), "--workers", "1"]
    return subprocess.Popen(cmd, cwd=work, stdout=(work / "tracking-server.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_server(work: Path, port: int, tracing: bool = True, tracking_uri: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{work / 'mlflow.db'}",
           "CHATBOT_INDEX_DIR": str(work / "index"),
           "CHATBOT_FEEDBACK_DB_URL": f"sqlite:///{work / 'feedback.db'}",
           # the soak is one client rating at ~10/s: the per-client limit (30 a minute) would answer 429
           "CHATBOT_FEEDBACK_RATE_PER_MINUTE": "0"}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CHATBOT_TRACING", "CHATBOT_API_KEY"):
        env.pop(key, None)
    if not tracing:
        env["CHATBOT_TRACING"] = "false"
    cmd = [sys.executable, "-c", "from chatbot_model.cli.main import main; main()", "serve", "--ensure-model",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=work, stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 900, path: str = "/ready") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see its log in the scratch directory")
        try:
            if httpx.get(f"{base}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


async def soak(base: str, pid: int, duration: float, clients: int, feedback_clients: int) -> dict:
    questions = [f.format(t) for t in TOPICS for f in FORMS]
    lat: list[float] = []
    errors: dict[str, int] = {}
    ids: deque = deque(maxlen=2000)  # the recent answers the /feedback loops rate
    answered: list[str] = []
    ratings = {"ok": 0, "err": 0}
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients + feedback_clients + 2)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        async def chat_loop(n: int) -> None:
            i = n
            while time.monotonic() < end:
                q = f"{questions[i % len(questions)]} ({n}-{i})"
                i += clients
                t = time.perf_counter()
                try:
                    r = await client.post("/chat", json={"question": q})
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t)
                        ids.append(r.json()["trace_id"])
                        answered.append(r.json()["trace_id"])
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        async def feedback_loop() -> None:
            while time.monotonic() < end:
                await asyncio.sleep(0.1)
                if not ids:
                    continue
                try:
                    r = await client.post("/feedback", json={"trace_id": random.choice(ids),
                                                             "rating": random.choice(["up", "down"])})
                    ratings["ok" if r.status_code == 200 else "err"] += 1
                except httpx.HTTPError:
                    ratings["err"] += 1

        async def progress() -> None:
            start, last = time.monotonic(), 0
            while time.monotonic() < end:
                await asyncio.sleep(min(60, max(0.1, end - time.monotonic())))
                done = len(lat)
                print(f"  {time.monotonic() - start:5.0f} s: {done} answers ({(done - last) / 60:.1f}/s last minute), "
                      f"RSS {process_rss_mb(pid):.0f} MB, dropped {dropped(base)}", flush=True)
                last = done

        rss_start = process_rss_mb(pid)
        t0 = time.monotonic()
        await asyncio.gather(*(chat_loop(n) for n in range(clients)), *(feedback_loop() for _ in range(feedback_clients)),
                             progress())
        elapsed = time.monotonic() - t0
    return {"duration_s": round(elapsed, 1), "clients": clients, "answers": len(lat),
            "answers_per_s": round(len(lat) / elapsed, 1),
            "latency_ms": {q: round(pct(lat, v) * 1e3, 1) for q, v in (("p50", .5), ("p95", .95), ("p99", .99))},
            "errors": errors, "ratings": ratings, "rss_mb_start": round(rss_start, 1),
            "rss_mb_end": round(process_rss_mb(pid), 1), "traces_dropped": dropped(base), "trace_ids": list(ids),
            "answered_ids": answered}


async def feedback_burst(base: str, ids: list[str], seconds: float, clients: int = 8) -> dict:
    lat: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
        async def loop(n: int) -> None:
            nonlocal errors
            i = n
            while time.monotonic() < end:
                t = time.perf_counter()
                r = await client.post("/feedback", json={"trace_id": ids[i % len(ids)], "rating": "up"})
                i += clients
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(loop(n) for n in range(clients)))
        elapsed = time.monotonic() - t0
    return {"clients": clients, "ratings": len(lat), "ratings_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1e3, 1) if lat else None,
            "p99_ms": round(pct(lat, .99) * 1e3, 1) if lat else None, "errors": errors}


def count(db: Path, sql: str, params: tuple = ()) -> int | None:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql, params).fetchone()[0]
    except sqlite3.Error:
        return None


def stored_traces(db: Path, trace_ids: list[str]) -> int:
    """How many of `trace_ids` the tracking store (SQLite file `db`) holds."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", [(i,) for i in trace_ids])
        return conn.execute("SELECT count(*) FROM trace_info JOIN wanted ON trace_info.request_id = wanted.id"
                            ).fetchone()[0]


def after_the_load(work: Path, trace_ids: list[str], trace_window_s: float = 15, rating_window_s: float = 60) -> dict:
    """In the tracking server's store: the answers' traces stored within `trace_window_s` of the load's end, and
    the ratings given during the load attached (synced, and as `user_rating` assessments) within
    `rating_window_s`; polled once a second, with the time each first reached everything."""
    tracking, feedback = work / "tracking.db", work / "feedback.db"
    ids = sorted(set(trace_ids))
    rows = count(feedback, "SELECT count(*) FROM feedback") or 0
    out: dict = {"traces_answered": len(ids), "ratings_rows": rows}
    t0 = time.monotonic()
    while True:
        elapsed = time.monotonic() - t0
        stored = stored_traces(tracking, ids)
        synced = count(feedback, "SELECT count(*) FROM feedback WHERE synced_at IS NOT NULL AND id <= ?", (rows,)) or 0
        if elapsed <= trace_window_s:
            out.update(traces_stored_within_15s=stored, traces_share_15s=round(stored / max(len(ids), 1), 4))
        out.update(ratings_attached_within_60s=synced, ratings_share_60s=round(synced / max(rows, 1), 4))
        if stored == len(ids) and "all_traces_stored_after_s" not in out:
            out["all_traces_stored_after_s"] = round(elapsed, 1)
        if synced == rows and "all_ratings_attached_after_s" not in out:
            out["all_ratings_attached_after_s"] = round(elapsed, 1)
        if elapsed > rating_window_s or (stored == len(ids) and synced == rows):
            break
        time.sleep(1)
    out["assessments_in_tracking_store"] = count(
        tracking, "SELECT count(*) FROM assessments WHERE name = 'user_rating' AND valid = 1")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of /chat load (default 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent /chat clients")
    parser.add_argument("--feedback-clients", type=int, default=1, help="/feedback loops during the soak")
    parser.add_argument("--feedback-seconds", type=float, default=20, help="then: 8 clients of /feedback, 0 = skip")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--no-tracing", action="store_true", help="CHATBOT_TRACING=false (the baseline)")
    parser.add_argument("--tracking-server", action="store_true",
                        help="a local `mlflow server` in its own process is the tracking store (traces over OTLP)")
    parser.add_argument("--out", help="results file name under benchmarks/results/ (default soak or "
                                      "soak-tracking-server)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    tracker, tracking_uri = None, ""
    if args.tracking_server:
        tracking_uri = f"http://127.0.0.1:{free_port()}"
        tracker = start_tracking_server(work, int(tracking_uri.rsplit(":", 1)[1]))
        wait_ready(tracking_uri, tracker, path="/health")
        print(f"tracking server on {tracking_uri}", flush=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"soak: server on {base}, scratch {work}", flush=True)
    proc = start_server(work, port, tracing=not args.no_tracing, tracking_uri=tracking_uri)
    result: dict = {}
    try:
        t = time.monotonic()
        wait_ready(base, proc)
        print(f"ready after {time.monotonic() - t:.0f} s (model registered and loaded)", flush=True)
        for q in FORMS:
            httpx.post(f"{base}/chat", json={"question": q.format("MLflow")}, timeout=60)
        result = asyncio.run(soak(base, proc.pid, args.duration, args.clients, args.feedback_clients))
        answered = [i for i in result.pop("answered_ids") if i]
        if tracker is not None and answered:
            result["after_the_load"] = after_the_load(work, answered)
            print(f"after the load: {result['after_the_load']}", flush=True)
        ids = [i for i in result.pop("trace_ids") if i]  # no ids with tracing off: nothing to rate
        if args.feedback_seconds and ids:
            result["feedback_burst"] = asyncio.run(feedback_burst(base, ids, args.feedback_seconds))
    finally:
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
            result["sigterm_exit_s"] = round(time.monotonic() - t, 1)
        except subprocess.TimeoutExpired:
            proc.kill()
            result["sigterm_exit_s"] = "did not exit within 60 s (killed)"
        if tracker is not None:
            os.killpg(tracker.pid, signal.SIGTERM)
            tracker.wait(60)
    store = work / ("tracking.db" if tracker is not None else "mlflow.db")
    result["traces_in_store"] = count(store, "SELECT count(*) FROM trace_info")
    result["ratings_stored"] = count(work / "feedback.db", "SELECT count(*) FROM feedback")
    result["ratings_attached"] = count(work / "feedback.db", "SELECT count(*) FROM feedback WHERE synced_at IS NOT NULL")
    rss = (result.get("rss_mb_start"), result.get("rss_mb_end"))
    print(json.dumps(result, indent=2))
    if all(rss):
        print(f"\nthroughput {result['answers_per_s']} answers/s over {result['duration_s']} s with {args.clients} "
              f"clients; latency p50/p95/p99 {result['latency_ms']}; errors {result['errors'] or 0}; "
              f"RSS {rss[0]:.0f} -> {rss[1]:.0f} MB ({(rss[1] / rss[0] - 1) * 100:+.1f}%); traces dropped "
              f"{result['traces_dropped']}; traces stored {result['traces_in_store']}")
    RESULTS.mkdir(exist_ok=True)
    result["tracing"] = not args.no_tracing
    result["tracking_store"] = "mlflow server (own process, SQLite)" if tracker is not None else "in-process SQLite"
    out = args.out or ("soak-tracking-server" if tracker is not None else "soak")
    (RESULTS / f"{out}.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), **result},
                                                         indent=2))


if __name__ == "__main__":
    main()
