"""`llmops-chatbot batch-score` on real local Spark (pyspark + Java): 1,000 questions, a run killed after its
first parts, resumed through `mlflow run . -e batch_score`; the answers equal the pyfunc's `predict` on the
same rows. Two Spark jobs in subprocesses (~1-2 min together on 2 cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.helpers import ROOT, kill_group, require_module, tracking_store, wait_until
from tests.mlflow_state import forget_mlflow

pyspark = require_module("pyspark", "the spark extra: pip install 'llmops-chatbot[spark]'")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded 2-core machine: minutes
NAME = "llmops-chatbot"
URI = f"models:/{NAME}@production"
ROWS, PARTS = 1000, 4
BAD = {3: "", 77: "   \u200b ", 400: None, 901: "x" * 20_000}  # row -> an unusable question


def _questions() -> pd.DataFrame:
    golden = [json.loads(line)["question"] for name in ("retrieval.jsonl", "benign.jsonl", "offtopic.jsonl")
              for line in (ROOT / "artifacts" / "eval" / name).read_text().splitlines() if line.strip()]
    questions = [BAD.get(i, f"{golden[i % len(golden)]} (#{i})") for i in range(ROWS)]
    return pd.DataFrame({"id": [f"q{i:04d}" for i in range(ROWS)], "question": questions})


@pytest.fixture(scope="module")
def project(tmp_path_factory, shipped_index):
    """A store holding a Production model, the 1,000-question input, and the env the subprocesses get."""
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register, promote

    root = tmp_path_factory.mktemp("batch")
    uri = tracking_store(root)
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("CHATBOT_", "MLFLOW_")) or k.endswith(("_API_KEY", "_BASE_URL")))}
    env.update(MLFLOW_TRACKING_URI=uri, CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{root / 'feedback.db'}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "CHATBOT_FEEDBACK_DB_URL"):
            mp.setenv(key, env[key])
        mp.setenv("CHATBOT_INDEX_DIR", str(shipped_index))
        mp.chdir(root)
        version = log_and_register(load_settings())
        promote(NAME, "Production", version.version, force=True, reason="batch-score test")
        forget_mlflow()
    _questions().to_parquet(root / "questions.parquet")
    return {"root": root, "env": env, "input": root / "questions.parquet", "output": root / "answers.parquet"}


def _parts(output: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("part-*.parquet")}


@pytest.fixture(scope="module")
def resumed(project):
    """The CLI killed (SIGKILL to its process group, JVM included) once its first part exists, then resumed by
    `mlflow run . -e batch_score`."""
    output = project["output"]
    cmd = [sys.executable, "-m", "chatbot_model.cli.main", "batch-score", "--model-uri", URI, "--input",
           str(project["input"]), "--output", str(output), "--master", "local[2]", "--partitions", str(PARTS)]
    log = open(project["root"] / "first.log", "w")
    proc = subprocess.Popen(cmd, env=project["env"], cwd=project["root"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_until(lambda: _parts(output) or proc.poll() is not None, "the first part of the output", 900,
                   interval=0.1)
    finally:
        kill_group(proc, first=signal.SIGKILL)
        log.close()
    first = _parts(output)
    assert 1 <= len(first) < PARTS, (project["root"] / "first.log").read_text()[-3000:]

    args = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "batch_score", "--env-manager",
            "local", "-P", f"model_uri={URI}", "-P", f"input={project['input']}", "-P", f"output={output}",
            "-P", "master=local[2]"]
    rerun = subprocess.run(args, env=project["env"], cwd=project["root"], capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    return {"first": first, "rerun": rerun.stdout, "answers": pd.read_parquet(output)}


def test_a_killed_run_resumes_skipping_the_finished_parts(resumed, project):
    first, out = resumed["first"], resumed["rerun"]
    done = f"{len(first)} part" + ("s" if len(first) > 1 else "")
    assert f"{ROWS:,} questions in {PARTS} parts; {done} (" in out and "already done, skipped" in out
    assert f"done: {ROWS:,} rows in {PARTS} parts" in out and f"({done} skipped" in out
    after = _parts(project["output"])
    assert set(after) == {f"part-{p:05d}.parquet" for p in range(PARTS)}
    assert {name: after[name] for name in first} == first, "a finished part was rewritten"
    assert not [p.name for p in project["output"].iterdir() if p.name.startswith("_tmp-")]
    answers = resumed["answers"]
    assert answers["row"].tolist() == list(range(ROWS))  # every row once, in input order
    assert answers["id"].tolist() == _questions()["id"].tolist()


def test_answers_equal_pyfunc_predict_and_bad_rows_carry_errors(resumed, project, monkeypatch):
    answers = resumed["answers"].set_index("row")
    assert list(answers.columns[1:]) == list(__import__("chatbot_model.contract").contract.OUTPUT_COLUMNS)
    for row in BAD:
        assert answers.loc[row, "error"].startswith(f"row {row}: question"), answers.loc[row, "error"]
        assert answers.loc[row, "answer"] == "" and json.loads(answers.loc[row, "sources"]) == []
    assert "empty" in answers.loc[3, "error"] and "got nothing" in answers.loc[400, "error"]
    assert "characters long; the limit is" in answers.loc[901, "error"]

    good = answers.drop(index=list(BAD))
    assert (good["error"] == "").all() and (good["answer"] != "").all()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["env"]["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", project["env"]["CHATBOT_FEEDBACK_DB_URL"])
    monkeypatch.setenv("CHATBOT_TRACING", "false")  # batch-score's default in the workers
    mlflow.set_tracking_uri(project["env"]["MLFLOW_TRACKING_URI"])
    expected = mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"question": good["question"].tolist()}))
    expected.index = good.index
    for column in ("answer", "question", "blocked", "abstained", "route", "provider", "model", "fallback",
                   "trace_id", "error"):
        assert good[column].tolist() == expected[column].tolist(), column
    got, want = [json.loads(s) for s in good["sources"]], [list(map(dict, s)) for s in expected["sources"]]
    # the same documents in the same order; scores to float noise (the embedder's batches differ: Spark's Arrow
    # batches vs one DataFrame), which can move the 4th decimal of a rounded score
    assert [[s["id"] for s in row] for row in got] == [[s["id"] for s in row] for row in want]
    assert max(abs(a["score"] - b["score"]) for g, w in zip(got, want) for a, b in zip(g, w)) <= 1e-3
    assert good["abstained"].any() and (~good["abstained"]).any()  # off-topic and covered questions both ran


@pytest.mark.parametrize("args, message", [
    (["--input", "questions.txt"], "unknown format '.txt'; use a file"),
    (["--input", "missing.parquet"], "missing.parquet does not exist"),
    (["--input", "questions.csv", "--partitions", "0"], "--partitions must be at least 1"),
])
def test_bad_arguments_are_refused_before_spark_starts(tmp_path, args, message):
    from click.testing import CliRunner

    from chatbot_model.cli.main import main

    (tmp_path / "questions.csv").write_text("question\nWhat is MLflow?\n")
    out = CliRunner().invoke(main, ["batch-score", *args, "--output", str(tmp_path / "out.parquet")])
    assert out.exit_code != 0 and message in out.output, out.output
