"""How the offline model answers users: the user-phrased questions and the conversations, on dev and held-out.

User-phrased questions (`artifacts/eval/user_questions.jsonl`, each with gold document ids and key terms):
- `answered`    share not declined ("not covered") and not blocked
- `first`       share whose first source is a gold document
- `top3`        share with a gold document among the first three sources
- `key_term`    share whose answer contains at least one key term (case-insensitive)
- `retrieval_first`, `retrieval_top3`  the same two asked of retrieval alone (before the "not covered" decision,
  which hides the sources of a declined question)

Conversations (`artifacts/eval/conversations.jsonl`, every later turn a follow-up, and
`artifacts/eval/topic_switches.jsonl`), later turns by `kind`:
- `same_as_alone`  new-topic and off-topic turns: retrieved exactly as if asked alone (the same source ids in the
  same order, declined or blocked alike)
- `followup_top3`  follow-up turns (no `kind`, or `follow-up`): a gold document among the first three sources

Off-topic: `offtopic_declined` on `artifacts/eval/offtopic.jsonl` (never used to choose anything).

Usage: python scripts/answer_quality_report.py [--index-dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

EVAL = Path(__file__).resolve().parents[1] / "artifacts" / "eval"
SPLITS = ("dev", "held-out")
FOLLOW_UP, NEW_TOPIC, OFF_TOPIC = "follow-up", "new-topic", "off-topic"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ids_of(row: dict) -> list[str]:
    return [s["id"] for s in (row.get("sources") or [])]


def declined(row: dict) -> bool:
    return bool(row.get("abstained") or row.get("blocked"))


def user_question_metrics(rows: list[dict], items: list[dict]) -> dict[str, float]:
    """The four user-question metrics of `rows` (model outputs) against `items` (the set's lines)."""
    n = len(items)
    first = top3 = key = answered = 0
    for item, row in zip(items, rows):
        gold, found = set(item["relevant_ids"]), ids_of(row)
        answered += not declined(row)
        first += bool(found) and found[0] in gold
        top3 += bool(gold & set(found[:3]))
        answer = (row.get("answer") or "").lower()
        key += any(term.lower() in answer for term in item["key_terms"])
    return {"answered": answered / n, "first": first / n, "top3": top3 / n, "key_term": key / n}


def conversation_metrics(predict_turns, conversations: list[dict]) -> dict[str, dict[str, float]]:
    """Per split: `same_as_alone` (new-topic and off-topic turns), `followup_top3` (follow-up turns), with the
    count of each. Turns are asked in order with the conversation so far (the model's own answers; a blocked
    turn left out of it, as `evaluate` does)."""
    histories: list[list[dict]] = [[] for _ in conversations]
    with_history: dict[tuple[int, int], dict] = {}
    for position in range(max(len(c["turns"]) for c in conversations)):
        active = [i for i, c in enumerate(conversations) if len(c["turns"]) > position]
        turns = [conversations[i]["turns"][position] for i in active]
        rows = predict_turns([t["question"] for t in turns], [histories[i] for i in active])
        for i, turn, row in zip(active, turns, rows):
            if position:
                with_history[i, position] = row
            if not row.get("blocked"):
                histories[i] = histories[i] + [{"role": "user", "content": turn["question"]},
                                               {"role": "assistant", "content": row.get("answer") or "(no answer)"}]
    keys = list(with_history)
    alone = dict(zip(keys, predict_turns([conversations[i]["turns"][p]["question"] for i, p in keys],
                                         [[] for _ in keys])))
    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        same, follow = [], []
        for i, p in keys:
            if conversations[i].get("split") != split:
                continue
            turn, row = conversations[i]["turns"][p], with_history[i, p]
            if turn.get("kind", FOLLOW_UP) == FOLLOW_UP:
                follow.append(bool(set(turn["relevant_ids"]) & set(ids_of(row)[:3])))
            else:
                a = alone[i, p]
                same.append(ids_of(row) == ids_of(a) and declined(row) == declined(a))
        out[split] = {"same_as_alone": statistics.fmean(same) if same else float("nan"), "switch_turns": len(same),
                      "followup_top3": statistics.fmean(follow) if follow else float("nan"),
                      "followup_turns": len(follow)}
    return out


def report(predict, predict_turns, retrieve=None) -> dict:
    """Every number of this report, from two callables: `predict(questions) -> rows` and
    `predict_turns(questions, histories) -> rows` (rows as the pyfunc's output records); with `retrieve`
    (questions -> lists of document ids), the retrieval-only numbers too."""
    items = read_jsonl(EVAL / "user_questions.jsonl")
    rows = predict([i["question"] for i in items])
    found = retrieve([i["question"] for i in items]) if retrieve else None
    out: dict = {}
    for split in SPLITS:
        part = [(i, r) for i, r in zip(items, rows) if i["split"] == split]
        out[split] = {"questions": len(part), **user_question_metrics([r for _, r in part], [i for i, _ in part])}
        if found is not None:
            hits = [(ids[:1], ids[:3], set(i["relevant_ids"])) for i, ids in zip(items, found) if i["split"] == split]
            out[split]["retrieval_first"] = statistics.fmean(bool(gold & set(a)) for a, _, gold in hits)
            out[split]["retrieval_top3"] = statistics.fmean(bool(gold & set(b)) for _, b, gold in hits)
    conversations = conversation_metrics(predict_turns, read_jsonl(EVAL / "conversations.jsonl")
                                         + read_jsonl(EVAL / "topic_switches.jsonl"))
    for split in SPLITS:
        out[split].update(conversations[split])
    offtopic = read_jsonl(EVAL / "offtopic.jsonl")
    out["offtopic_declined"] = statistics.fmean(declined(r) for r in predict([o["question"] for o in offtopic]))
    return out


def main() -> None:
    import pandas as pd

    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.pyfunc import _PyfuncChatbot
    from chatbot_model.pipeline.service import LLMService

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=None, help="index of the shipped docs (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(index_dir=args.index_dir or Path(tmp) / "index", tracing=False, feedback_db_url="",
                                 guardrail_backend="embedded")
        service = LLMService.from_settings(settings)
        model = _PyfuncChatbot(service)

        def retrieve(questions):
            return [[s.chunk.doc_id for s in found] for found in service.rag.retrieve_many(questions, 3)]

        def predict_turns(questions, histories):
            frame = pd.DataFrame({"question": questions, "history": histories})
            return model.predict(None, frame).to_dict("records")

        numbers = report(lambda qs: predict_turns(qs, [[] for _ in qs]), predict_turns, retrieve)
    for split in SPLITS:
        print(f"{split:9s} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in numbers[split].items()))
    print(f"offtopic.jsonl declined {numbers['offtopic_declined']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
