"""The public hate-speech sets beyond Davidson and the ToxiGen prompts, and the near-copy split of every source
(used by train_guardrail.py).

Files (in --data-dir, any subfolder; sources and licences in docs/guardrail.md), each with `text`, `label` (1
hateful, 0 not):
- toxigen_seed_sentences.csv: ToxiGen's curated seed statements (prompts/ and demonstrations/); the rows equal to
  a statement of toxigen_statements.csv are that file's rows and are not added twice;
- toxigen_annotated_train.csv: ToxiGen's human-annotated machine-generated statements;
- implicit_hate_latent_hatred.csv: Latent Hatred tweets (`hate_class` implicit_hate / explicit_hate / not_hate);
- hatemoji_build.csv: HatemojiBuild, adversarial emoji hate with perturbation pairs (`matched_id`) and the
  authors' split (`split` train / dev / test).

These rows teach the `hate` label only (their "not hateful" includes heated opinion and rude tweets, which say
nothing about insults or threats).

Splits (`assign_splits`), decided before anything is fitted: texts of *all* sources are linked when they are near
copies (`near_copies.near_copy_pairs`, the rule of the leak test) and HatemojiBuild's perturbation pairs are
linked too; a linked group of rows is a cluster. The rows of the older sources keep the split they always had
(anchors), and so do HatemojiBuild's test rows (the authors' test set, whole). A new row whose cluster holds
anchors of one split takes it; a cluster with no anchor goes to train / validation / test by a seeded hash of its
first text (60/20/20); a new row whose cluster holds anchors of several splits is dropped, and so is a
HatemojiBuild train or dev row linked to any row of another split (its pair or a near copy in the test set).
Public rows that are near copies of the project's evaluation sets are dropped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from near_copies import near_copy_pairs

PUBLIC_FILES = {"toxigen_seeds": "toxigen_seed_sentences.csv", "toxigen_annotated": "toxigen_annotated_train.csv",
                "latent_hatred": "implicit_hate_latent_hatred.csv", "hatemoji": "hatemoji_build.csv"}
HATEMOJI_SPLIT = {"train": "train", "dev": "val", "test": "test"}
STRENGTH = {"train": 0, "val": 1, "test": 2}


def read_public(data_dir: Path, seen_keys: set[str], text_key) -> list[dict]:
    """{text, source, kind, hateful, anchor_split, pair} rows of the four files, exact duplicates (by `text_key`,
    also of `seen_keys`: the older sources' texts) dropped."""
    import pandas as pd

    rows = []
    for source, name in PUBLIC_FILES.items():
        paths = sorted(data_dir.rglob(name))
        if not paths:
            raise SystemExit(f"--data-dir {data_dir} holds no {name} (searched recursively); docs/guardrail.md says "
                             "where to get it")
        df = pd.read_csv(paths[0], keep_default_na=False)
        for rec in df.to_dict("records"):
            text = str(rec["text"]).strip()
            key = text_key(text)
            if not key or key in seen_keys:
                continue
            seen_keys.add(key)
            kind = {"latent_hatred": rec.get("hate_class"), "hatemoji": rec.get("type")}.get(
                source, "hate" if int(rec["label"]) else "not_hate")
            rows.append({"text": text, "source": source, "kind": str(kind), "hateful": int(rec["label"]),
                         "anchor_split": HATEMOJI_SPLIT[rec["split"]] if source == "hatemoji" else None,
                         "pair": (f"hatemoji:{min(rec['entry_id'], rec['matched_id'])}"
                                  if source == "hatemoji" else None)})
    return rows


def _hash_split(key: str, seed: int) -> str:
    u = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 16**8
    return "train" if u < 0.6 else "val" if u < 0.8 else "test"


def assign_splits(old: list[dict], new: list[dict], eval_texts: list[str], cache: Path, seed: int = 0) -> dict:
    """Set `split` on every row of `new` (dropping the ones that cannot be placed without a leak; returns counts).
    `old`: rows of the older sources, whose `split` is fixed."""
    texts = [r["text"] for r in old] + [r["text"] for r in new]
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    file = cache / f"near-copy-pairs-{key}.npy"
    if file.exists():
        pairs = np.load(file)
    else:
        pairs = np.array(near_copy_pairs(texts), dtype=np.int64).reshape(-1, 2)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(file, pairs)
    parent = list(range(len(texts)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def link(a, b):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for a, b in pairs.tolist():
        link(a, b)
    first_of_pair = {}
    for i, r in enumerate(new, start=len(old)):
        if r["pair"]:
            link(i, first_of_pair.setdefault(r["pair"], i))
    anchors: dict[int, set[str]] = {}
    for i, r in enumerate(old):
        anchors.setdefault(root(i), set()).add(r["split"])
    for i, r in enumerate(new, start=len(old)):
        if r["anchor_split"]:
            anchors.setdefault(root(i), set()).add(r["anchor_split"])
    leaks = set()  # new rows that are near copies of an evaluation text
    for a, _ in near_copy_pairs([r["text"] for r in new], list(eval_texts)):
        leaks.add(new[a]["text"])
    counts = {"dropped: near copy of an evaluation set": 0, "dropped: cluster spans splits": 0,
              "clusters": len({root(i) for i in range(len(texts))})}
    for i, r in enumerate(new, start=len(old)):
        splits = anchors.get(root(i), set())
        if r["text"] in leaks:
            r["split"] = None
            counts["dropped: near copy of an evaluation set"] += 1
        elif r["anchor_split"] == "test" or (r["anchor_split"] and splits == {r["anchor_split"]}):
            r["split"] = r["anchor_split"]
        elif not r["anchor_split"] and len(splits) == 1:
            r["split"] = next(iter(splits))
        elif not r["anchor_split"] and not splits:
            r["split"] = _hash_split(texts[root(i)], seed)
        else:
            r["split"] = None
            counts["dropped: cluster spans splits"] += 1
    sizes = {}
    for i in range(len(texts)):
        sizes[root(i)] = sizes.get(root(i), 0) + 1
    counts["largest cluster"] = max(sizes.values())
    return counts
