"""Benchmark 5: cold start of `mlflow models serve`, from the command to the first correct answer.

Logs and registers the model with the shipped corpus (prebuilt index inside the model: no re-embedding at load)
into a sqlite store in a temporary directory, then starts `mlflow models serve --env-manager local` several times
and polls `/invocations` until an answer cites the expected document. Also times, in a fresh process,
`mlflow.pyfunc.load_model` and the first `predict` (the part of the cold start that is ours). The model ships
the embedder's ONNX export (artifact `embedder_onnx`); the row "first start, empty ONNX cache" checks that a fresh
machine with nothing cached starts as fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DOCS, free_port, main, stats_ms

NAME = "bench-chatbot"
QUESTION = "At what score does the toxicity filter block a message?"
EXPECTED_DOC = "guardrail-overview"

LOAD_SNIPPET = """
import sys, time
t0 = time.perf_counter()
import mlflow
t1 = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
t2 = time.perf_counter()
out = model.predict({"question": [sys.argv[2]]})
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, out["sources"][0][0]["id"], "torch" in sys.modules)
"""




def register(tmp: Path) -> tuple[str, dict]:
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register

    settings = load_settings(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", index_dir=tmp / "index", docs_path=DOCS,
                             feedback_db_url="")
    version = log_and_register(settings, NAME)
    return f"models:/{NAME}/{version.version}", settings


def serve_once(uri: str, env: dict, cwd: Path, timeout: float = 120) -> float:
    import httpx

    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
                             "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.perf_counter() - started < timeout:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=30,
                               json={"dataframe_records": [{"question": QUESTION}]})
                if r.status_code == 200:
                    row = r.json()["predictions"][0]
                    if row["answer"] and row["sources"] and row["sources"][0]["id"] == EXPECTED_DOC:
                        return time.perf_counter() - started
                    raise RuntimeError(f"wrong answer: {row}")
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("mlflow models serve gave no answer")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def run(quick: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
           "CHATBOT_FEEDBACK_DB_URL": "", "CHATBOT_TRACING": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # uvicorn of the venv
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "CHATBOT_FEEDBACK_DB_URL")})
    uri, _ = register(tmp)
    runs = 2 if quick else 3
    serve = [serve_once(uri, env, tmp) for _ in range(runs)]
    loads = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, uri, QUESTION], cwd=tmp, env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        loads.append({"import_mlflow_s": round(float(out[0]), 2), "load_model_s": round(float(out[1]), 2),
                      "first_predict_s": round(float(out[2]), 2), "top1": out[3], "torch_imported": out[4] == "True"})
    result = {"model_uri": uri, "serve_to_first_correct_answer_ms": stats_ms(serve) | {"runs": [round(s, 2) for s in serve]},
              "in_process_load": loads, "goal": "<= 10 s"}
    if not quick:  # a fresh container: nothing cached, the model's own ONNX export (artifact embedder_onnx) is used
        empty = {**env, "CHATBOT_EMBEDDING_CACHE_DIR": str(tmp / "empty-cache")}
        result["first start, empty ONNX cache s"] = round(serve_once(uri, empty, tmp, 300), 2)
    return result


if __name__ == "__main__":
    main("coldstart", run)
