"""`_PyfuncChatbot`: the deployable unit, an MLflow pyfunc model that wraps `LLMService`.

Thin by design: `load_context` builds an `LLMService` from the logged artifacts, `predict` converts the input
and delegates to `LLMService.answer_many` (one batch: one embedding call, one guardrail call per side, one FAISS
search). Logged artifacts (keys of `ARTIFACTS`):

- `docs`      docs.json, the knowledge base
- `hint`      adapter_hint.txt, the system-prompt hint
- `settings`  model_settings.json: router (bias_towards_35, model names), retrieval and guardrail settings
- `embedder_onnx` (optional) the embedder's ONNX export: a served model needs neither torch nor an export
- `index`     the prebuilt FAISS index, chunk store, sentence vectors and manifest (with its fingerprint), so
              loading does not re-embed the corpus; when it is missing or its fingerprint does not match the
              documents, the index is rebuilt from docs.json into a temporary directory (never into the model).

Settings inside the model: the logged values of `MODEL_FIELDS` always win (the index was built with them);
`DEFAULT_FIELDS` (guardrail backend, top_k, ...) are the logged values unless `CHATBOT_<FIELD>` is set when
serving; runtime knobs (API keys, base URLs, timeouts, tracking store) come from the environment as usual.
No key and no network are needed to load or answer: the `local` provider answers and the guardrail backend
pinned at log time (`embedded` unless toxic-bert was available locally) loads offline.

Input (`predict`): a DataFrame with a `question` column, a dict `{"question": str | list[str]}` or a list of
such dicts (a cell holding a list counts as that many questions). The signature declares the required string
column `question`, so MLflow's schema enforcement (in `PyFuncModel.predict` and `mlflow models serve`) rejects
a bare list of strings before it reaches this class with INVALID_PARAMETER_VALUE "Model is missing inputs
['question']"; `_PyfuncChatbot.predict` itself (e.g. `model.unwrap_python_model().predict(None, [...])`) also
takes a list of strings or one string. Output: a DataFrame, one row per question, the columns of
`contract.AnswerRow`: answer, question, blocked, abstained, route, provider, model, fallback ("" when none), sources
(list of {id, title, source, score}), latency_ms, trace_id ("" when tracing is off or failed), error ("" when
ok). `answer` comes first, so `spark_udf(..., result_type="string")` yields the answers.

Conversations: an optional `history` column (or key, per record) holds each row's earlier turns, a list of
`{"role": "user"|"assistant", "content": str}`, oldest first; that row's follow-up is resolved with it
(`standalone_question` says what retrieval searched) and the providers get it as messages. A row without it
(None, or no column) is answered exactly as without the column. A history with an unknown role, an empty or
missing content, or over the budget (CHATBOT_HISTORY_MAX_MESSAGES / _CHARS) is that row's `error`; a value of the
wrong type (not a list of objects, an extra key) is refused by MLflow's schema enforcement before `predict`.

Bad input:
- the wrong shape (no `question` column/key, not a string/list/dict/DataFrame, no rows) or a request whose
  rows are ALL invalid raises `MlflowException(INVALID_PARAMETER_VALUE)` naming the column `question` and what
  is expected (`mlflow models serve` turns it into HTTP 400 with the message);
- in a batch with some valid rows, the valid rows are answered and each invalid row (empty, not a string,
  too long) comes back in place with `error` set, `answer` "", `blocked` False, `route`/`provider`/`model` "".
This class reads the input's shape; the service (`answer_many(rows=True)`) checks each row's values.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

from chatbot_model.config import ensure_experiment, load_settings, told_experiment
from chatbot_model.contract import OUTPUT_COLUMNS, AnswerRow, SourceRow
from chatbot_model.errors import ChatbotError, InvalidInput
from chatbot_model.pipeline.service import LLMService
from chatbot_model.retrieval.chunk_store import STORE_FILES
from chatbot_model.retrieval.onnx_export import register_onnx_dir
from chatbot_model.retrieval.rag import RAGPipeline, fingerprint, iter_documents

log = logging.getLogger(__name__)

INPUT_COLUMN = "question"
HISTORY_COLUMN = "history"  # optional: the earlier turns of each row's conversation
ARTIFACTS = {"docs": "docs.json", "hint": "adapter_hint.txt", "settings": "model_settings.json", "index": "index"}
ONNX_ARTIFACT = "embedder_onnx"  # optional: the embedder's ONNX export, so serving needs no torch and no export
# fixed by the logged model (the index and the router were built with them)
MODEL_FIELDS = ("embedding_model", "chunk_size", "chunk_overlap", "index_type", "lexical_weight", "bias_towards_35", "gpt_model",
                "claude_model")
# the logged value is the default; CHATBOT_<FIELD> set when serving overrides it
DEFAULT_FIELDS = ("guardrail_backend", "toxic_bert_model", "guardrail_threshold", "top_k", "max_question_chars",
                  "max_answer_tokens", "abstain_below", "abstain_model")
# what `load_model(uri, model_config=...)` (or MLFLOW_PYFUNC_INFERENCE_CONFIG) may set: see service_from_artifacts
MODEL_CONFIG = {"model_version": "", "adaptation": "live"}
BASELINE_KEY = "adaptation_baseline_ts"  # model_settings.json: ratings before it are already in this version
EXPECTED = ('a DataFrame with a string column "question", {"question": str | list[str]}, '
            'a list of {"question": str} records or a list of strings')
_MLFLOW_TYPES = {str: "string", bool: "boolean", float: "double"}


def _output_schema() -> Schema:
    """The output columns of `AnswerRow`, in its order, as MLflow column specs."""
    source = Object([Property(name, _MLFLOW_TYPES[f.annotation]) for name, f in SourceRow.model_fields.items()])
    return Schema([ColSpec(Array(source) if name == "sources" else _MLFLOW_TYPES[f.annotation], name)
                   for name, f in AnswerRow.model_fields.items()])


# role and content are optional to MLflow's schema enforcement so that a message missing one reaches the model and
# comes back as that row's `error` (a value of the wrong type, or an extra key, is refused by MLflow with 400)
_MESSAGE = Object([Property("role", "string", required=False), Property("content", "string", required=False)])
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN, required=True),
                                          ColSpec(Array(_MESSAGE), HISTORY_COLUMN, required=False)]),
                           outputs=_output_schema())
INPUT_EXAMPLE = pd.DataFrame({
    INPUT_COLUMN: ["How do I roll back a model version?", "And how do I undo that?"],
    HISTORY_COLUMN: [[], [{"role": "user", "content": "How do I roll back a model version?"},
                          {"role": "assistant", "content": "Promote the previous version to Production again [1]."}]],
})


def invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


# ---------------------------------------------------------------- settings and service from the artifacts
def model_settings(settings, guardrail_backend: str | None = None, baseline_ts: float | None = None) -> dict[str, Any]:
    """What model_settings.json holds: `MODEL_FIELDS` and `DEFAULT_FIELDS` of `settings`, and the adaptation
    baseline (default: now)."""

    out = {name: getattr(settings, name) for name in MODEL_FIELDS + DEFAULT_FIELDS}
    out[BASELINE_KEY] = time.time() if baseline_ts is None else float(baseline_ts)
    if guardrail_backend:
        out["guardrail_backend"] = guardrail_backend
    return out


def settings_from_artifacts(artifacts: dict[str, str]):
    """Settings for the logged model: logged values, env overrides for `DEFAULT_FIELDS` and runtime knobs."""

    logged = json.loads(Path(artifacts["settings"]).read_text(encoding="utf-8"))
    overrides = {k: logged[k] for k in MODEL_FIELDS if k in logged}
    overrides.update({k: logged[k] for k in DEFAULT_FIELDS if k in logged and f"CHATBOT_{k.upper()}" not in os.environ})
    return load_settings(**overrides, docs_path=Path(artifacts["docs"]), hint_path=Path(artifacts["hint"]),
                         index_dir=Path(artifacts["index"]))


def _index_matches(index_dir: Path, expected: str) -> bool:
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False

    files = ("index.faiss", *STORE_FILES, "lexical/doc_starts.npy")
    return manifest.get("fingerprint") == expected and all((index_dir / f).is_file() for f in files)


def service_from_artifacts(artifacts: dict[str, str], model_config: dict | None = None):
    """An `LLMService` over the logged docs, hint, settings and index (rebuilt in a temp dir when stale).

    Adaptation starts from the version's own bias and hint and counts only the ratings given after its
    baseline (`adaptation_baseline_ts` in model_settings.json: what `adapt` folded in, or the time it was
    logged), so a version registered by `adapt` never counts a rating twice. `model_config` (given to
    `mlflow.pyfunc.load_model(uri, model_config=...)`): `model_version` attributes this model's ratings to
    that registered version; `adaptation: "frozen"` serves the version alone, without the feedback store
    (the evaluation gate scores it so)."""

    config = dict(model_config or {})
    settings = settings_from_artifacts(artifacts)
    baseline = json.loads(Path(artifacts["settings"]).read_text(encoding="utf-8")).get(BASELINE_KEY)
    if config.get("adaptation") == "frozen":
        settings = settings.model_copy(update={"feedback_db_url": ""})
    if ONNX_ARTIFACT in artifacts:
        register_onnx_dir(artifacts[ONNX_ARTIFACT])
    expected = fingerprint(iter_documents(settings.docs_path), RAGPipeline(settings).embedder_name, settings)
    if not _index_matches(Path(settings.index_dir), expected):
        rebuilt = Path(tempfile.mkdtemp(prefix="llmops-chatbot-index-")) / "index"
        log.warning("the logged index is missing or stale (want fingerprint %s): rebuilding it in %s", expected, rebuilt)
        settings = settings.model_copy(update={"index_dir": rebuilt})
    if settings.tracing:
        _use_experiment(settings.experiment_name)
    version = config.get("model_version")
    return LLMService.from_settings(settings, docs_path=settings.docs_path,
                                    model_version=str(version) if version not in (None, "") else None,
                                    adaptation_since_ts=None if baseline is None else float(baseline))


def _use_experiment(name: str) -> None:
    """Traces of a served model go to the `llmops-chatbot` experiment unless the process chose one already."""
    if told_experiment():
        return
    try:
        mlflow.set_experiment(experiment_id=ensure_experiment(name))
    except Exception as exc:  # tracing is best effort: answers must not depend on the store
        log.warning("traces will go to the default experiment (%s)", exc)


# ---------------------------------------------------------------- input and output
def _spread(value) -> list:
    """A cell holding a list of questions counts as that many questions."""
    return list(value) if isinstance(value, (list, tuple, np.ndarray, pd.Series)) else [value]


def to_inputs(model_input) -> tuple[list, list]:
    """(raw questions, raw histories), one per question, whatever shape the caller used; the wrong shape
    raises. A history (the `history` column or key) belongs to its row: a row holding several questions gives
    each the same history; a row without one has None (answered exactly as without the column)."""
    data = model_input
    values, histories = [], []

    def add(question, history) -> None:
        spread = _spread(question)
        values.extend(spread)
        histories.extend([history] * len(spread))

    if isinstance(data, pd.DataFrame):
        if INPUT_COLUMN not in data.columns:
            raise invalid(f"missing column {INPUT_COLUMN!r} (got columns {[str(c) for c in data.columns]}); "
                          f"expected {EXPECTED}")
        column = data[HISTORY_COLUMN].tolist() if HISTORY_COLUMN in data.columns else [None] * len(data)
        for value, history in zip(data[INPUT_COLUMN].tolist(), column):
            add(value, history)
    elif isinstance(data, dict):
        if INPUT_COLUMN not in data:
            raise invalid(f"missing key {INPUT_COLUMN!r} (got keys {sorted(map(str, data))}); expected {EXPECTED}")
        add(data[INPUT_COLUMN], data.get(HISTORY_COLUMN))
    elif isinstance(data, str):
        add(data, None)
    elif isinstance(data, (list, tuple, np.ndarray, pd.Series)):
        for i, item in enumerate(list(data)):
            if isinstance(item, dict):
                if INPUT_COLUMN not in item:
                    raise invalid(f"record #{i} has no key {INPUT_COLUMN!r}; expected {EXPECTED}")
                values.append(item[INPUT_COLUMN])
                histories.append(item.get(HISTORY_COLUMN))
            else:
                values.append(item)
                histories.append(None)
    else:
        raise invalid(f"column {INPUT_COLUMN!r}: cannot read questions from a {type(data).__name__}; expected {EXPECTED}")
    if not values:
        raise invalid(f"column {INPUT_COLUMN!r} has no rows; expected at least one question")
    return values, histories


def to_questions(model_input) -> list:
    """The raw values of the `question` column, whatever shape the caller used; the wrong shape raises."""
    return to_inputs(model_input)[0]


def answer_frame(service, values: list, histories: list | None = None) -> pd.DataFrame:
    """The rows answered as one batch; the service validates each row, and an invalid one (a bad question or
    history) comes back with `error` (all invalid: raise)."""
    try:
        results = service.answer_many(values, histories=histories, rows=True)
    except InvalidInput as exc:
        raise invalid(f"column {INPUT_COLUMN!r}: {exc}") from None
    except ChatbotError as exc:
        raise MlflowException(f"{type(exc).__name__}: {exc}", error_code=INTERNAL_ERROR) from None
    if all(r.error for r in results):
        problems = "; ".join(r.error for r in results[:5]) + ("; ..." if len(results) > 5 else "")
        raise invalid(f"no valid question: {problems}. Expected non-empty text of at most "
                      f"{service.settings.max_question_chars} characters in column {INPUT_COLUMN!r}")
    return pd.DataFrame([r.to_row() for r in results], columns=list(OUTPUT_COLUMNS))


# ---------------------------------------------------------------- the model
class _PyfuncChatbot(PythonModel):
    """The chatbot as an MLflow pyfunc model (logged from code: see `chatbot_model/lifecycle/model_code.py`)."""

    def __init__(self, service=None):
        self.service = service  # injectable for tests; built by load_context otherwise

    def load_context(self, context) -> None:
        if self.service is None:
            self.service = service_from_artifacts(context.artifacts, getattr(context, "model_config", None))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return answer_frame(self.service, *to_inputs(model_input))

    def predict_stream(self, context, model_input, params=None) -> Iterator[dict]:
        """One question answered as a stream of event dicts (`chatbot_model.pipeline.streaming`): `{"event": "sources",
        "sources": [...]}`, `{"event": "delta", "text": ...}` pieces (joined: the answer), `{"event": "replace",
        "text": <safe reply>, "blocked_by": "output"}` when the output guardrail stops it, and last `{"event":
        "final", <the AnswerRow columns>}`. Input: one question in any shape `predict` takes (a one-row
        DataFrame, `{"question": str}`, a string), with an optional `history` (a list of {role, content}).
        Closing the iterator early cancels the upstream call. MLflow's scoring server does not stream pyfunc
        models; the FastAPI wrapper's `/chat` with `"stream": true` does."""
        values, histories = to_inputs(model_input)
        if len(values) != 1:
            raise invalid(f"predict_stream answers one question at a time; got {len(values)} in column "
                          f"{INPUT_COLUMN!r} (use predict for a batch)")
        events = self.service.stream(values[0], histories[0])  # validated by the service, at the first event
        try:
            for event in events:
                yield event.to_dict()
        except InvalidInput as exc:
            raise invalid(str(exc)) from None
        except ChatbotError as exc:
            raise MlflowException(f"{type(exc).__name__}: {exc}", error_code=INTERNAL_ERROR) from None
        finally:
            events.close()

