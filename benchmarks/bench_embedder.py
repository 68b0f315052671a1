"""The query embedder: ONNX Runtime vs PyTorch (sentence-transformers).

- equality: cosine of the vectors and top-1 retrieval agreement over 200+ distinct questions against the shipped
  corpus (each backend searches an index of chunk vectors it computed itself);
- single-query latency, rotating order in one process, ONNX with 1 and 2 intra-op threads;
- cold load in a fresh process (import + session/model load, export cached).
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from common import DOCS, ROOT, main, paired_ratio, questions, rotate, stats_ms

LOAD_SNIPPET = """
import os, time, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
t = time.perf_counter()
from chatbot_model.retrieval.embedder import get_embedder
e = get_embedder("", sys.argv[1])
e.encode(["warm up"])
print(time.perf_counter() - t, "torch" in sys.modules)
"""


def cold_load(backend: str, runs: int) -> dict:
    seconds, torch_imported = [], None
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, backend], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        seconds.append(float(out[0]))
        torch_imported = out[1] == "True"
    return {**stats_ms(seconds), "imports_torch": torch_imported}


def run(quick: bool) -> dict:
    from chatbot_model.retrieval.embedder import Embedder, OnnxEmbedder
    from chatbot_model.retrieval.rag import chunk_documents, load_documents

    qs = questions()
    chunks = chunk_documents(load_documents(DOCS), 800, 120)
    texts = [c.text for c in chunks]
    torch_e = Embedder("")
    onnx = {n: OnnxEmbedder("", threads=n) for n in (1, 2)}

    # equality
    tq, tc = torch_e.encode(qs), torch_e.encode(texts)
    oq, oc = onnx[2].encode(qs), onnx[2].encode(texts)
    cos = np.concatenate([(tq * oq).sum(1), (tc * oc).sum(1)])
    t_top, o_top = (tq @ tc.T).argmax(1), (oq @ oc.T).argmax(1)
    doc_agree = np.mean([chunks[a].doc_id == chunks[b].doc_id for a, b in zip(t_top, o_top)])
    single = np.vstack([onnx[1].encode([q]) for q in qs])  # one by one (no padding) equals the batch
    equality = {"questions": len(qs), "chunks": len(texts), "min_cosine": round(float(cos.min()), 7),
                "top1_chunk_agreement": round(float(np.mean(t_top == o_top)), 4),
                "top1_doc_agreement": round(float(doc_agree), 4),
                "single_vs_batch_min_cosine": round(float((single * oq).sum(1).min()), 7)}

    # latency, one query at a time, rotating
    contenders = {"torch": lambda q: torch_e.encode([q]), "onnx_1_thread": lambda q: onnx[1].encode([q]),
                  "onnx_2_threads": lambda q: onnx[2].encode([q])}
    times = rotate(contenders, qs[: 100 if quick else len(qs)], repeats=1 if quick else 2)
    latency = {name: stats_ms(t) for name, t in times.items()}
    ratios = {f"{name}/torch": paired_ratio(times[name], times["torch"]) for name in contenders if name != "torch"}

    # batch throughput (index build path)
    sentences = [s for c in chunks for s in c.sentences]
    batch = {}
    for name, emb in (("torch", torch_e), ("onnx_2_threads", onnx[2])):
        started = time.perf_counter()
        emb.encode(texts + sentences)
        batch[name] = round(len(texts + sentences) / (time.perf_counter() - started), 1)

    runs = 2 if quick else 3
    load = {"onnx": cold_load("onnx", runs), "torch": cold_load("torch", runs)}
    return {"equality": equality, "single_query_ms": latency, "ratios": ratios, "batch_texts_per_s": batch,
            "cold_load_ms": load, "onnx_threads_default": OnnxEmbedder("").threads,
            "onnx_export": __import__("json").loads((onnx[2].directory / "export.json").read_text())}


if __name__ == "__main__":
    main("embedder", run)
