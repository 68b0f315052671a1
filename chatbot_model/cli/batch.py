"""`llmops-chatbot batch-score`: answer a file of questions on Spark (the work is in `lifecycle/batch_score.py`)."""

from __future__ import annotations

import click

from chatbot_model.config import load_settings
from chatbot_model.lifecycle.batch_score import ROWS_PER_PART, batch_score, count_of


@click.command("batch-score")
@click.option("--model-uri", default=None,
              help="The model: models:/NAME@alias, models:/NAME/N, runs:/..., or an exported model directory "
                   "(default: CHATBOT_MODEL_URI, models:/llmops-chatbot@production).")
@click.option("--input", "input_path", required=True,
              help="Questions: a .parquet, .csv (with a header) or .jsonl file (or Spark directory) with a "
                   "`question` column.")
@click.option("--output", required=True,
              help="Answers: a Parquet directory (one file per part). Rerun with the same value to resume.")
@click.option("--master", default="local[*]", show_default=True,
              help="Spark master: local[N], or a cluster (spark://HOST:7077, yarn, k8s://...).")
@click.option("--partitions", type=int, default=None,
              help=f"Parts to split the input into (default: one per {ROWS_PER_PART:,} rows); each part is "
                   "written when done, a rerun skips it.")
@click.option("--tracing/--no-tracing", default=False, show_default=True,
              help="Record an MLflow trace per row (off: a big batch would swamp the tracking store).")
def batch_score_command(model_uri: str | None, input_path: str, output: str, master: str, partitions: int | None,
                        tracing: bool) -> None:
    """Answer every question of a file on Spark (mlflow.pyfunc.spark_udf) into Parquet; resumable."""
    model_uri = model_uri or load_settings().model_uri
    report = batch_score(model_uri, input_path, output, master=master, partitions=partitions, tracing=tracing,
                         progress=click.echo)
    click.echo(f"done: {report.rows:,} rows in {count_of(report.parts, 'part')} -> {report.output} "
               f"({count_of(report.skipped, 'part')} skipped, {report.scored:,} rows scored now at "
               f"{report.rows_per_s:.1f} rows/s; {report.errors:,} rows with an error)")
