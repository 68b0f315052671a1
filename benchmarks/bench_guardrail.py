"""Benchmark 6: the guardrail, per-text latency and texts/s, embedded classifier vs toxic-bert.

toxic-bert is a randomly initialised BERT-base (transformers `BertConfig()` defaults: 12 layers, hidden 768, the
six toxic-bert labels, multi-label) saved locally with the tokenizer of the MiniLM package: the same cost as
unitary/toxic-bert, no download. Texts: the toxic and benign evaluation sets plus knowledge-base sentences.
Per text = `Guardrail.check(text)` one at a time (the embedded backend embeds the text itself); in the pipeline
the input check reuses the query embedding, so the embedded classifier's added cost per request is the
`with shared vectors` row (its policy encoder on the text, and its linear heads on the given vector). The model
remembers the texts it has scored: every embedded timing here starts with that memory cleared, so it is the cost
of a text seen for the first time. The size of the embedded weights
(linear heads and int8 policy encoder) is reported too.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ARTIFACTS, DOCS, main, rotate, stats_ms

LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def random_toxic_bert(target: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from chatbot_model.retrieval.embedder import embedded_model_path

    config = BertConfig(num_labels=6, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
                        problem_type="multi_label_classification")
    BertForSequenceClassification(config).eval().save_pretrained(target)
    AutoTokenizer.from_pretrained(embedded_model_path()).save_pretrained(target)
    return target


def texts() -> list[str]:
    rows = []
    for name in ("toxic", "benign"):
        rows += [json.loads(l)["question"] for l in (ARTIFACTS / "eval" / f"{name}.jsonl").read_text().splitlines()
                 if l.strip()]
    from chatbot_model.retrieval.rag import chunk_documents, load_documents

    rows += [s for c in chunk_documents(load_documents(DOCS), 800, 120) for s in c.sentences][:200]
    return rows


def run(quick: bool) -> dict:
    from chatbot_model.retrieval.embedder import get_embedder
    from chatbot_model.guardrail.core import EMBEDDED_WEIGHTS, Embedded, Guardrail, ToxicBert, export_toxic_bert_onnx

    items = texts()
    embedded = Guardrail(Embedded())
    model_dir = random_toxic_bert(Path(tempfile.mkdtemp(prefix="random-toxic-bert-")))
    bert = Guardrail(ToxicBert(str(model_dir), pipeline=ToxicBert._load(str(model_dir))))  # PyTorch pipeline
    started = time.perf_counter()
    export_toxic_bert_onnx(str(model_dir))
    extra = {"toxic-bert ONNX export seconds": round(time.perf_counter() - started, 1),
             "embedded weights MB (embedded.npz + policy_encoder.onnx)":
                 round(sum(f.stat().st_size for f in EMBEDDED_WEIGHTS.parent.iterdir()) / 1e6, 2)}
    fast = Guardrail(ToxicBert(str(model_dir)))  # picks up the cached export
    assert fast.classifier._onnx is not None
    a = np.array([[r.scores[l] for l in LABELS] for r in bert.check_many(items[:64])])
    b = np.array([[r.scores[l] for l in LABELS] for r in fast.check_many(items[:64])])
    extra["toxic-bert ONNX vs PyTorch: max abs score difference"] = float(np.abs(a - b).max())
    vectors = {t: v for t, v in zip(items, get_embedder("").encode(items))}
    model = embedded.classifier.model

    def forget():  # time the first sight of a text: the model remembers the texts it has scored
        model._form_linear.cache_clear()
        if model.encoder is not None:
            model.encoder._cached.cache_clear()

    def cold(check):
        return lambda *a: (forget(), check(*a))[1]

    contenders = {"embedded": cold(embedded.check),
                  "embedded, with shared vectors": cold(lambda t: embedded.check(t, vectors[t])),
                  "toxic-bert PyTorch (random BERT-base)": bert.check, "toxic-bert ONNX Runtime": fast.check}
    n = 60 if quick else 150
    times = rotate(contenders, items[:n], warmup=3)
    per_text = {name: stats_ms(t) for name, t in times.items()}
    throughput = {}
    batch = items[:256] if not quick else items[:128]
    for name, guard in (("embedded", embedded), ("toxic-bert PyTorch (random BERT-base)", bert),
                        ("toxic-bert ONNX Runtime", fast)):
        forget()
        started = time.perf_counter()
        guard.check_many(batch)
        throughput[name] = round(len(batch) / (time.perf_counter() - started), 1)
    import shutil

    shutil.rmtree(fast.classifier._onnx.directory, ignore_errors=True)  # the random model's export (~420 MB)
    shutil.rmtree(model_dir, ignore_errors=True)
    return {"texts": len(items), "per_text_ms": per_text, "batch_texts_per_s": throughput,
            "batch_size": len(batch), **extra}


if __name__ == "__main__":
    main("guardrail", run)
