"""Benchmark: `llmops-chatbot batch-score` on local Spark (`local[2]`) against one-process pyfunc `predict`.

The same registered model (logged into a temporary store) answers the same questions both ways, tracing off:
`mlflow.pyfunc.load_model(...).predict(DataFrame)` in this process (warm), and `batch-score` in a subprocess
(JVM start, model shipped to the Python workers and loaded there, Parquet in and out). Reported: rows/s of the
scoring phase as batch-score prints it, and the wall time of the whole command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_batch import thousand
from common import DOCS, main

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> dict:
    import mlflow
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBOT_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", CHATBOT_FEEDBACK_DB_URL="",
               CHATBOT_TRACING="false", CHATBOT_INDEX_DIR=str(tmp / "index"), CHATBOT_DOCS_PATH=str(DOCS),
               HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    os.environ.update(env)
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register

    version = log_and_register(load_settings())
    n = 2000 if quick else 10_000
    base = thousand()
    questions = [f"{base[i % len(base)]} #{i}" for i in range(n)]
    pd.DataFrame({"question": questions}).to_parquet(tmp / "questions.parquet")

    model = mlflow.pyfunc.load_model(version.version_uri)
    model.predict(pd.DataFrame({"question": questions[:50]}))  # warm up
    t = time.perf_counter()
    assert len(model.predict(pd.DataFrame({"question": questions}))) == n
    predict_s = time.perf_counter() - t

    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "chatbot_model.cli.main", "batch-score", "--model-uri",
                           version.version_uri, "--input", str(tmp / "questions.parquet"), "--output",
                           str(tmp / "answers.parquet"), "--master", "local[2]", "--partitions", "1"],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=3600)
    wall_s = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    rate = float(re.search(r"scored now at ([\d.]+) rows/s", proc.stdout)[1])
    answers = pd.read_parquet(tmp / "answers.parquet")
    assert len(answers) == n and (answers["error"] == "").all()
    predict_rate = n / predict_s
    return {"rows": n, "predict_rows_per_s": round(predict_rate, 1), "spark_local2_rows_per_s": round(rate, 1),
            "spark_wall_s": round(wall_s, 1), "spark_wall_rows_per_s": round(n / wall_s, 1),
            "ratio spark/predict": round(rate / predict_rate, 2)}


if __name__ == "__main__":
    main("spark", run)
