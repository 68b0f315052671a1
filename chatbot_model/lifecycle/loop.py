"""Closing the loop through the registry: `evaluate` a model version, `adapt` a new one from the feedback.

- `evaluate_model(settings, uri)` loads the model with `mlflow.pyfunc.load_model`, scores it on the golden set
  (`evaluation.evaluate`: these metrics are what the gate compares), logs params, metrics and the per-question
  details (`eval/details.json` table) to a run named `evaluate`, and, when `uri` names a registered version,
  tags it: `eval.status` (passed/failed), `eval.run_id`, `eval.failures`, `eval.<metric>`. With `genai=True`
  the retrieval questions also go through `mlflow.genai.evaluate` with code scorers (hit_at_k,
  reciprocal_rank, fact_coverage, not_blocked; no LLM judge, offline) in the same run: the MLflow UI's
  evaluation view, one trace per question with its assessments. On a SQLite store it runs with one worker
  (MLFLOW_GENAI_EVAL_MAX_WORKERS=1): the default ten exhaust SQLite's connection pool.
- `adapt(settings, name)` reads the ratings given since the Production version's adaptation baseline (its
  `adaptation_baseline_ts` tag, else its registration), applies the adaptation rule
  (`adaptation.AdaptationRule`, base = the Production version's bias and hint) and registers a new version
  with the learned `adapter_hint.txt` and `bias_towards_35`, tagged with the feedback window (`adapt.*`); the
  new version's baseline is the window's end, so when it serves it counts only later ratings (none twice).
  It never promotes. No rating in the window: nothing is registered (unless `always`).
- The evaluated model is loaded with `model_config={"adaptation": "frozen"}`: the gate scores the version
  alone, at its own bias and hint, not "version + today's feedback".
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from chatbot_model.config import Settings, ensure_experiment, told_experiment
from chatbot_model.errors import ConfigError, NotFound
from chatbot_model.lifecycle.evaluation import (THRESHOLDS, TOLERANCE, Evaluation, GoldenSet, evaluate,
                                                first_relevant_rank)
from chatbot_model.lifecycle.evaluation import fact_coverage as coverage
from chatbot_model.lifecycle.model_uri import production_version, resolve
from chatbot_model.lifecycle.registry import log_and_register, name_step_run, use_store
from chatbot_model.lifecycle.workspace import missing_model_hint
from chatbot_model.pipeline.adaptation import AdaptationRule
from chatbot_model.pipeline.adapter import read_hint

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- helpers
@contextmanager
def _run(run_name: str):
    """The run `mlflow run` created (MLFLOW_RUN_ID) or a new one named `run_name`."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        yield active
    elif os.environ.get("MLFLOW_RUN_ID"):
        with mlflow.start_run() as run:
            name_step_run(run_name)  # `mlflow run` named it at random
            yield run
    else:
        with mlflow.start_run(run_name=run_name) as run:
            yield run


# ---------------------------------------------------------------- evaluate
@dataclass
class EvaluationReport:
    model_uri: str
    run_id: str
    evaluation: Evaluation
    name: str | None = None
    version: str | None = None
    genai_metrics: dict[str, float] = field(default_factory=dict)
    genai_error: str | None = None

    @property
    def status(self) -> str:
        return "passed" if self.evaluation.passed else "failed"


def evaluate_model(settings: Settings, model_uri: str, *, golden_dir: str | Path | None = None,
                   genai: bool = False) -> EvaluationReport:
    """Score `model_uri` on the golden set, log the run, tag the registered version."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    use_store(settings)
    client = MlflowClient()
    registered = resolve(client, model_uri)
    golden = GoldenSet.load(golden_dir) if golden_dir else GoldenSet.load()
    started = time.perf_counter()
    try:
        # the version alone: adaptation frozen at its own bias and hint, whatever the live feedback says
        model = mlflow.pyfunc.load_model(model_uri, model_config={"adaptation": "frozen"})
    except MlflowException as exc:
        hint = missing_model_hint(model_uri, mlflow.get_tracking_uri()) if registered is None else ""
        raise NotFound(f"cannot load {model_uri}: {exc.message}; " + (hint or "check the URI and MLFLOW_TRACKING_URI")) from None
    if not told_experiment():  # evaluation runs and their traces apart from the users' chat traces
        mlflow.set_experiment(experiment_id=ensure_experiment(settings.eval_experiment_name))
    with _run("evaluate") as run:

        def predict(questions: list[str]) -> list[dict]:
            return model.predict(pd.DataFrame({"question": questions})).to_dict("records")

        def predict_turns(questions: list[str], histories: list[list[dict]]) -> list[dict]:
            frame = pd.DataFrame({"question": questions, "history": [list(h) for h in histories]})
            return model.predict(frame).to_dict("records")

        evaluation = evaluate(predict, golden, predict_turns=predict_turns)
        mlflow.log_params({"model_uri": model_uri,
                           **({"registered_model": registered[0], "model_version": registered[1]} if registered else {}),
                           "golden_retrieval": len(golden.retrieval), "golden_toxic": len(golden.toxic),
                           "golden_benign": len(golden.benign), "tolerance": TOLERANCE,
                           **{f"threshold.{k}": f"{op} {v}" for k, (op, v) in THRESHOLDS.items()}})
        mlflow.log_metrics(evaluation.metrics)
        mlflow.log_table(pd.DataFrame(evaluation.details), artifact_file="eval/details.json")
        status = "passed" if evaluation.passed else "failed"
        mlflow.set_tags({"kind": "evaluation", "eval.status": status, "eval.model_uri": model_uri})
        report = EvaluationReport(model_uri=model_uri, run_id=run.info.run_id, evaluation=evaluation,
                                  name=registered[0] if registered else None,
                                  version=registered[1] if registered else None)
        if genai:
            try:
                report.genai_metrics = _genai_view(predict, golden)
            except Exception as exc:  # noqa: BLE001 - the view is extra; the gate's metrics are above
                report.genai_error = f"{type(exc).__name__}: {exc}"
                log.warning("mlflow.genai.evaluate failed (the metrics above stand): %s", report.genai_error)
        log.info("evaluated %s in %.1fs: %s", model_uri, time.perf_counter() - started, status)
    if registered:
        tags = {"eval.status": status, "eval.run_id": report.run_id,
                "eval.failures": "; ".join(evaluation.failures)[:5000] or "none",
                **{f"eval.{k}": str(v) for k, v in evaluation.metrics.items()}}
        for key, value in tags.items():
            client.set_model_version_tag(registered[0], registered[1], key, value)
    return report


def _genai_view(predict, golden: GoldenSet) -> dict[str, float]:
    """The retrieval questions through `mlflow.genai.evaluate` (code scorers only) in the active run."""
    import mlflow
    from mlflow.genai.scorers import scorer

    def predict_fn(question: str) -> dict:
        row = predict([question])[0]
        return {"answer": row["answer"], "blocked": bool(row["blocked"]),
                "source_ids": [s["id"] for s in row["sources"]]}

    def rank(outputs, expectations) -> int | None:
        return first_relevant_rank(outputs["source_ids"], expectations["relevant_ids"])

    @scorer
    def hit_at_k(outputs, expectations) -> bool:
        return rank(outputs, expectations) is not None

    @scorer
    def reciprocal_rank(outputs, expectations) -> float:
        r = rank(outputs, expectations)
        return 1.0 / r if r else 0.0

    @scorer
    def fact_coverage(outputs, expectations) -> float:  # the gate's definition: same number in both views
        return coverage(outputs["answer"], expectations["facts"])

    @scorer
    def not_blocked(outputs) -> bool:
        return not outputs["blocked"]

    data = [{"inputs": {"question": r["question"]},
             "expectations": {"relevant_ids": r["relevant_ids"], "facts": r["facts"]}} for r in golden.retrieval]
    sqlite = mlflow.get_tracking_uri().startswith("sqlite")
    previous = os.environ.get("MLFLOW_GENAI_EVAL_MAX_WORKERS")
    if sqlite and previous is None:
        os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = "1"
    try:
        result = mlflow.genai.evaluate(data=data, predict_fn=predict_fn,
                                       scorers=[hit_at_k, reciprocal_rank, fact_coverage, not_blocked])
    finally:
        if sqlite and previous is None:
            os.environ.pop("MLFLOW_GENAI_EVAL_MAX_WORKERS", None)
    return {k: round(float(v), 4) for k, v in (result.metrics or {}).items()}


# ---------------------------------------------------------------- adapt
@dataclass
class AdaptResult:
    name: str
    parent_version: str
    window_start: datetime
    window_end: datetime
    ratings: int  # ratings in the window that count (blocked answers left out)
    up: int
    down: int
    parent_hint: str
    parent_bias: float
    state: object  # adaptation.AdaptationState
    registered: object | None = None  # registry.RegisteredVersion

    @property
    def tags(self) -> dict[str, str]:
        return {"adapt.window_start": self.window_start.isoformat(), "adapt.window_end": self.window_end.isoformat(),
                "adapt.ratings": str(self.ratings), "adapt.down": str(self.down), "adapt.up": str(self.up),
                "adapt.parent_version": self.parent_version,
                "adapt.decayed_up": f"{self.state.decayed_up:.4f}",
                "adapt.decayed_down": f"{self.state.decayed_down:.4f}",
                "adapt.negative_share": f"{self.state.negative_share:.4f}"}


def _parent_hint(client, name: str, version, settings: Settings) -> str:
    """The hint the parent version ships: its prompt version, else its adapter_hint.txt artifact."""
    import mlflow

    uri = (version.tags or {}).get("prompt_uri")
    if uri:
        try:
            return mlflow.genai.load_prompt(uri).template.strip()
        except Exception as exc:  # noqa: BLE001 - fall back to the artifact
            log.warning("could not load %s: %s", uri, exc)
    with tempfile.TemporaryDirectory(prefix="llmops-chatbot-hint-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}/artifacts/adapter_hint.txt", dst_path=tmp)
        return read_hint(path) if path else read_hint(settings.hint_path)


def adapt(settings: Settings, name: str | None = None, *, always: bool = False,
          now: float | None = None) -> AdaptResult:
    """Learn the hint and router bias from the feedback since Production was registered; register a version."""
    import mlflow
    from mlflow import MlflowClient

    from chatbot_model.store.feedback import FeedbackStore  # deferred: loads sqlalchemy

    name = name or settings.registered_model_name
    if not settings.feedback_db_url:
        raise ConfigError("no feedback store: set CHATBOT_FEEDBACK_DB_URL (e.g. sqlite:///.chatbot/feedback.db)")
    use_store(settings)
    client = MlflowClient()
    parent = production_version(client, name)
    if parent is None:
        raise NotFound(f"{name} has no version in Production to adapt from; promote one first "
                       f"(`llmops-chatbot promote_model --name {name} --stage Production`, or "
                       "`llmops-chatbot serve --ensure-model`)")
    now = time.time() if now is None else now
    baseline = (parent.tags or {}).get("adaptation_baseline_ts")  # what the parent counts from, when serving
    window_start = datetime.fromtimestamp(float(baseline) if baseline else parent.creation_timestamp / 1000.0,
                                          timezone.utc)
    window_end = datetime.fromtimestamp(now, timezone.utc)
    parent_tags = dict(parent.tags or {})
    parent_bias = float(parent_tags.get("bias_towards_35", settings.bias_towards_35))
    parent_hint = _parent_hint(client, name, parent, settings)
    rule = AdaptationRule.from_settings(settings, base_bias=parent_bias, default_hint=parent_hint)
    store = FeedbackStore(settings.feedback_db_url, attach=False, settings=settings)
    try:  # the rows and weights a live service computes (adaptation.py): one rule, one implementation
        rows = rule.window(store, now=now, since_ts=window_start.timestamp())
    finally:
        store.dispose()
    state = rule.weigh(rows, now)
    result = AdaptResult(name=name, parent_version=str(parent.version), window_start=window_start,
                         window_end=window_end, ratings=len(rows), up=sum(r == "up" for _, r in rows),
                         down=sum(r != "up" for _, r in rows), parent_hint=parent_hint, parent_bias=parent_bias,
                         state=state)
    if not rows and not always:
        log.info("no feedback since %s: nothing to adapt", window_start.isoformat())
        return result
    with _run("adapt"):
        mlflow.log_params({"parent_version": result.parent_version, "window_start": window_start.isoformat(),
                           "window_end": window_end.isoformat(), "half_life_h": settings.adaptation_half_life_h,
                           "bias_gain": settings.adaptation_bias_gain,
                           "grounded_share": settings.adaptation_grounded_share})
        mlflow.log_metrics({"ratings": result.ratings, "up": result.up, "down": result.down,
                            "decayed_up": state.decayed_up, "decayed_down": state.decayed_down,
                            "negative_share": state.negative_share, "bias_towards_35": state.bias_towards_35})
        mlflow.set_tags({"kind": "adapt", **result.tags})
        # the new version's baseline is the window's end: it has counted every rating before it
        result.registered = log_and_register(settings, name, hint=state.hint, bias=state.bias_towards_35,
                                             baseline_ts=now)
    for key, value in result.tags.items():
        client.set_model_version_tag(name, result.registered.version, key, value)
    return result
