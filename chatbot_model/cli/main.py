"""`llmops-chatbot`: the click command group. Heavy imports live inside the commands (--help stays fast)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from chatbot_model.cli.batch import batch_score_command
from chatbot_model.cli.conversations import conversations
from chatbot_model.cli.db import db
from chatbot_model.cli.doctor import doctor
from chatbot_model.cli.export import export_model_command
from chatbot_model.cli.feedback import feedback, sync_feedback
from chatbot_model.cli.lifecycle import adapt, evaluate
from chatbot_model.cli.registry import promote_model, register_model, registry_access
from chatbot_model.cli.serve import serve
from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.contract import validate_question
from chatbot_model.errors import ChatbotError
from chatbot_model.retrieval.rag import RAGPipeline


class _Group(click.Group):
    """Accepts `register_model` and `register-model` alike (help shows the dashed name); turns domain errors
    into one clean line (no traceback)."""

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, cmd_name) or super().get_command(ctx, cmd_name.replace("_", "-"))

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest

    def invoke(self, ctx):
        failed = True
        try:
            result = super().invoke(ctx)
            failed = False
            return result
        except ChatbotError as exc:
            raise click.ClickException(str(exc)) from None
        except SystemExit as exc:
            failed = exc.code not in (None, 0)
            raise
        finally:
            adopted = ctx.meta.get("adopted_run")
            if adopted:
                from chatbot_model.lifecycle.workspace import finish_adopted_run  # deferred: loads mlflow

                finish_adopted_run(adopted, failed, os.environ["MLFLOW_TRACKING_URI"])


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log INFO messages (ids, routes, timings).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """llmops-chatbot: a retrieval-augmented chatbot with guardrails, routing and an MLflow lifecycle."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if os.environ.get("MLFLOW_RUN_ID") and ctx.invoked_subcommand and "--help" not in sys.argv:
        # `mlflow run` put its run in "Default": the step runs in the project's experiment instead
        from chatbot_model.lifecycle.workspace import adopt_project_run  # deferred: loads mlflow

        ctx.meta["adopted_run"] = adopt_project_run(ctx.invoked_subcommand, _settings())
        if ctx.meta["adopted_run"]:
            click.echo(f"mlflow run: this step logs to run {ctx.meta['adopted_run']} in experiment "
                       f"{os.environ['MLFLOW_EXPERIMENT_ID']} (the project's; --experiment-name chooses another)",
                       err=True)


def _settings(**overrides):
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


@main.command("config")
def config_cmd() -> None:
    """Print the effective settings (secrets masked)."""
    for name, value in _settings().masked().items():
        click.echo(f"{name:28s} {value}")


@main.command("build-index")
@click.argument("path", required=False, type=click.Path(path_type=str))
@click.option("--index-dir", help="Where to write the index (default: CHATBOT_INDEX_DIR).")
def build_index(path: str | None, index_dir: str | None) -> None:
    """Index PATH (a docs .json/.jsonl/.md/.txt file or a folder of them; default: the shipped knowledge base)."""

    settings = _settings(index_dir=index_dir)
    rag = RAGPipeline(settings).load_or_build(path, progress=True)
    info = rag.info()
    click.echo(f"index ready: {info['documents']} documents, {info['chunks']} chunks, {info['index_type']}, "
               f"fingerprint {info['fingerprint']} -> {info['index_dir']}")
    if path:
        click.echo(f"to chat over it: CHATBOT_DOCS_PATH={path} llmops-chatbot chat")


@main.command("index-info")
def index_info() -> None:
    """Show the persisted index: documents, chunks, index type, embedder, fingerprint."""

    manifest = Path(_settings().index_dir) / "manifest.json"
    if not manifest.exists():
        raise click.ClickException(f"no index in {manifest.parent}; run `llmops-chatbot build-index` first")
    click.echo(manifest.read_text())


@main.command()
@click.argument("question")
def ask(question: str) -> None:
    """Answer one QUESTION and print the result as JSON."""

    settings = _settings()
    question = validate_question(question, settings.max_question_chars)  # before loading anything
    click.echo(json.dumps(_service(settings).answer(question).to_dict(), indent=2, default=str))


def _service(settings, progress: bool = False):
    from chatbot_model.pipeline.service import LLMService  # deferred: loads tenacity

    configure_mlflow(settings)
    return LLMService.from_settings(settings, progress=progress)


@main.command()
def chat() -> None:
    """Interactive chat: ask, read the answer and its sources, rate it y/n (Enter skips), q quits."""
    from chatbot_model.cli.chat import run_chat  # deferred: loads tenacity

    settings = _settings()
    run_chat(_service(settings, progress=True), settings, sys.stdin)


for command in (register_model, promote_model, registry_access, serve, feedback, sync_feedback, evaluate, adapt, db, conversations,
                batch_score_command, export_model_command, doctor):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
