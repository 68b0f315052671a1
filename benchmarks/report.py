"""Render benchmarks/results/*.json as the markdown tables of BENCHMARKS.md: `python benchmarks/report.py`."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ms_rows(stats: dict) -> list[list]:
    return [[name, s["p50"], s["p95"], s["n"]] for name, s in stats.items()]


def ratio_table(label: str, ratios: dict) -> str:
    return table([label, "of medians", "median paired", "p95 paired"],
                 [[k, v["ratio_of_medians"], v["median_paired_ratio"], v["p95_paired_ratio"]] for k, v in ratios.items()])


def main() -> None:
    out = []
    if r := load("embedder"):
        m = r["machine"]
        out.append(f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m.get('memory_gb')} GB, Python {m['python']}, "
                   f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, faiss {m.get('faiss')}, "
                   f"load average at the end {m['load_average']}.\n")
        out.append("### Embedder: ONNX Runtime vs PyTorch\n")
        out.append(table(["single query", "p50 ms", "p95 ms", "n"], ms_rows(r["single_query_ms"])))
        out.append("")
        out.append(ratio_table("ratio (paired, same process)", r["ratios"]))
        e = r["equality"]
        out.append("")
        out.append(table(["equality", "value"], [[k, v] for k, v in e.items()]))
        out.append("")
        out.append(table(["cold load in a fresh process", "p50 ms", "p95 ms", "imports torch"],
                         [[k, v["p50"], v["p95"], v["imports_torch"]] for k, v in r["cold_load_ms"].items()]))
        out.append(f"\nIndex-build throughput (82 chunks + 406 sentences), texts/s: {r['batch_texts_per_s']}\n")
    if r := load("overhead"):
        out.append("### 1. Pipeline overhead per request\n")
        out.append(table(["LLMService.answer", "p50 ms", "p95 ms", "n"], ms_rows(r["answer_ms"])))
        out.append("")
        out.append(table(["step alone", "p50 ms", "p95 ms", "n"], ms_rows(r["steps_ms"])))
        out.append(f"\nSum of step medians: {r['sum_of_step_medians_ms']} ms ({r['questions']} questions, "
                   f"guardrail {r['guardrail']}, {r['embedder']}, index {r['index']}).\n")
    if r := load("peer"):
        out.append("### 2. Peer: LlamaIndex\n")
        out.append(table(["query path", "p50 ms", "p95 ms", "n"], ms_rows(r["query_ms"])))
        out.append("")
        out.append(ratio_table("ratio", {k: v for k, v in r.items() if k.startswith("ratio ")}))
        out.append("")
        out.append(table(["retrieval only", "p50 ms", "p95 ms", "n"], ms_rows(r["retrieval_only_ms"])))
        out.append(f"\nTop-1 document agreement ours vs LlamaIndex: {r['top1_doc_agreement']:.1%} over "
                   f"{r['questions']} questions (k={r['k']}, llama-index-core {r['llama_index_core']}).\n")
    if r := load("batch"):
        out.append("### 3. Batch throughput (1,000 questions)\n")
        rows = [[k, v, r["questions_per_s_all"][k]] for k, v in r["questions_per_s_median"].items()]
        out.append(table(["path", "questions/s (median)", "all rounds"], rows))
        extra = {k: v for k, v in r.items() if k.startswith(("speedup", "answer"))}
        out.append("")
        out.append(table(["", "value"], [[k, v] for k, v in extra.items()]))
        out.append("")
    if r := load("scale"):
        out.append("### 4. Retrieval at scale (synthetic vectors, k=10)\n")
        rows = []
        for name, v in r["results"].items():
            p = v["params"]
            desc = ", ".join(f"{k}={p[k]}" for k in ("nlist", "nprobe", "m", "ef_search") if k in p)
            rows.append([name, desc, v["build_s"], v["index_mb"], v["rss_growth_mb"], v["query_p50_ms"],
                         v["query_p95_ms"], v["recall_at_10"]])
        out.append(table(["size, type", "params", "build s", "index MB", "RSS growth MB", "p50 ms", "p95 ms",
                          "recall@10"], rows))
        out.append("")
        sweeps = [[name, k, s["p50_ms"], s["recall_at_10"]] for name, v in r["results"].items()
                  for k, s in v.get("sweep", {}).items()]
        out.append(table(["size, type", "search param", "p50 ms", "recall@10"], sweeps))
        out.append(f"\n`auto` picks: {r['auto_choice']}; HNSW at 1M: {r['hnsw_at_1m']}.\n")
    if r := load("guardrail"):
        out.append("### 6. Guardrail\n")
        out.append(table(["per text (one check)", "p50 ms", "p95 ms", "n"], ms_rows(r["per_text_ms"])))
        out.append("")
        out.append(table([f"batch of {r['batch_size']}", "texts/s"], [[k, v] for k, v in r["batch_texts_per_s"].items()]))
        extra = {k: v for k, v in r.items() if k.startswith("toxic-bert")}
        out.append("")
        out.append(table(["", "value"], [[k, v] for k, v in extra.items()]))
        out.append("")
    if r := load("coldstart"):
        out.append("### 5. Cold start of `mlflow models serve`\n")
        s = r["serve_to_first_correct_answer_ms"]
        rows = [["command to first correct answer", round(s["p50"] / 1000, 2), round(s["p95"] / 1000, 2), s["runs"]]]
        out.append(table(["", "p50 s", "p95 s", "runs (s)"], rows))
        out.append("")
        out.append(table(["fresh process", "import mlflow s", "load_model s", "first predict s", "imports torch"],
                         [[i + 1, x["import_mlflow_s"], x["load_model_s"], x["first_predict_s"], x["torch_imported"]]
                          for i, x in enumerate(r["in_process_load"])]))
        if "first start, empty ONNX cache (export included) s" in r:
            out.append(f"\nFirst start with an empty ONNX cache (export included): "
                       f"{r['first start, empty ONNX cache (export included) s']} s.\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
