"""Run the benchmark suite (`make bench`): each benchmark in its own process, one after the other.

    python benchmarks/run_all.py [--quick] [--only embedder,peer,...] [extra args passed on, e.g. --hnsw-1m]

Results: benchmarks/results/<name>.json; a summary of the goals is printed at the end (BENCHMARKS.md explains).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["embedder", "overhead", "peer", "batch", "scale", "guardrail", "coldstart", "tracing", "rollout", "streaming", "spark"]


def summary() -> list[str]:
    from report import load  # benchmarks/ is on sys.path when this runs as a script

    lines = []
    if r := load("embedder"):
        e = r["equality"]
        lines.append(f"embedder: ONNX top-1 agreement {e['top1_doc_agreement']:.1%} over {e['questions']} questions "
                     f"(goal >= 99%), min cosine {e['min_cosine']}; single query p50 ONNX "
                     f"{r['single_query_ms']['onnx_2_threads']['p50']} ms vs torch {r['single_query_ms']['torch']['p50']} ms")
    if r := load("overhead"):
        lines.append(f"overhead: answer p50 {r['answer_ms']['answer (tracing off)']['p50']} ms, "
                     f"p95 {r['answer_ms']['answer (tracing off)']['p95']} ms (tracing off)")
    if r := load("peer"):
        ratio = r["ratio ours/llamaindex"]["ratio_of_medians"]
        lines.append(f"peer: ours/LlamaIndex = {ratio} (goal <= 0.6) {'MET' if ratio <= 0.6 else 'MISSED'}; "
                     f"top-1 agreement {r['top1_doc_agreement']:.1%}")
    if r := load("batch"):
        qps = r["questions_per_s_median"]["answer_many (1000)"]
        x = r["speedup answer_many / one by one"]
        lines.append(f"batch: {qps} q/s (goal >= 250) {'MET' if qps >= 250 else 'MISSED'}; {x}x one by one "
                     f"(goal >= 3x) {'MET' if x >= 3 else 'MISSED'}")
    if r := load("scale"):
        row = r["results"].get("1,000,000 ivf")
        if row:
            ok = row["query_p50_ms"] <= 10 and row["recall_at_10"] >= 0.95 and row["index_mb"] <= 2048
            lines.append(f"scale: 1M ivf p50 {row['query_p50_ms']} ms, recall@10 {row['recall_at_10']}, "
                         f"{row['index_mb']} MB {'MET' if ok else 'MISSED'}")
    if r := load("guardrail"):
        lines.append("guardrail per text p50: " + ", ".join(f"{k} {v['p50']} ms" for k, v in r["per_text_ms"].items()))
    if r := load("coldstart"):
        p50 = r["serve_to_first_correct_answer_ms"]["p50"] / 1000
        lines.append(f"cold start: {p50:.1f} s to the first correct answer (goal <= 10 s) {'MET' if p50 <= 10 else 'MISSED'}")
    if r := load("tracing"):
        ok = r["single_p50_cost_ms"] <= 1 and r["batch_cost_share"] <= 0.15
        lines.append(f"tracing: +{r['single_p50_cost_ms']} ms p50 single (goal <= 1 ms), batch "
                     f"{r['batch_questions_per_s']['on']} vs {r['batch_questions_per_s']['off']} q/s "
                     f"(cost {r['batch_cost_share']:.0%}, goal <= 15%) {'MET' if ok else 'MISSED'}")
    if r := load("rollout"):
        moves = r["moves"]
        errors = sum(m["load_during_swap"]["errors"] for m in moves)
        lines.append(f"rollout: swap {max(m['swap_s (alias moved -> first answer by it)'] for m in moves)} s at most "
                     f"(alias moved -> first answer by it, poll {r['poll_s']:g} s), {errors} errors during "
                     f"{len(moves)} swaps (goal 0) {'MET' if errors == 0 else 'MISSED'}")
    if r := load("streaming"):
        s, w = r["ms"]["remote streamed"], r["ms"]["remote whole"]
        lines.append(f"streaming (slow remote, {r['answer_words']} words at {r['word_s']} s): first text "
                     f"{s['first_text_ms']:.0f} ms streamed vs {w['first_text_ms']:.0f} ms whole; last byte "
                     f"{s['last_byte_ms']:.0f} vs {w['last_byte_ms']:.0f} ms; sentence buffering costs "
                     f"{r['buffering_cost_ms']:.0f} ms of time to first token")
    if r := load("spark"):
        lines.append(f"spark: batch-score local[2] {r['spark_local2_rows_per_s']} rows/s scoring "
                     f"({r['spark_wall_rows_per_s']} rows/s with JVM start and model load) vs one-process predict "
                     f"{r['predict_rows_per_s']} rows/s, {r['rows']:,} rows")
    return lines


def main() -> int:
    args = sys.argv[1:]
    only = ORDER
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1].split(",")
        del args[i:i + 2]
    failed = []
    started = time.perf_counter()
    for name in only:
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        code = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), *args], cwd=HERE.parent,
                              stdout=subprocess.DEVNULL).returncode
        print(f"   {'ok' if code == 0 else f'FAILED ({code})'} in {time.perf_counter() - t:.0f} s", flush=True)
        if code:
            failed.append(name)
    print(f"\nsuite: {time.perf_counter() - started:.0f} s\n" + "\n".join(summary()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
