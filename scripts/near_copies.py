"""Near copies between texts, on character 4-gram shingles of the normalised texts: a Jaccard similarity >= NEAR,
or >= CONTAINED of the shorter text's shingles found in the other (a sentence with words added or dropped).
Keeps the guardrail's training text apart from the project's evaluation sets (tests/test_eval_sets.py)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

EVAL = Path(__file__).resolve().parents[1] / "artifacts" / "eval"
EVAL_SETS = ("retrieval.jsonl", "toxic.jsonl", "benign.jsonl", "guardrail_functional.jsonl", "conversations.jsonl")

NEAR = 0.5
CONTAINED = 0.85


def emoji_names(text: str) -> str:
    """Pictographs (Unicode category So) replaced by their names ("🐀" -> " rat "); skin-tone modifiers, joiners
    and variation selectors dropped with the other punctuation. Emoji carry the meaning in HatemojiBuild."""
    if text.isascii():
        return text
    return "".join(f" {unicodedata.name(c, '').lower()} " if unicodedata.category(c) == "So" else c for c in text)


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", emoji_names(text).lower()).split())


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


def near_copy_pairs(texts: list[str], others: list[str] | None = None, chunk: int = 512):
    """Index pairs of near copies by the rule of `near_copies` (either way round), computed with sparse shingle
    counts (fast enough for tens of thousands of texts): (i, j), i < j, within `texts`; or, given `others`,
    (i, j) for texts[i] and others[j]."""
    import numpy as np
    from scipy import sparse

    both = list(texts) + list(others or [])
    normed = [norm(t) for t in both]
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(both):
        for s in shingles(t):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    X = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(both), len(vocab)))
    X.data[:] = 1.0  # a set, not a bag
    size = np.asarray(X.sum(axis=1)).ravel()
    length = np.array([len(n) for n in normed])
    n = len(texts)
    found = set()
    key: dict[str, list[int]] = {}
    for i, t in enumerate(normed):  # exact copies after normalisation
        key.setdefault(t, []).append(i)
    for group in key.values():
        found.update((a, b) for a in group for b in group if a < b and (others is None or a < n <= b))
    right = X[n:] if others is not None else X
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        offset = n if others is not None else start  # within `texts`: the upper triangle only
        common = (X[start:stop] @ right[offset - (n if others is not None else 0):].T).tocoo()
        i, j, c = common.row + start, common.col + offset, common.data
        keep = i < j
        i, j, c = i[keep], j[keep], c[keep]
        jaccard = c / (size[i] + size[j] - c)
        contained = (np.minimum(length[i], length[j]) >= 20) & (c / np.minimum(size[i], size[j]) >= CONTAINED)
        # near_copies indexes only training texts with >= 12 normalised characters: both ways round, a pair
        # counts when the shorter one is that long
        ok = ((jaccard >= NEAR) | contained) & (np.minimum(length[i], length[j]) >= 12)
        found.update(zip(i[ok].tolist(), j[ok].tolist()))
    return sorted((a, b - n) if others is not None else (a, b) for a, b in found)
