"""The user-phrased question set and the topic-switch conversations: their shape, their fixed split, and that
they stay apart from the golden retrieval set (no question equal to or nearly copying a golden one)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "artifacts" / "eval"
sys.path.insert(0, str(ROOT / "scripts"))
from near_copies import eval_texts, near_copies  # noqa: E402

KINDS = {"follow-up", "new-topic", "off-topic"}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVAL / name).read_text().splitlines() if line.strip()]


def split_of(text: str) -> str:
    """The split as it was assigned before any tuning: a fixed hash of the text, about 40% held out."""
    return "held-out" if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10 < 4 else "dev"


def documents() -> dict[str, str]:
    return {d["id"]: d["text"] for d in json.loads((ROOT / "artifacts" / "docs.json").read_text())}


def test_user_questions_name_real_documents_and_key_terms_they_contain():
    docs, items = documents(), rows("user_questions.jsonl")
    assert len(items) >= 150 and len({i["question"] for i in items}) == len(items)
    assert {d for i in items for d in i["relevant_ids"]} == set(docs)  # every document is asked about
    for item in items:
        assert item["relevant_ids"] and set(item["relevant_ids"]) <= set(docs), item
        assert 1 <= len(item["key_terms"]) <= 3, item
        text = " ".join(docs[d] for d in item["relevant_ids"]).lower()
        assert all(term.lower() in text for term in item["key_terms"]), item


def test_user_questions_are_split_by_a_fixed_hash():
    items = rows("user_questions.jsonl")
    assert all(i["split"] == split_of(i["question"]) for i in items)
    assert sum(i["split"] == "held-out" for i in items) >= 60


def test_topic_switch_conversations_are_split_by_a_fixed_hash_and_labelled():
    ids = {c["id"] for c in rows("conversations.jsonl")}
    docs = documents()
    switches = rows("topic_switches.jsonl")
    assert len(switches) >= 30
    for c in switches:
        assert c["id"] not in ids and c["split"] == split_of(c["turns"][0]["question"]), c["id"]
        assert "kind" not in c["turns"][0] and 2 <= len(c["turns"]) <= 3, c["id"]
        for turn in c["turns"][1:]:
            assert turn["kind"] in KINDS and set(turn["relevant_ids"]) <= set(docs), (c["id"], turn)
            assert bool(turn["relevant_ids"]) == (turn["kind"] != "off-topic"), (c["id"], turn)
    held = [t for c in switches if c["split"] == "held-out" for t in c["turns"][1:]]
    assert sum(t["kind"] != "follow-up" for t in held) >= 10 and sum(t["kind"] == "follow-up" for t in held) >= 8


def test_the_new_sets_stay_apart_from_the_golden_retrieval_set():
    golden = eval_texts("retrieval.jsonl")
    switches = [t["question"] for c in rows("topic_switches.jsonl") for t in c["turns"]]
    assert near_copies([i["question"] for i in rows("user_questions.jsonl")], golden) == []
    assert near_copies(switches, golden) == []
