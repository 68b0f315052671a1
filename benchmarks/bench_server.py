"""Benchmark of the serving path (not a test): /chat p50/p95 latency and requests/s at concurrency 1, 8, 32
with the local provider, in-process and through the remote backend (`mlflow models serve`), plus the RSS of
each server process.

    .venv/bin/python benchmarks/bench_server.py [--requests 40] [--workdir DIR] [--no-remote] [--slow-provider 0.5]

`--slow-provider S`: the wrapper's OpenAI/Anthropic keys point at the tests' fake server answering after S
seconds, so the p50 at concurrency 32 shows whether requests overlap (about S) or queue (up to 32 x S).

Everything runs on 127.0.0.1 in a scratch directory: its own MLflow store (a model is registered and promoted
there first by `llmops-chatbot serve --ensure-model`), index and feedback DB. Questions vary so caches do
not flatter the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import free_port, process_rss_mb

BIN = Path(sys.executable).parent
QUESTIONS = ["How do I promote a registered MLflow model version to Production?",
             "What is an MLflow trace?", "How do I roll back to the previous model version?",
             "How does the router choose between GPT and Claude?", "How is feedback recorded?",
             "What does the guardrail block?", "How do I serve a model with mlflow models serve?",
             "What is retrieval-augmented generation?"]






def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout}s")


async def run_level(url: str, concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    errors = 0
    queue = list(range(total))

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            nonlocal errors
            while queue:
                i = queue.pop()
                t0 = time.perf_counter()
                r = await client.post(f"{url}/chat", json={"question": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"})
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    return {"concurrency": concurrency, "requests": total, "errors": errors, "p50_ms": statistics.median(latencies),
            "p95_ms": q[18], "rps": total / wall}


def bench(name: str, url: str, pid: int, requests: int) -> list[dict]:
    asyncio.run(run_level(url, 2, 6))  # warm-up
    rows = []
    for c in (1, 8, 32):
        row = asyncio.run(run_level(url, c, max(requests, c * 3)))
        row.update(backend=name, rss_mb=process_rss_mb(pid))
        rows.append(row)
        print(f"{name:10s} c={c:<3d} n={row['requests']:<4d} p50={row['p50_ms']:7.1f} ms  p95={row['p95_ms']:7.1f} ms  "
              f"{row['rps']:6.1f} req/s  errors={row['errors']}  rss={row['rss_mb']:.0f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per concurrency level (min 3x level)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-remote", action="store_true")
    parser.add_argument("--slow-provider", type=float, default=0.0, metavar="S",
                        help="answer through a fake OpenAI/Anthropic server that waits S seconds per call")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-server-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_") and not k.endswith("_API_KEY")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", CHATBOT_INDEX_DIR=str(work / "index"),
               CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{work / 'feedback.db'}", CHATBOT_GUARDRAIL_BACKEND="embedded",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    procs = []
    fake = None
    if args.slow_provider:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.fake_llm_server import FakeLLMServer

        # register, evaluate and promote with the local answerer first: the fake's answers would fail the gate
        for cmd in (["register-model"], ["evaluate", "--model-uri", "models:/llmops-chatbot/1", "--genai", "false"],
                    ["promote-model", "--stage", "Production", "--version", "1"]):
            subprocess.run([str(BIN / "llmops-chatbot"), *cmd], env=env, check=True, stdout=subprocess.DEVNULL)
        fake = FakeLLMServer()
        fake.delay = args.slow_provider
        env = dict(env)
        env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.openai_base_url, ANTHROPIC_API_KEY="sk-bench",
                   ANTHROPIC_BASE_URL=fake.anthropic_base_url)
        print(f"provider: fake OpenAI/Anthropic server answering after {args.slow_provider:g} s")
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        wrapper = start([str(BIN / "llmops-chatbot"), "serve", "--ensure-model", "--port", str(port),
                         "--log-level", "warning"], env, work / "wrapper.log")
        procs.append(wrapper)
        print(f"in-process wrapper ready after {wait_for(url + '/ready', wrapper):.1f}s (includes registering)")
        print(f"idle RSS in-process wrapper: {process_rss_mb(wrapper.pid):.0f} MB")
        bench("in-process", url, wrapper.pid, args.requests)
        if not args.no_remote:
            sport = free_port()
            scoring = start([str(BIN / "mlflow"), "models", "serve", "-m", "models:/llmops-chatbot@production",
                             "--env-manager", "local", "-p", str(sport), "--host", "127.0.0.1"], env, work / "scoring.log")
            procs.append(scoring)
            print(f"mlflow models serve ready after {wait_for(f'http://127.0.0.1:{sport}/ping', scoring):.1f}s")
            rport = free_port()
            remote = start([str(BIN / "llmops-chatbot"), "serve", "--backend", "remote", "--scoring-url",
                            f"http://127.0.0.1:{sport}", "--port", str(rport), "--log-level", "warning"],
                           env, work / "remote.log")
            procs.append(remote)
            wait_for(f"http://127.0.0.1:{rport}/ready", remote)
            print(f"idle RSS remote wrapper: {process_rss_mb(remote.pid):.0f} MB, scoring server: {process_rss_mb(scoring.pid):.0f} MB")
            bench("remote", f"http://127.0.0.1:{rport}", remote.pid, args.requests)
            print(f"RSS after load: remote wrapper {process_rss_mb(remote.pid):.0f} MB, scoring server "
                  f"{process_rss_mb(scoring.pid):.0f} MB")
    finally:
        if fake is not None:
            fake.close()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
