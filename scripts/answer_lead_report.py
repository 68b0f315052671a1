"""How the local answerer's answers open, on the golden retrieval questions, under each hint.

For every question of `artifacts/eval/retrieval.jsonl` it asks the offline model (the `local` answerer, no keys)
and reports, per hint:
- `lead_fact`      share of questions whose FIRST sentence holds a required fact (golden `facts`)
- `fact_coverage`  share of required facts found anywhere in the answer (the gate's metric)
- `sentences`      mean number of cited sentences per answer
- `abstained`      share of questions answered "not covered"

Usage: python scripts/answer_lead_report.py [--index-dir DIR] [--golden artifacts/eval/retrieval.jsonl]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from pathlib import Path

from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT
from chatbot_model.config import DEFAULT_ARTIFACTS, load_settings
from chatbot_model.pipeline.service import LLMService

CITATION = re.compile(r"\s\[\d+\][.!?\"')\]]*")


def first_sentence(answer: str) -> str:
    """The answer up to its first citation mark (the local answerer cites every sentence)."""
    match = CITATION.search(answer)
    return answer[:match.start()] if match else answer


def report(service: LLMService, golden: list[dict]) -> dict[str, float]:
    results = service.answer_many([g["question"] for g in golden])
    lead = facts_found = facts_total = 0
    sentences = []
    for item, result in zip(golden, results):
        facts = [f.lower() for f in item["facts"]]
        answer = result.answer.lower()
        lead += any(f in first_sentence(answer) for f in facts)
        facts_found += sum(f in answer for f in facts)
        facts_total += len(facts)
        sentences.append(len(CITATION.findall(result.answer)))
    return {"lead_fact": round(lead / len(golden), 4), "fact_coverage": round(facts_found / facts_total, 4),
            "sentences": round(statistics.fmean(sentences), 2),
            "abstained": round(sum(bool(getattr(r, "abstained", False)) for r in results) / len(golden), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=None, help="index of the shipped docs (default: a temp dir)")
    parser.add_argument("--golden", type=Path, default=DEFAULT_ARTIFACTS / "eval" / "retrieval.jsonl")
    args = parser.parse_args()
    golden = [json.loads(line) for line in args.golden.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(index_dir=args.index_dir or Path(tmp) / "index", tracing=False, feedback_db_url="",
                                 guardrail_backend="embedded")
        for name, hint in (("default hint", DEFAULT_HINT), ("grounded hint", GROUNDED_HINT)):
            numbers = report(LLMService.from_settings(settings, hint=hint), golden)
            print(f"{name:14s} " + "  ".join(f"{k} {v}" for k, v in numbers.items()))


if __name__ == "__main__":
    main()
