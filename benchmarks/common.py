"""Shared helpers of the benchmark suite: question sets, timing statistics, rotation, machine description, results.

Every benchmark is a script `bench_*.py` with a `run(quick: bool) -> dict` function; `run_all.py` runs each in
its own process and writes `benchmarks/results/<name>.json`. Comparisons are measured in one process with the
contenders called in rotating order (A B C, B C A, C A B, ...), so machine noise hits them alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
ARTIFACTS = ROOT / "artifacts"
DOCS = ARTIFACTS / "docs.json"
RESULTS = Path(__file__).resolve().parent / "results"

_PREFIXES = ("", "Quick question: ", "I'd like to know: ", "Can you tell me: ")


def eval_questions() -> list[dict]:
    """The golden retrieval set: {question, relevant_ids, facts}."""
    return [json.loads(line) for line in (ARTIFACTS / "eval" / "retrieval.jsonl").read_text().splitlines() if line.strip()]


def questions(n: int | None = None) -> list[str]:
    """Distinct questions about the shipped corpus: the golden set, its paraphrases (4 phrasings each, the
    first letter lowered after a prefix), one per document title, and the benign set (no cache can help)."""
    base = [r["question"] for r in eval_questions()]
    out = []
    for prefix in _PREFIXES:
        out += [prefix + (q[0].lower() + q[1:] if prefix else q) for q in base]
    docs = json.loads(DOCS.read_text())
    out += [f"What does the knowledge base say about {d['title'].rstrip('.').lower()}?" for d in docs]
    out += [json.loads(line)["question"] for line in (ARTIFACTS / "eval" / "benign.jsonl").read_text().splitlines()
            if line.strip()]
    seen, unique = set(), []
    for q in out:
        if q not in seen:
            seen.add(q)
            unique.append(q)
    return unique[:n] if n else unique


def stats_ms(seconds: list[float]) -> dict:
    """median, p95, mean, n of a list of durations in seconds, as milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    if not ms:
        return {"p50": None, "p95": None, "mean": None, "n": 0}
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return {"p50": round(statistics.median(ms), 3), "p95": round(p95, 3), "mean": round(statistics.fmean(ms), 3),
            "n": len(ms)}


def rotate(contenders: dict[str, Callable[[str], object]], items: list[str], repeats: int = 1,
           warmup: int = 5) -> dict[str, list[float]]:
    """Time each contender on each item, contenders in rotating order per item; returns seconds per contender."""
    names = list(contenders)
    for item in items[:warmup]:
        for name in names:
            contenders[name](item)
    times: dict[str, list[float]] = {name: [] for name in names}
    step = 0
    for _ in range(repeats):
        for item in items:
            order = names[step % len(names):] + names[:step % len(names)]
            step += 1
            for name in order:
                started = time.perf_counter()
                contenders[name](item)
                times[name].append(time.perf_counter() - started)
    return times


def paired_ratio(a: list[float], b: list[float]) -> dict:
    """Ratio of medians and the median of per-item ratios a/b (the items were timed side by side)."""
    per_item = sorted(x / y for x, y in zip(a, b) if y > 0)
    return {"ratio_of_medians": round(statistics.median(a) / statistics.median(b), 3),
            "median_paired_ratio": round(statistics.median(per_item), 3),
            "p95_paired_ratio": round(per_item[int(0.95 * (len(per_item) - 1))], 3)}


def machine() -> dict:
    """What the numbers were measured on (and how busy it was)."""
    import numpy

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for package in ("torch", "onnxruntime", "faiss", "transformers", "sentence_transformers", "mlflow"):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # noqa: BLE001 - not installed or not importable
            pass
    return info


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def process_rss_mb(pid: int) -> float:
    """Resident memory of process `pid` and its children in MB (mlflow models serve runs uvicorn as a child)."""
    import subprocess

    pids = [pid]
    try:
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            total += next((int(line.split()[1]) for line in Path(f"/proc/{p}/status").read_text().splitlines()
                           if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(tmp: Path, **overrides):
    """Default settings with the index, tracking store and feedback DB under `tmp` (no keys, no tracing)."""
    from chatbot_model.config import load_settings

    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        os.environ.pop(var, None)
    values = dict(index_dir=tmp / "index", docs_path=DOCS, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                  feedback_db_url="", tracing=False)
    values.update(overrides)
    return load_settings(**values)


def save(name: str, result: dict) -> Path:
    """Write benchmarks/results/<name>.json (with the machine) and return its path."""
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def main(name: str, run: Callable[[bool], dict]) -> None:
    """`python benchmarks/bench_x.py [--quick]`: run, save, print the JSON."""
    quick = "--quick" in sys.argv
    result = run(quick)
    path = save(name, result)
    print(json.dumps(result, indent=2, default=str))
    print(f"saved {path}", file=sys.stderr)


def build_service(tmp: Path, **overrides):
    """An `LLMService` with the default components over the shipped corpus (index built or loaded under tmp)."""
    from chatbot_model.pipeline.service import LLMService

    return LLMService.from_settings(settings(tmp, **overrides))
