"""`llmops-chatbot evaluate` and `adapt` (also the MLproject entry points; wired in cli/main.py).

Under `mlflow run`, MLFLOW_RUN_ID names the run MLflow created: both commands log into it.
"""

from __future__ import annotations

import click

# `--genai` takes an optional value (`--genai false` skips the view)
_BOOL = dict(type=click.BOOL, is_flag=False, flag_value=True)


@click.command("evaluate")
@click.option("--model-uri", default=None,
              help="Model to evaluate: models:/NAME/N, models:/NAME@alias, models:/NAME/Stage, runs:/... "
                   "(default: CHATBOT_MODEL_URI).")
@click.option("--golden-dir", default=None, help="Golden set folder (default: artifacts/eval).")
@click.option("--genai", default=True, show_default=True, **_BOOL,
              help="Also run the retrieval questions through mlflow.genai.evaluate (the UI's evaluation view, "
                   "a trace per question with its scores; ~20 s more). `--genai false` skips it.")
def evaluate(model_uri: str | None, golden_dir: str | None, genai: bool) -> None:
    """Score a model on the golden set; log a run `evaluate`; tag the registered version (eval.status, eval.*).

    Exits 1 when the evaluation failed (a metric below its threshold)."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.lifecycle.evaluation import THRESHOLDS  # deferred: loads pydantic
    from chatbot_model.lifecycle.loop import evaluate_model  # deferred: loads numpy, pydantic

    settings = load_settings()
    uri = model_uri or settings.model_uri
    report = evaluate_model(settings, uri, golden_dir=golden_dir or None, genai=genai)
    click.echo(f"evaluated {uri}" + (f" ({report.name} version {report.version})" if report.version else "")
               + f" in run {report.run_id}")
    for metric, value in report.evaluation.metrics.items():
        limit = THRESHOLDS.get(metric)
        click.echo(f"  {metric:18s} {value:>10}" + (f"   (needs {limit[0]} {limit[1]})" if limit else ""))
    if report.genai_metrics:
        click.echo("  mlflow.genai.evaluate (retrieval questions): "
                   + ", ".join(f"{k}={v}" for k, v in sorted(report.genai_metrics.items())))
    elif report.genai_error:
        click.echo(f"  mlflow.genai.evaluate failed (the metrics above stand): {report.genai_error}")
    if report.version:
        click.echo(f"  tagged {report.name} version {report.version}: eval.status={report.status}, "
                   f"eval.run_id={report.run_id}")
    if report.evaluation.passed:
        click.echo("PASSED")
        if report.version and _serving(report.name) == report.version:
            click.echo(f"{report.name} version {report.version} already serves as Production: nothing to promote")
        elif report.version:
            click.echo(f"next: llmops-chatbot promote-model --name {report.name} --stage Production "
                       f"--version {report.version}")
        return
    click.echo("FAILED: " + "; ".join(report.evaluation.failures))
    raise SystemExit(1)


def _serving(name: str) -> str | None:
    """The version in Production (alias, else stage) on the store `evaluate` used."""
    from mlflow import MlflowClient

    from chatbot_model.lifecycle.model_uri import production_version  # deferred: --help stays fast

    found = production_version(MlflowClient(), name)
    return str(found.version) if found is not None else None


@click.command("adapt")
@click.option("--name", default=None, help="Registered model name (default: CHATBOT_REGISTERED_MODEL_NAME, llmops-chatbot).")
@click.option("--always", is_flag=True,
              help="Register a version even when no feedback arrived since the Production version.")
def adapt(name: str | None, always: bool) -> None:
    """Register a new version with the hint and router bias learned from the feedback since Production.

    It does not promote: evaluate the new version, then promote-model."""
    from chatbot_model.config import load_settings  # deferred: loads pydantic
    from chatbot_model.lifecycle.loop import adapt as run_adapt  # deferred: loads numpy, pydantic

    settings = load_settings()
    result = run_adapt(settings, name or None, always=always)
    state = result.state
    click.echo(f"feedback since {result.name} version {result.parent_version} (Production) was registered: "
               f"{result.window_start:%Y-%m-%d %H:%M:%S} .. {result.window_end:%Y-%m-%d %H:%M:%S} UTC")
    click.echo(f"  ratings {result.ratings} (up {result.up}, down {result.down}); decayed up {state.decayed_up:.2f}, "
               f"down {state.decayed_down:.2f}, negative share {state.negative_share:.2f}")
    click.echo(f"  bias_towards_35 {result.parent_bias:.2f} -> {state.bias_towards_35:.2f}")
    click.echo(f"  hint {result.parent_hint!r} -> {state.hint!r}")
    if result.registered is None:
        click.echo(f"no feedback since version {result.parent_version} was registered: nothing to learn, no version "
                   "registered (--always registers one anyway)")
        return
    reg = result.registered
    click.echo(f"registered {reg.name} version {reg.version} ({reg.version_uri}), prompt "
               f"{reg.tags.get('prompt_uri', '-')}; not promoted")
    click.echo(f"next: llmops-chatbot evaluate --model-uri {reg.version_uri}")
    click.echo(f"then: llmops-chatbot promote-model --name {reg.name} --stage Production --version {reg.version}")
