"""Benchmark 2: the same job built with LlamaIndex, side by side in one process.

Peer: llama-index-core `VectorStoreIndex` over `FaissVectorStore(IndexFlatIP)`, `HuggingFaceEmbedding` of the same
local all-MiniLM-L6-v2 directory (sentence-transformers on PyTorch), `MockLLM`, the same chunks (our chunker, so
retrieval is comparable), the same k; `query_engine.query(q)` per question (retrieve + synthesize with the mock
LLM). Ours: `LLMService.answer(q)` with the default config (guardrail in and out, ONNX embedder, local extractive
answer; tracing off, LlamaIndex records none either). Also ours with the PyTorch embedder, to show what ONNX buys.
Contenders are called in rotating order for each question.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from common import build_service, main, paired_ratio, questions, rotate, stats_ms


def build_llamaindex(chunks, k: int):
    import faiss
    from llama_index.core import Settings as LISettings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore

    from chatbot_model.retrieval.embedder import embedded_model_path

    embed = HuggingFaceEmbedding(model_name=embedded_model_path(), device="cpu", normalize=True)
    LISettings.embed_model, LISettings.llm = embed, MockLLM()
    # metadata kept out of the embedded and the LLM text, so both pipelines embed exactly the chunk text
    nodes = [TextNode(text=c.text, id_=f"chunk-{c.chunk_id}", metadata={"doc_id": c.doc_id, "title": c.title},
                      excluded_embed_metadata_keys=["doc_id", "title"], excluded_llm_metadata_keys=["doc_id"])
             for c in chunks]
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(384))
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=embed)
    return index.as_query_engine(llm=MockLLM(), similarity_top_k=k)


def run(quick: bool) -> dict:
    import llama_index.core

    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    ours = build_service(tmp)
    ours_torch = build_service(tmp, embedding_backend="torch")
    k = ours.settings.top_k
    engine = build_llamaindex(ours.rag.chunks, k)
    qs = questions(120 if quick else None)

    top1: dict[str, list] = {"ours": [], "llamaindex": []}

    counter = itertools.count()

    def unseen(q: str) -> str:  # the guardrail's encoder remembers scored texts: ours sees every question once
        return f"{q} [{next(counter)}]"

    def ask_ours(q):
        ours.answer(unseen(q))

    def ask_peer(q):
        response = engine.query(q)
        top1["llamaindex"].append(response.source_nodes[0].node.metadata["doc_id"] if response.source_nodes else None)

    times = rotate({"ours": ask_ours, "llamaindex": ask_peer,
                    "ours (torch embedder)": lambda q: ours_torch.answer(unseen(q))}, qs,
                   repeats=1 if quick else 2)
    # top-1 agreement on the questions as written (untimed for ours; the peer's last pass over them)
    for q in qs:
        result = ours.answer(q)
        top1["ours"].append(result.sources[0]["id"] if result.sources else None)
    pairs = list(zip(top1["ours"], top1["llamaindex"][-len(qs):]))
    blocked = sum(a is None for a, _ in pairs)
    agree = sum(a == b for a, b in pairs if a is not None) / max(1, len(pairs) - blocked)
    retrieval_only = rotate({"ours retrieve": lambda q: ours.rag.retrieve(q),
                             "llamaindex retrieve": engine.retriever.retrieve}, qs[:100])
    return {
        "questions": len(qs), "k": k, "llama_index_core": llama_index.core.__version__,
        "query_ms": {name: stats_ms(t) for name, t in times.items()},
        "ratio ours/llamaindex": paired_ratio(times["ours"], times["llamaindex"]),
        "ratio ours(torch)/llamaindex": paired_ratio(times["ours (torch embedder)"], times["llamaindex"]),
        "top1_doc_agreement": round(agree, 4), "answers_blocked_by_guardrail": blocked,
        "retrieval_only_ms": {name: stats_ms(t) for name, t in retrieval_only.items()},
        "goal": "ours <= 0.6 x llamaindex (median)",
    }


if __name__ == "__main__":
    main("peer", run)
