"""`llmops-chatbot export-model`: the self-contained model directory KServe loads (`lifecycle/export.py`)."""

from __future__ import annotations

import click

from chatbot_model.config import load_settings
from chatbot_model.lifecycle.export import ADAPTATIONS, check_offline, is_remote, export_model


@click.command("export-model")
@click.option("--model-uri", default=None,
              help="The model to export: models:/NAME@alias, models:/NAME/N, runs:/... (default: "
                   "CHATBOT_MODEL_URI, models:/llmops-chatbot@production).")
@click.option("--dest", required=True, help="A new or empty local directory, or s3://BUCKET/PATH (any MLflow "
                                            "artifact store URI); KServe's storageUri points at it.")
@click.option("--adaptation", type=click.Choice(ADAPTATIONS), default="frozen", show_default=True,
              help="frozen: the version serves alone; live: it follows the ratings in CHATBOT_FEEDBACK_DB_URL.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Load the local export in a fresh process with no tracking server and no network, and answer "
                   "one question.")
def export_model_command(model_uri: str | None, dest: str, adaptation: str, check: bool) -> None:
    """Write the self-contained model directory KServe's MLflow runtime (MLServer) loads."""
    model_uri = model_uri or load_settings().model_uri
    done = export_model(model_uri, dest, adaptation)
    click.echo(f"exported {model_uri}" + (f" (version {done.version})" if done.version else "")
               + f" -> {done.dest} (adaptation {adaptation})")
    if check and not is_remote(done.dest):
        row = check_offline(done.dest)
        click.echo(f"check: loaded offline with no tracking server; answered by {row['provider']} "
                   f"({len(row['sources'])} sources)")
    click.echo(f"KServe: set storageUri to {done.dest} in k8s/kserve/inferenceservice.yaml")
