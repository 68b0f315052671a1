"""`llmops-chatbot batch-score`: answer a file of questions on Spark with a logged or registered model.

The input (Parquet, CSV with a header, or JSON lines; a `question` column) is read with Spark and numbered in
read order (row 0 is the file's first row). Rows are split by number into N contiguous parts; each part is
scored with `mlflow.pyfunc.spark_udf(..., env_manager="local")` (struct result: every `AnswerRow` column) and
written as its own Parquet file `part-NNNNN.parquet`, first under a temporary name, then renamed. A rerun with
the same input and output skips the parts that exist, so a killed job resumes where it stopped.

Output (a directory of Parquet files that Spark, pandas and pyarrow read as one table): `row` (the input row
number), the input's other columns, then the `AnswerRow` columns in order; `sources` is JSON text. A row whose
question is not usable text (missing, empty, too long) comes back with `error` set and is never sent to the
model, so bad rows cannot fail the job. Tracing is off in the workers unless `--tracing` (a trace per row of
a million-row batch would swamp the tracking store).

Local mode by default (`--master local[*]`); `--master spark://HOST:7077` (or `yarn`, `k8s://...`) runs on a
cluster: the executors need this package installed (`pip install 'llmops-chatbot[spark]'`), PYSPARK_PYTHON
set to their Python, and the output on a shared filesystem (HDFS, S3A, NFS).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from chatbot_model.contract import AnswerRow, SourceRow, validate_question
from chatbot_model.errors import ConfigError, InvalidInput
from chatbot_model.lifecycle.model_uri import resolve_version

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
ROWS_PER_PART = 20_000  # default part size when --partitions is not given
MANIFEST = "_batch_score.json"  # what the output holds (input, rows, parts, model): a rerun must match it
TMP_PREFIX = "_tmp-"  # a part being written; Spark and pyarrow ignore names starting with "_"
ROW = "row"
QUESTION = "question"
ERROR = "_error"


@dataclass
class BatchReport:
    """What a run did: rows in the input, parts, parts skipped (already done), rows scored now, rows with an
    error in the whole output, seconds spent scoring, and the throughput of this run."""

    output: str
    rows: int
    parts: int
    skipped: int
    scored: int
    errors: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def count_of(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def spark_session(master: str = "local[*]", conf: dict[str, str] | None = None):
    """A SparkSession for scoring; the workers run this Python (PYSPARK_PYTHON) in local mode."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("batch-score needs Spark: pip install 'llmops-chatbot[spark]'") from None
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise ConfigError("batch-score needs Java for Spark: apt-get install default-jre-headless "
                          "(or set JAVA_HOME)")
    if master.startswith("local"):
        os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    else:  # a cluster: the executors' Python is theirs to name
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("llmops-chatbot batch-score")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.shuffle.partitions", "8"))
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def input_format(path: str) -> str:
    """Spark's format name for the input's extension; an unknown one raises (before Spark starts)."""
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"--input {path}: unknown format {suffix or '(no extension)'!r}; use a file (or a "
                           f"Spark output directory) ending in one of {sorted(FORMATS)}", field="input")
    return FORMATS[suffix]


def read_questions(spark, path: str):
    """The input as a Spark DataFrame with a `question` column; unknown formats and a missing column raise."""
    fmt = input_format(path)
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", True).option("multiLine", True).option("escape", '"')
    try:
        df = reader.load(path)
    except Exception as exc:  # AnalysisException: path does not exist, unreadable file
        raise InvalidInput(f"--input {path}: Spark cannot read it ({str(exc).splitlines()[0]})",
                           field="input") from None
    if QUESTION not in df.columns:
        raise InvalidInput(f"--input {path} has no column {QUESTION!r} (columns: {df.columns}); put one question "
                           "per row in a column named 'question'", field="input")
    return df


def _spark_type(annotation):
    from pyspark.sql.types import ArrayType, BooleanType, DoubleType, StringType, StructField, StructType

    simple = {str: StringType(), bool: BooleanType(), float: DoubleType()}
    if annotation in simple:
        return simple[annotation]
    if annotation == list[SourceRow]:
        return ArrayType(StructType([StructField(n, _spark_type(f.annotation)) for n, f in
                                     SourceRow.model_fields.items()]))
    raise TypeError(f"no Spark type for AnswerRow field type {annotation!r}")


def result_type():
    """The UDF's struct: every `AnswerRow` column in order (sources as an array of structs)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(name, _spark_type(field.annotation))
                       for name, field in AnswerRow.model_fields.items()])


def _check_udf(max_chars: int):
    """A pandas UDF: "" for a usable question, else the reason (the model's own validation)."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def check(rows, questions):
        out = []
        for row, question in zip(rows, questions):
            try:
                validate_question(question, max_chars, f"row {row}: {QUESTION}")
                out.append("")
            except InvalidInput as exc:
                out.append(str(exc))
        return pd.Series(out, dtype=object)

    # real types, not the strings `from __future__ import annotations` makes: pandas_udf reads them
    check.__annotations__ = {"rows": pd.Series, "questions": pd.Series, "return": pd.Series}
    return pandas_udf(check, "string")


def _numbered(df):
    """`row` (position in read order, 0-based) first, then the input's columns. Computed in the JVM: the
    partition id and the record number inside it (`monotonically_increasing_id`), plus the rows of the earlier
    partitions. The same files read the same way number the same rows, so a rerun finds the same parts."""
    from pyspark.sql import functions as F

    tagged = df.select(F.spark_partition_id().alias("_pid"), F.monotonically_increasing_id().alias("_mid"), "*")
    tagged = tagged.persist()
    counts = dict(tagged.groupBy("_pid").count().collect())
    offsets, seen = [], 0
    for pid in sorted(counts):
        offsets += [F.lit(pid), F.lit(seen)]
        seen += counts[pid]
    start = F.create_map(*offsets)[F.col("_pid")] if offsets else F.lit(0)
    row = (start + F.col("_mid") - F.col("_pid").cast("long") * (1 << 33)).cast("long")
    return tagged.select(row.alias(ROW), *[F.col(f"`{c}`") for c in df.columns])


class _Fs:
    """The output's Hadoop filesystem (local, HDFS, S3A...): exists, rename, delete, list."""

    def __init__(self, spark, root: str):
        self._jvm = spark.sparkContext._jvm
        self._path = self._jvm.org.apache.hadoop.fs.Path
        self.fs = self._path(root).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def exists(self, path: str) -> bool:
        return self.fs.exists(self._path(path))

    def rename(self, src: str, dst: str) -> bool:
        return self.fs.rename(self._path(src), self._path(dst))

    def delete(self, path: str) -> None:
        self.fs.delete(self._path(path), True)

    def mkdirs(self, path: str) -> None:
        self.fs.mkdirs(self._path(path))

    def names(self, path: str) -> list[str]:
        return [s.getPath().getName() for s in self.fs.listStatus(self._path(path))] if self.exists(path) else []

    def files(self, path: str) -> list[str]:
        return [s.getPath().toString() for s in self.fs.listStatus(self._path(path)) if s.isFile()]

    def read_text(self, path: str) -> str:
        stream = self.fs.open(self._path(path))
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        stream = self.fs.create(self._path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()


def _local_model(model_uri: str, dst: str) -> tuple[str, str | None]:
    """The model downloaded once on the driver (spark_udf ships this copy to the workers) and its version."""
    import mlflow

    version = resolve_version(model_uri)
    return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst), version


def _max_question_chars(model_dir: str) -> int:
    """The question limit the model enforces (its logged value unless CHATBOT_MAX_QUESTION_CHARS is set)."""
  
    # deferred: loads click, fastapi, mlflow
    from chatbot_model.lifecycle.pyfunc import ARTIFACTS, settings_from_artifacts

    artifacts = {key: str(Path(model_dir) / "artifacts" / name) for key, name in ARTIFACTS.items()}
    return settings_from_artifacts(artifacts).max_question_chars


def _check_manifest(fs: _Fs, output: str, wanted: dict, partitions: int | None) -> int:
    """The number of parts: the existing run's (it must be the same input and model) or a new one's."""
    path = f"{output}/{MANIFEST}"
    if not fs.exists(path):
        return partitions or max(1, math.ceil(wanted["rows"] / ROWS_PER_PART))
    done = json.loads(fs.read_text(path))
    for key in ("input", "rows", "model_version", "model_uri"):
        if done.get(key) != wanted[key]:
            raise InvalidInput(
                f"--output {output} holds answers of another run ({key} {done.get(key)!r}, now {wanted[key]!r}); "
                "resume with the same input and model, or choose a new --output (or delete it)", field="output")
    if partitions and partitions != done["partitions"]:
        raise InvalidInput(f"--output {output} was started with --partitions {done['partitions']}; resume with the "
                           "same number (or leave --partitions out)", field="partitions")
    return int(done["partitions"])


def batch_score(model_uri: str, input_path: str, output: str, *, master: str = "local[*]",
                partitions: int | None = None, tracing: bool = False, spark=None,
                progress: Callable[[str], None] = print) -> BatchReport:
    """Score `input_path` into the Parquet directory `output`, skipping parts a previous run finished."""
    import mlflow
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, DoubleType, StringType

    if partitions is not None and partitions < 1:
        raise InvalidInput(f"--partitions must be at least 1, got {partitions}", field="partitions")
    input_format(input_path)
    if "://" not in input_path:
        input_path = str(Path(input_path).resolve())
        if not Path(input_path).exists():
            raise InvalidInput(f"--input {input_path} does not exist", field="input")
    if "://" not in output:
        output = str(Path(output).resolve())
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our progress lines, not its bars
    own = spark is None
    spark = spark or spark_session(master)
    tmp = tempfile.mkdtemp(prefix="llmops-chatbot-batch-")
    try:
        df = read_questions(spark, input_path)
        model_dir, version = _local_model(model_uri, tmp)
        limit = _max_question_chars(model_dir)
        check = _check_udf(limit)
        numbered = _numbered(df)
        numbered = numbered.withColumn(ERROR, check(F.col(ROW), F.col(QUESTION))).persist()  # checked once
        total = numbered.count()
        if not total:
            raise InvalidInput(f"--input {input_path} has no rows", field="input")
        fs = _Fs(spark, output)
        wanted = {"input": input_path, "rows": total, "model_uri": model_uri, "model_version": version}
        parts = min(_check_manifest(fs, output, wanted, partitions), total)
        fs.mkdirs(output)
        fs.write_text(f"{output}/{MANIFEST}", json.dumps({**wanted, "partitions": parts}, indent=1))
        for stale in (n for n in fs.names(output) if n.startswith(TMP_PREFIX)):  # a killed run's leftovers
            fs.delete(f"{output}/{stale}")
        done = {p for p in range(parts) if fs.exists(f"{output}/{part_name(p)}")}
        bounds = [total * p // parts for p in range(parts + 1)]
        rows_done = sum(bounds[p + 1] - bounds[p] for p in done)
        progress(f"{total:,} questions in {count_of(parts, 'part')}; {count_of(len(done), 'part')} ({rows_done:,} rows) "
                 "already done" + (", skipped" if done else ""))

        env = {"CHATBOT_TRACING": "true" if tracing else "false"}
        model = mlflow.pyfunc.spark_udf(spark, model_dir, result_type=result_type(), env_manager="local",
                                        extra_env=env,
                                        model_config={"model_version": version} if version else None)
        extra = [c for c in df.columns if c != QUESTION]
        carried = [F.col(c).alias(c if c not in AnswerRow.model_fields and c != ROW else f"input_{c}")
                   for c in extra]
        defaults = AnswerRow().to_record()
        types = {str: StringType(), bool: BooleanType(), float: DoubleType()}
        parallelism = spark.sparkContext.defaultParallelism
        is_text = dict(df.dtypes)[QUESTION] == "string"
        question = F.col(QUESTION).cast("string")  # only usable text reaches the model
        as_given = F.coalesce(F.col(QUESTION), F.lit("")) if is_text else F.lit("")  # an error row's question

        started, scored = time.perf_counter(), 0
        for p in range(parts):
            if p in done:
                continue
            checked = numbered.filter((F.col(ROW) >= bounds[p]) & (F.col(ROW) < bounds[p + 1]))
            good = (checked.filter(F.col(ERROR) == "").repartition(parallelism)
                    .withColumn("_a", model(F.struct(question.alias(QUESTION)))))
            answered = good.select(F.col(ROW), *carried, *[
                (F.to_json(F.col("_a.sources")) if name == "sources" else F.col(f"_a.{name}")).alias(name)
                for name in AnswerRow.model_fields])
            failed = checked.filter(F.col(ERROR) != "").select(F.col(ROW), *carried, *[
                (F.col(ERROR) if name == "error"
                 else as_given if name == QUESTION
                 else F.lit(json.dumps(value)) if name == "sources"
                 else F.lit(value).cast(types[AnswerRow.model_fields[name].annotation])).alias(name)
                for name, value in defaults.items()])
            result = answered.unionByName(failed).repartition(1).sortWithinPartitions(ROW)
            staging = f"{output}/{TMP_PREFIX}{part_name(p)}-{uuid.uuid4().hex[:8]}"
            result.write.parquet(staging)
            written = [f for f in fs.files(staging) if f.rsplit("/", 1)[-1].startswith("part-")]
            if len(written) != 1 or not fs.rename(written[0], f"{output}/{part_name(p)}"):
                raise RuntimeError(f"could not move the scored part {p} from {staging} into {output}")
            fs.delete(staging)
            scored += bounds[p + 1] - bounds[p]
            rows_done += bounds[p + 1] - bounds[p]
            seconds = time.perf_counter() - started
            progress(f"part {p + 1}/{parts}: {rows_done:,}/{total:,} rows done, {scored / seconds:.1f} rows/s")
        seconds = time.perf_counter() - started
        errors = spark.read.parquet(output).filter(F.col("error") != "").count()
        numbered.unpersist()
        return BatchReport(output=output, rows=total, parts=parts, skipped=len(done), scored=scored, errors=errors,
                           seconds=seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if own:
            spark.stop()
