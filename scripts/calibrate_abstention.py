"""Calibrate `CHATBOT_ABSTAIN_BELOW`: the best retrieval score under which the chatbot answers "not covered".

On-topic: the golden retrieval questions (`artifacts/eval/retrieval.jsonl`). Off-topic for calibration: a file
of general-knowledge questions (`--data-dir`, one JSON object a line with a `question`; e.g. Natural Questions
open, nq_open_efficientqa_dev.jsonl), split by a seeded shuffle into a calibration half and a held-out half
BEFORE anything is chosen. The off-topic eval set `artifacts/eval/offtopic.jsonl` is never used to choose.

Rule: threshold = midpoint between the on-topic 2nd percentile and the calibration off-topic 99th percentile of
the top retrieval score (the cosine of the best chunk, `RAGPipeline.search`), rounded to 0.01. It sits halfway
across the gap, so neither side is cut at its own extreme. Printed: both distributions, the threshold, a sweep,
and held-out results (the held-out off-topic half, offtopic.jsonl by kind, and 4-fold cross-validation on the
golden questions: the rule re-chosen without a fold, scored on that fold).

Usage: python scripts/calibrate_abstention.py --data-dir DIR [--file nq_open_efficientqa_dev.jsonl]
       [--index-dir DIR] [--seed 0]
The score scale belongs to the embedder and the knowledge base: re-run this when either changes.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from chatbot_model.config import DEFAULT_ARTIFACTS, load_settings
from chatbot_model.retrieval.rag import RAGPipeline

EVAL = DEFAULT_ARTIFACTS / "eval"
ON_QUANTILE, OFF_QUANTILE = 0.02, 0.99


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choose(on: np.ndarray, off: np.ndarray) -> float:
    """The rule: halfway between the on-topic low tail and the off-topic high tail."""
    return round((float(np.quantile(on, ON_QUANTILE)) + float(np.quantile(off, OFF_QUANTILE))) / 2, 2)


def below(scores: np.ndarray, threshold: float) -> float:
    """Share abstained (score below the threshold)."""
    return float(np.mean(scores < threshold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder of the off-topic calibration file")
    parser.add_argument("--file", default="nq_open_efficientqa_dev.jsonl")
    parser.add_argument("--index-dir", type=Path, default=None, help="index of the knowledge base (default: temp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    source = args.data_dir / args.file
    if not source.is_file():
        raise SystemExit(f"no off-topic file {source}; pass --data-dir (and --file) of a JSONL with `question`")
    pool = [r["question"] for r in read_jsonl(source)]
    random.Random(args.seed).shuffle(pool)
    calib, held = pool[:len(pool) // 2], pool[len(pool) // 2:]
    golden = [r["question"] for r in read_jsonl(EVAL / "retrieval.jsonl")]
    benign = [r["question"] for r in read_jsonl(EVAL / "benign.jsonl")]
    offtopic = read_jsonl(EVAL / "offtopic.jsonl")

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(index_dir=args.index_dir or Path(tmp) / "index")
        rag = RAGPipeline(settings).load_or_build()

        def top(questions: list[str]) -> np.ndarray:
            return np.array([found[0].score if found else -1.0 for found in rag.search(rag.encode_queries(questions))])

        on, off, off_held, ben = top(golden), top(calib), top(held), top(benign)
        eval_scores = top([r["question"] for r in offtopic])

    pct = (0, 1, 2, 5, 50, 95, 99, 100)
    print(f"embedder {rag.embedder_name}, {len(rag.chunks)} chunks; top retrieval score percentiles {pct}")
    print(f"  on-topic golden        n={len(on):4d}  " + " ".join(f"{v:.3f}" for v in np.percentile(on, pct)))
    print(f"  off-topic calibration  n={len(off):4d}  " + " ".join(f"{v:.3f}" for v in np.percentile(off, pct)))
    threshold = choose(on, off)
    print(f"\nrule: (on-topic p{ON_QUANTILE * 100:g} {np.quantile(on, ON_QUANTILE):.3f} + off-topic "
          f"p{OFF_QUANTILE * 100:g} {np.quantile(off, OFF_QUANTILE):.3f}) / 2 -> CHATBOT_ABSTAIN_BELOW={threshold:.2f}")

    print("\nsweep   on-topic answered  calib abstained  held-out abstained  offtopic.jsonl abstained")
    for t in np.arange(0.20, 0.365, 0.02):
        print(f"  {t:.2f}  {1 - below(on, t):17.3f}  {below(off, t):15.3f}  {below(off_held, t):18.3f}  "
              f"{below(eval_scores, t):24.3f}")

    print(f"\nheld out, at {threshold:.2f}:")
    print(f"  off-topic held-out half  n={len(off_held):4d}  abstained {below(off_held, threshold):.3f}")
    print(f"  offtopic.jsonl           n={len(eval_scores):4d}  abstained {below(eval_scores, threshold):.3f}")
    kinds = defaultdict(list)
    for row, score in zip(offtopic, eval_scores):
        kinds[row.get("kind", "?")].append(score)
    for kind, scores in kinds.items():
        print(f"    {kind:20s} n={len(scores):3d}  abstained {below(np.array(scores), threshold):.3f}  "
              f"max score {max(scores):.3f}")
    print(f"  golden on-topic          n={len(on):4d}  answered {1 - below(on, threshold):.3f}")
    print(f"  benign.jsonl (on-topic, tricky wording) n={len(ben)}  answered {1 - below(ben, threshold):.3f}")
    folds = np.arange(len(on)) % 4
    np.random.default_rng(args.seed).shuffle(folds)
    answered = []
    for fold in range(4):
        t = choose(on[folds != fold], off)
        answered.append(1 - below(on[folds == fold], t))
        print(f"  4-fold CV on golden: fold {fold} threshold {t:.2f} answered {answered[-1]:.3f}")
    print(f"  4-fold CV on golden: mean answered {np.mean(answered):.3f}")


if __name__ == "__main__":
    main()
