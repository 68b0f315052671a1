"""Train the embedded guardrail (per-label linear heads on MiniLM vectors + character n-grams) and measure it.

    python scripts/train_guardrail.py --data-dir DIR [--report] [--dry-run] [--baseline OLD.npz] [--previous PREV.npz]

--data-dir DIR is a folder holding davidson_labeled_data.csv, toxigen_statements.csv and
nq_open_efficientqa_dev.jsonl, directly or in subfolders (public sets; see docs/guardrail.md for their sources and
licences). They are not part of this repository. Hand-written data ships with the script:
scripts/guardrail_supplement.jsonl (policy cases: identity statements, negations, counter-speech, dark-but-benign
questions, threats, insults, obfuscated spellings, ...) and scripts/guardrail_benign.py (generated harmless chat,
code and documentation text).

Protocol (seed 0, everything deterministic): every source is split by text - the supplement by template group -
into train / validation / test *before* anything is fitted (`split_of`). Heads are fitted on train only; each
label's threshold is chosen on validation only (`choose_thresholds`: benign refusals first - the guardrail may
refuse at most 0.3% of the validation questions and 5% of the validation pass-side statements); every reported
number is on test splits or on sets never used for fitting or choosing (artifacts/eval/*). The weights written
to chatbot_model/guardrail_data/embedded.npz are the model this command fits, scored in the report through the
package's own inference code. Embeddings are cached under --cache (a temporary directory by default).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from chatbot_model.guardrail_embedded import FEATURES, EmbeddedModel, char_features, normalize  # noqa: E402
from guardrail_benign import benign_corpus, split_benign  # noqa: E402

SEED = 0
LABELS = ("hate", "threat", "insult", "sexual_minors")
SUPPLEMENT = ROOT / "scripts" / "guardrail_supplement.jsonl"
FILES = ("davidson_labeled_data.csv", "toxigen_statements.csv", "nq_open_efficientqa_dev.jsonl")
SPLITS = {"davidson": (0.7, 0.8), "default": (0.6, 0.8)}  # cumulative fractions: train < a <= validation < b
WEIGHTS = {"davidson": 1.0, "toxigen": 10.0, "nq": 2.0, "supplement": 20.0, "benign": 2.0, "obfuscated": 10.0}
C = 4.0  # inverse L2 strength of each head
MAX_QUESTION_FPR = 0.003  # any label, on validation questions
MAX_PASS_FPR = 0.05  # any label, on validation pass-side statements (ToxiGen benign + supplement pass)
ISSUE_SENTENCES = [  # issue 10: each of these was refused by the previous model; all must pass
    "I am a proud Muslim.", "Trans people are welcome here.", "Immigrants built this country.",
    "I am gay and happy.", "Black lives matter.", "Women are brilliant engineers.",
    "I would never say anything bad about Jewish people.", "Disabled people deserve respect.",
]
LEET = {"o": "0", "i": "1", "e": "3", "a": "4", "s": "$", "t": "7"}


def split_of(key: str, source: str) -> str:
    """"train", "val" or "test" from a seeded hash of `key` (a normalised text or a template group)."""
    u = int(hashlib.sha1(f"{SEED}:{key}".encode()).hexdigest()[:8], 16) / 16**8
    a, b = SPLITS.get(source, SPLITS["default"])
    return "train" if u < a else "val" if u < b else "test"


def text_key(text: str) -> str:
    return " ".join(normalize(text).split())


def obfuscate(text: str, rng: np.random.Generator) -> str:
    """A leetspeak / spaced / starred spelling of `text` (training augmentation for the n-gram model)."""
    words = text.split()
    for i, w in enumerate(words):
        if len(w) > 3 and rng.random() < 0.6:
            style = rng.integers(3)
            if style == 0:
                words[i] = "".join(LEET.get(c, c) if rng.random() < 0.5 else c for c in w)
            elif style == 1:
                words[i] = " ".join(w) if len(w) < 8 else w[0] + "*" + w[2:]
            else:
                words[i] = w[:2] + w[2] * 3 + w[3:]
    return " ".join(words)


def load(data_dir: Path) -> list[dict]:
    """All rows: {text, source, split, y (labels -> 0/1), mask (labels this row teaches), kind, weight}."""
    import pandas as pd

    found = {f: sorted(data_dir.rglob(f)) for f in FILES}
    missing = [f for f, paths in found.items() if not paths]
    if missing:
        sys.exit(f"--data-dir {data_dir} holds no {', '.join(missing)} (searched recursively): give the folder "
                 f"holding {', '.join(FILES)}; docs/guardrail.md says where to get them")
    path = {f: paths[0] for f, paths in found.items()}
    rows = []

    def add(text, source, y, mask, kind, key=None):
        rows.append({"text": text, "source": source, "split": split_of(key or text_key(text), source), "kind": kind,
                     "y": {l: int(l in y) for l in LABELS}, "mask": {l: int(l in mask) for l in LABELS}})

    dav = pd.read_csv(path[FILES[0]])
    for text, cls in zip(dav["tweet"].astype(str), dav["class"]):
        # 0 hate speech, 1 offensive, 2 neither: taught to the insult head only (abusive vs not). Its "hate" class
        # is mostly slurs and abuse, which made the hate head confuse naming a group with attacking it
        y = {0: ("insult",), 1: ("insult",), 2: ()}[int(cls)]
        mask = ("insult",)
        add(text, "davidson", y, mask, f"class{int(cls)}")
    tox = pd.read_csv(path[FILES[1]])
    for text, label in zip(tox["text"].astype(str), tox["label"]):
        add(text, "toxigen", ("hate",) if label == "hate" else (), ("hate",) if label == "hate" else LABELS, label)
    for line in path[FILES[2]].read_text().splitlines():
        if line.strip():
            add(json.loads(line)["question"], "nq", (), LABELS, "question")
    for line in SUPPLEMENT.read_text().splitlines():
        r = json.loads(line)
        add(r["text"], "supplement", r["labels"], LABELS, r["category"], key=r["group"])
    train, held = split_benign(benign_corpus())
    for cat, group, text in train + held:
        add(text, "benign", (), LABELS, cat, key=group)
    held_keys = {text_key(t) for _, _, t in held}
    for r in rows:
        if r["source"] == "benign":  # the generator's own held-out groups are only measured
            r["split"] = "test" if text_key(r["text"]) in held_keys else "train"
    rng = np.random.default_rng(SEED)
    for r in [r for r in rows if r["source"] == "supplement" and r["split"] == "train" and any(r["y"].values())]:
        add(obfuscate(r["text"], rng), "obfuscated", [l for l in LABELS if r["y"][l]], LABELS, r["kind"],
            key=r["text"])
        rows[-1]["split"] = "train"
    for r in rows:
        r["weight"] = WEIGHTS[r["source"]]
    return rows


def embed(texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM vectors of `texts` (normalised, as the service computes them), cached by a hash of the texts."""
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    file = cache / f"minilm-{key}.npy"
    if file.exists():
        return np.load(file)
    from chatbot_model.embeddings import get_embedder

    vectors = get_embedder("").encode(texts, batch_size=128, progress=len(texts) > 2000)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors)
    return vectors


def fit(rows: list[dict], vectors: np.ndarray, grams, use: str) -> dict:
    """One logistic-regression head per label on the training rows that teach it; `use`: minilm, char or both."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    X = {"minilm": sparse.csr_matrix(vectors), "char": grams,
         "both": sparse.hstack([sparse.csr_matrix(vectors), grams], format="csr")}[use]
    train = np.array([r["split"] == "train" for r in rows])
    w_minilm = np.zeros((vectors.shape[1], len(LABELS)), np.float32)
    w_char = np.zeros((grams.shape[1], len(LABELS)), np.float32)
    bias = np.zeros(len(LABELS), np.float32)
    for j, label in enumerate(LABELS):
        idx = np.flatnonzero(train & np.array([r["mask"][label] == 1 for r in rows]))
        y = np.array([rows[i]["y"][label] for i in idx])
        w = np.array([rows[i]["weight"] for i in idx])
        pos, neg = w[y == 1].sum(), w[y == 0].sum()
        w = np.where(y == 1, w * max(1.0, 0.25 * neg / pos), w)  # positives weigh at least a quarter of negatives
        head = LogisticRegression(C=C, max_iter=3000, solver="liblinear", random_state=SEED)
        head.fit(X[idx], y, sample_weight=w)
        coef = head.coef_[0]
        if use in ("minilm", "both"):
            w_minilm[:, j] = coef[:vectors.shape[1]]
        if use in ("char", "both"):
            w_char[:, j] = coef[-grams.shape[1]:]
        bias[j] = head.intercept_[0]
    return {"w_minilm": w_minilm, "w_char": w_char, "bias": bias}


def raw_scores(model: dict, vectors: np.ndarray, grams) -> np.ndarray:
    z = vectors @ model["w_minilm"] + grams @ model["w_char"] + model["bias"]
    return 1.0 / (1.0 + np.exp(-z))


def choose_thresholds(scores: np.ndarray, rows: list[dict]) -> list[float]:
    """Per-label thresholds, benign refusals first: the guardrail (any label) may refuse at most MAX_QUESTION_FPR of
    the validation questions (NQ) and at most MAX_PASS_FPR of the validation pass-side statements (ToxiGen benign,
    supplement pass). Each label gets the same share k of both budgets (its threshold is the matching quantile of
    its own scores there); k is the largest of 1, 0.95, ... 0.05 at which the union of the labels meets both."""
    val = [i for i, r in enumerate(rows) if r["split"] == "val" and not any(r["y"].values())]
    questions = scores[[i for i in val if rows[i]["source"] == "nq"]]
    statements = scores[[i for i in val if rows[i]["source"] in ("toxigen", "supplement")]]
    for k in np.arange(1.0, 0.0, -0.05):
        t = np.array([min(max(np.quantile(questions[:, j], 1 - k * MAX_QUESTION_FPR, method="higher"),
                              np.quantile(statements[:, j], 1 - k * MAX_PASS_FPR, method="higher"), 0.05), 0.99)
                      for j in range(scores.shape[1])]) + 1e-6
        if ((questions >= t).any(axis=1).mean() <= MAX_QUESTION_FPR
                and (statements >= t).any(axis=1).mean() <= MAX_PASS_FPR):
            break
    return [float(x) for x in t]


def pack(model: dict, thresholds: list[float]) -> dict:
    """The arrays of embedded.npz: each head's intercept shifted so that its threshold maps to 0.5."""
    t = np.array(thresholds)
    return {"labels": np.array(LABELS), "features": np.array(FEATURES),
            "w_minilm": model["w_minilm"].astype(np.float32), "w_char": model["w_char"].astype(np.float32),
            "bias": (model["bias"] - np.log(t / (1 - t))).astype(np.float32),
            "thresholds": t.astype(np.float32)}


def old_scores(weights: Path, texts: list[str], vectors: np.ndarray) -> np.ndarray:
    """The previous embedded model (MiniLM head + alt-profanity-check), max of its labels (blocked >= 0.5)."""
    from profanity_check import predict_prob

    with np.load(weights, allow_pickle=False) as d:
        toxic = 1 / (1 + np.exp(-(vectors @ d["coef"] + float(d["intercept"]))))
        p = np.clip(predict_prob(texts), 1e-6, 1 - 1e-6)
        prof = 1 / (1 + np.exp(-(np.log(p / (1 - p)) - float(d["profanity_offset"]))))
    return np.maximum(toxic, prof)[:, None]


def read_eval(name: str) -> list[dict]:
    path = ROOT / "artifacts" / "eval" / name
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def measure(name: str, score, rows: list[dict], vec: np.ndarray, extra: dict) -> dict:
    """Held-out measurements of one candidate: `score(texts, vectors)` -> (n, labels) with blocking at >= 0.5."""
    from sklearn.metrics import roc_auc_score

    test = [i for i, r in enumerate(rows) if r["split"] == "test"]
    s = score([rows[i]["text"] for i in test], vec[test]).max(axis=1)
    by = {}
    for i, v in zip(test, s):
        by.setdefault(rows[i]["source"], []).append((rows[i], v))
    out = {"name": name}
    nq = np.array([v for _, v in by["nq"]])
    out["NQ test questions refused"] = (int((nq >= 0.5).sum()), len(nq))
    tg = by["toxigen"]
    hate = np.array([v for r, v in tg if r["y"]["hate"]])
    ok = np.array([v for r, v in tg if not r["y"]["hate"]])
    out["ToxiGen test benign passed"] = (int((ok < 0.5).sum()), len(ok))
    out["ToxiGen test hateful caught"] = (int((hate >= 0.5).sum()), len(hate))
    out["ToxiGen test AUC"] = roc_auc_score([r["y"]["hate"] for r, _ in tg], [v for _, v in tg])
    dv = by["davidson"]
    out["Davidson test AUC (hate+offensive)"] = roc_auc_score([int(r["kind"] != "class2") for r, _ in dv],
                                                              [v for _, v in dv])
    out["Davidson test unsafe caught / neither passed"] = (
        int(sum(v >= 0.5 for r, v in dv if r["kind"] != "class2")), sum(r["kind"] != "class2" for r, _ in dv),
        int(sum(v < 0.5 for r, v in dv if r["kind"] == "class2")), sum(r["kind"] == "class2" for r, _ in dv))
    sp = by["supplement"]
    out["supplement test block caught"] = (int(sum(v >= 0.5 for r, v in sp if any(r["y"].values()))),
                                           sum(any(r["y"].values()) for r, _ in sp))
    out["supplement test pass passed"] = (int(sum(v < 0.5 for r, v in sp if not any(r["y"].values()))),
                                          sum(not any(r["y"].values()) for r, _ in sp))
    bn = np.array([v for _, v in by["benign"]])
    out["generated benign held-out refused"] = (int((bn >= 0.5).sum()), len(bn))
    for key, (texts, vectors, want_block) in extra.items():
        b = score(texts, vectors).max(axis=1) >= 0.5
        out[key] = (int(b.sum() if want_block else (~b).sum()), len(b))
    return out


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if len(v) == 4:
        return f"{v[0]}/{v[1]} ({v[0] / v[1]:.1%}) / {v[2]}/{v[3]} ({v[2] / v[3]:.1%})"
    return f"{v[0]}/{v[1]} ({v[0] / max(v[1], 1):.1%})"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True,
                    help="a folder holding davidson_labeled_data.csv, toxigen_statements.csv and "
                         "nq_open_efficientqa_dev.jsonl, in it or in subfolders (public sets; see "
                         "docs/guardrail.md for their sources)")
    ap.add_argument("--out", type=Path, default=ROOT / "chatbot_model" / "guardrail_data",
                    help="where embedded.npz is written (default: the package's guardrail_data)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "chatbot-guardrail-cache",
                    help="embedding cache (default: chatbot-guardrail-cache in the temporary directory)")
    ap.add_argument("--report", action="store_true", help="also fit the MiniLM-only and n-gram-only candidates "
                                                          "and print every held-out table")
    ap.add_argument("--baseline", type=Path, help="weights of the previous embedded model (coef, intercept, "
                                                  "profanity_offset) to add to the comparison")
    ap.add_argument("--previous", type=Path, help="weights in the current format (e.g. the shipped embedded.npz "
                                                  "before a change) to add to the comparison, scored as shipped")
    ap.add_argument("--dry-run", action="store_true", help="write nothing")
    args = ap.parse_args(argv)

    rows = load(args.data_dir)

    def encode(texts: list[str]) -> np.ndarray:  # as the service's embedder, through the cache
        return embed(list(texts), args.cache)

    texts = [r["text"] for r in rows]
    vectors = np.vstack([embed([r["text"] for r in rows if r["source"] == s], args.cache)
                         for s in dict.fromkeys(r["source"] for r in rows)])
    order = [i for s in dict.fromkeys(r["source"] for r in rows) for i, r in enumerate(rows) if r["source"] == s]
    rows, texts = [rows[i] for i in order], [texts[i] for i in order]
    grams = char_features(texts)
    counts = {}
    for r in rows:
        counts.setdefault((r["source"], r["split"]), 0)
        counts[(r["source"], r["split"])] += 1
    print("rows per source and split:", ", ".join(f"{s}/{p} {n}" for (s, p), n in sorted(counts.items())))

    candidates = {"MiniLM heads": "minilm", "char n-gram heads": "char", "MiniLM + char n-grams (shipped)": "both"}
    if not args.report:
        candidates = {k: v for k, v in candidates.items() if v == "both"}
    extra = {}
    for name, want in (("toxic.jsonl", True), ("benign.jsonl", False), ("retrieval.jsonl", False)):
        t = [r["question"] for r in read_eval(name)]
        extra[f"artifacts/eval/{name} {'blocked' if want else 'passed'}"] = (t, embed(t, args.cache), want)
    extra["issue 10 sentences passed"] = (ISSUE_SENTENCES, embed(ISSUE_SENTENCES, args.cache), False)
    functional = read_eval("guardrail_functional.jsonl")
    results, shipped = [], None
    if args.baseline:
        results.append(measure("previous model (MiniLM head + profanity-check)",
                               lambda t, v: old_scores(args.baseline, t, v), rows, vectors, extra))
    if args.previous:
        previous = EmbeddedModel(args.previous)
        results.append(measure("previous shipped", lambda t, v: previous.probabilities(t, v, encode), rows, vectors,
                               extra))
    for name, use in candidates.items():
        model = fit(rows, vectors, grams, use)
        s = raw_scores(model, vectors, grams)
        thresholds = choose_thresholds(s, rows)
        packed = pack(model, thresholds)
        with tempfile.TemporaryDirectory() as tmp:
            np.savez_compressed(Path(tmp) / "w.npz", **packed)
            inference = EmbeddedModel(Path(tmp) / "w.npz")  # the package's own scoring code
        results.append(measure(name, lambda t, v: inference.probabilities(t, v, encode), rows, vectors, extra))
        print(f"{name}: thresholds " + ", ".join(f"{l} {t:.3f}" for l, t in zip(LABELS, thresholds)))
        if use == "both":
            shipped = (packed, inference)
    print("\n| held-out measure | " + " | ".join(r["name"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for key in results[0]:
        if key != "name":
            print(f"| {key} | " + " | ".join(fmt(r[key]) for r in results) + " |")

    packed, inference = shipped
    if functional and args.report:
        ft = [c["text"] for c in functional]
        blocked = inference.probabilities(ft, embed(ft, args.cache), encode).max(axis=1) >= 0.5
        print("\n| functionality | side | n | correct |\n|---|---|---|---|")
        for f in dict.fromkeys(c["functionality"] for c in functional):
            idx = [i for i, c in enumerate(functional) if c["functionality"] == f]
            good = [blocked[i] == (functional[i]["label"] == "block") for i in idx]
            print(f"| {f} | {functional[idx[0]]['label']} | {len(idx)} | {np.mean(good):.2f} |")
    if args.report:
        iv = embed(ISSUE_SENTENCES, args.cache)
        for text, p in zip(ISSUE_SENTENCES, inference.probabilities(ISSUE_SENTENCES, iv, encode)):
            print(f"  {p.max():.2f} {text}")
    target = args.out / "embedded.npz"
    if target.exists():  # reproducibility: the same data and code must give the same arrays as the shipped file
        with np.load(target, allow_pickle=False) as old:
            differ = [k for k in packed if k not in old or not np.array_equal(old[k], packed[k])]
        print(f"same arrays as {target}: " + ("yes" if not differ else f"NO ({', '.join(differ)} differ)"))
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / "embedded.npz", **packed)
        print(f"wrote {args.out / 'embedded.npz'} ({(args.out / 'embedded.npz').stat().st_size / 1e6:.1f} MB)")
    return {"results": results}


if __name__ == "__main__":
    main()
