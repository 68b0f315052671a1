"""Calibrate the "not covered" decision: fit the abstention model (chatbot_model/retrieval/abstention.py) for a
knowledge base and write it as JSON (`CHATBOT_ABSTAIN_MODEL`, logged in model_settings.json).

Needs only the documents: covered questions are made from them (`abstention.pseudo_questions`: titles and word
windows of their sentences); off-topic ones ship with the repository (`artifacts/abstention_offtopic.jsonl`: 73
hand-written questions about other software, chit-chat and gibberish, and 240 Natural Questions open questions,
CC BY-SA 3.0). For the shipped knowledge base the dev part of `artifacts/eval/user_questions.jsonl` is added to
the covered side (`--questions`). Optional `--data-dir DIR` with `nq_open_efficientqa_dev.jsonl`: its first half
(seeded shuffle, seed 0; the shipped sample comes from it) joins the off-topic side and its second half is only
measured. `artifacts/eval/offtopic.jsonl` and the held-out user questions are never used to fit or choose.

Usage:
  python scripts/calibrate_abstention.py --docs PATH --out abstention.json      # your own documents
  CHATBOT_ABSTAIN_MODEL="$(cat abstention.json)" llmops-chatbot register_model --docs PATH
  python scripts/calibrate_abstention.py --questions artifacts/eval/user_questions.jsonl \
      --out artifacts/abstention.json                                           # the shipped model
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from chatbot_model.config import DEFAULT_ARTIFACTS, load_settings
from chatbot_model.retrieval.abstention import FEATURES, AbstentionModel, pseudo_questions, train
from chatbot_model.retrieval.rag import RAGPipeline, load_documents

EVAL = DEFAULT_ARTIFACTS / "eval"
OFFTOPIC_SAMPLE = DEFAULT_ARTIFACTS / "abstention_offtopic.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def features_of(rag: RAGPipeline, questions: list[str]) -> list[dict[str, float]]:
    out = []
    for i in range(0, len(questions), 256):
        part = questions[i:i + 256]
        out += [r.features for r in rag.retrieve_vectors(part, rag.encode_queries(part))]
    return out


def answered(model: AbstentionModel, rows: list[dict[str, float]]) -> float:
    return float(np.mean([model.covered(r) for r in rows])) if rows else float("nan")


def calibrate(rag: RAGPipeline, docs, *, questions: list[str] = (), offtopic: list[str] = (),
              l2: float = 1.0, min_declined: float = 0.99,
              features: tuple[str, ...] = FEATURES) -> tuple[AbstentionModel, dict]:
    """The fitted model and the training numbers. Covered side: questions made from the documents, and
    `questions` (real questions about them) when given."""
    covered = features_of(rag, pseudo_questions(docs) + list(questions))
    off = features_of(rag, list(offtopic))
    model = train(covered, off, l2=l2, min_declined=min_declined, features=features)
    return model, {"covered": len(covered), "offtopic": len(off), "covered_answered": answered(model, covered),
                   "offtopic_declined": 1 - answered(model, off)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=None, help="knowledge base (default: CHATBOT_DOCS_PATH)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the model (JSON)")
    parser.add_argument("--questions", type=Path, default=None,
                        help="covered questions to add (JSONL with `question`; only `split: dev` rows are used)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of nq_open_efficientqa_dev.jsonl")
    parser.add_argument("--index-dir", type=Path, default=None, help="index of the knowledge base (default: temp)")
    parser.add_argument("--min-declined", type=float, default=0.99,
                        help="share of the off-topic training questions the threshold must decline")
    parser.add_argument("--features", default=",".join(FEATURES), help="comma-separated features to use")
    args = parser.parse_args()

    questions = [r["question"] for r in read_jsonl(args.questions) if r.get("split", "dev") == "dev"] \
        if args.questions else []
    offtopic = [r["question"] for r in read_jsonl(OFFTOPIC_SAMPLE)]
    nq_held: list[str] = []
    if args.data_dir:
        pool = [r["question"] for r in read_jsonl(args.data_dir / "nq_open_efficientqa_dev.jsonl")]
        random.Random(0).shuffle(pool)
        offtopic = list(dict.fromkeys(offtopic + pool[:len(pool) // 2]))
        nq_held = pool[len(pool) // 2:]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(index_dir=args.index_dir or Path(tmp) / "index",
                                 **({"docs_path": args.docs} if args.docs else {}))
        docs = load_documents(settings.docs_path)
        rag = RAGPipeline(settings).load_or_build()
        model, numbers = calibrate(rag, docs, questions=questions, offtopic=offtopic,
                                   min_declined=args.min_declined, features=tuple(args.features.split(",")))
        print(f"trained on {numbers['covered']} covered and {numbers['offtopic']} off-topic questions: "
              f"covered answered {numbers['covered_answered']:.3f}, off-topic declined "
              f"{numbers['offtopic_declined']:.3f}; threshold {model.threshold:.2f}")
        print("weights: " + ", ".join(f"{n} {w:+.3f}" for n, w in zip(model.features, model.weights))
              + f", bias {model.bias:+.3f}")
        checks = {}
        if Path(settings.docs_path).resolve() == (DEFAULT_ARTIFACTS / "docs.json").resolve():
            held = [r["question"] for r in read_jsonl(EVAL / "user_questions.jsonl") if r["split"] == "held-out"]
            checks["user questions, held-out: answered"] = answered(model, features_of(rag, held))
            checks["golden retrieval.jsonl: answered"] = answered(
                model, features_of(rag, [r["question"] for r in read_jsonl(EVAL / "retrieval.jsonl")]))
            checks["offtopic.jsonl: declined"] = 1 - answered(
                model, features_of(rag, [r["question"] for r in read_jsonl(EVAL / "offtopic.jsonl")]))
        if nq_held:
            checks["natural questions, held-out half: declined"] = 1 - answered(model, features_of(rag, nq_held))
        for name, value in checks.items():
            print(f"  {name:45s} {value:.3f}")
    args.out.write_text(json.dumps(model.to_dict(), indent=2) + "\n")
    print(f"wrote {args.out}; set CHATBOT_ABSTAIN_MODEL to its content (or register with it set)")


if __name__ == "__main__":
    main()
