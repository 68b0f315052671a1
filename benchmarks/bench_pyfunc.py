"""Benchmark of the packaged model (not a test). Run: `.venv/bin/python benchmarks/bench_pyfunc.py [--n 1000]`.

Measures, on a throw-away sqlite store under a temp dir:
- log + register time, and the model artifact size (whole model dir, and the `artifacts/` part);
- `mlflow.pyfunc.load_model` time (in this process);
- predict throughput on N questions with the local provider: one batch vs one call per question;
- `mlflow models serve` start to the first correct answer (HTTP 200 with a non-empty answer), and /ping alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

from common import free_port  # noqa: E402

TOPICS = ["MLflow", "the model registry", "FAISS", "the guardrail", "model serving", "the router", "feedback",
          "tracing", "the local provider", "Docker images", "the adapter hint", "promotion to Production"]
FORMS = ["What is {}?", "How do I use {}?", "Explain {} briefly.", "Where is {} configured?", "Why does {} matter?"]


def questions(n: int) -> list[str]:
    base = [f.format(t) for t in TOPICS for f in FORMS]
    return [f"{base[i % len(base)]} (#{i})" for i in range(n)]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())




def serve_time(env: dict, cwd: Path, uri: str) -> tuple[float, float]:
    import httpx

    port = free_port()
    log = open(cwd / "serve.log", "wb")
    start = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
                             "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"],
                            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ping = None
    try:
        while time.perf_counter() - start < 300:
            try:
                if ping is None:
                    if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                        ping = time.perf_counter() - start
                    else:
                        continue
                r = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                               json={"dataframe_records": [{"question": "What is MLflow used for?"}]})
                if r.status_code == 200 and r.json()["predictions"][0]["answer"]:
                    return ping, time.perf_counter() - start
                raise RuntimeError(f"bad answer {r.status_code}: {r.text[:500]}")
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"mlflow models serve did not answer within 300 s; see {cwd / 'serve.log'}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="questions for the throughput runs")
    parser.add_argument("--tracing", action="store_true", help="keep one MLflow trace per question (default off)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-pyfunc-"))
    os.chdir(tmp)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.update(MLFLOW_TRACKING_URI=uri, CHATBOT_INDEX_DIR=str(tmp / "index"),
                      CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp / 'feedback.db'}",
                      CHATBOT_TRACING="true" if args.tracing else "false")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        os.environ.pop(key, None)

    import mlflow

    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register, promote

    rows = []

    def report(name, value):
        rows.append((name, value))
        print(f"{name}: {value}", flush=True)
    t = time.perf_counter()
    version = log_and_register(load_settings(), "llmops-chatbot")
    promote("llmops-chatbot", "Production", version.version, force=True, reason="benchmark fixture")
    report("log + register (index built, input example validated)", f"{time.perf_counter() - t:.1f} s")
    local = Path(mlflow.artifacts.download_artifacts(version.version_uri, dst_path=str(tmp / "model")))
    report("model size: whole model dir", f"{dir_size(local) / 1e6:.2f} MB")
    report("model size: artifacts/ (docs, hint, settings, index)", f"{dir_size(local / 'artifacts') / 1e6:.2f} MB")
    report("model size: code/ (chatbot_model)", f"{dir_size(local / 'code') / 1e6:.2f} MB")

    t = time.perf_counter()
    model = mlflow.pyfunc.load_model("models:/llmops-chatbot@production")
    report("load_model in a warm process", f"{time.perf_counter() - t:.2f} s")

    import pandas as pd

    qs = questions(args.n)
    model.predict(pd.DataFrame({"question": qs[:8]}))  # warm-up
    t = time.perf_counter()
    out = model.predict(pd.DataFrame({"question": qs}))
    batch = time.perf_counter() - t
    assert (out["error"] == "").all() and len(out) == args.n
    report(f"predict, one batch of {args.n}", f"{batch:.2f} s = {args.n / batch:.0f} q/s "
                 f"({(~out['blocked']).sum()} answered, {out['blocked'].sum()} blocked)")
    t = time.perf_counter()
    for q in qs:
        model.predict(pd.DataFrame({"question": [q]}))
    single = time.perf_counter() - t
    report(f"predict, {args.n} calls of one question", f"{single:.2f} s = {args.n / single:.0f} q/s "
                 f"({single / args.n * 1000:.1f} ms per call)")

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_EXPERIMENT_ID", None)  # uvicorn is looked up on PATH by `mlflow models serve`
    ping, first = serve_time(env, tmp, "models:/llmops-chatbot@production")
    report("mlflow models serve: start -> /ping 200", f"{ping:.1f} s")
    report("mlflow models serve: start -> first correct answer", f"{first:.1f} s")

    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':{width}}  value\n{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:{width}}  {value}")
    print(f"\n(tracing {'on' if args.tracing else 'off'}; store and model under {tmp})")


if __name__ == "__main__":
    main()
