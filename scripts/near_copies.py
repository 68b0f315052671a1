"""Near copies between texts, on character 4-gram shingles of the normalised texts: a Jaccard similarity >= NEAR,
or >= CONTAINED of the shorter text's shingles found in the other (a sentence with words added or dropped).
Keeps the guardrail's training text apart from the project's evaluation sets (tests/test_eval_sets.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

EVAL = Path(__file__).resolve().parents[1] / "artifacts" / "eval"
EVAL_SETS = ("retrieval.jsonl", "toxic.jsonl", "benign.jsonl", "guardrail_functional.jsonl", "conversations.jsonl")

NEAR = 0.5
CONTAINED = 0.85


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def shingles(text: str, k: int = 4) -> set[str]:
    t = f" {norm(text)} "
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))}


def near_copies(evaluated: list[str], trained: list[str]) -> list[tuple[str, str, float]]:
    """(eval text, training text, similarity) for every near copy."""
    index = [(norm(t), shingles(t), t) for t in trained if len(norm(t)) >= 12]
    found = []
    for text in evaluated:
        n, s = norm(text), shingles(text)
        for tn, ts, original in index:
            common = len(s & ts)
            jaccard = common / len(s | ts)
            contained = min(len(n), len(tn)) >= 20 and common / min(len(s), len(ts)) >= CONTAINED
            if n == tn or jaccard >= NEAR or contained:
                found.append((text, original, round(jaccard, 2)))
    return found


def eval_texts(name: str) -> list[str]:
    """The questions or texts of one evaluation set (every turn of every conversation)."""
    rows = [json.loads(line) for line in (EVAL / name).read_text().splitlines() if line.strip()]
    if name == "conversations.jsonl":
        return [t["question"] for r in rows for t in r["turns"]]
    return [r.get("question", r.get("text")) for r in rows]


def all_eval_texts() -> list[str]:
    return [t for name in EVAL_SETS for t in eval_texts(name)]
