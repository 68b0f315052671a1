"""Train the embedded guardrail (a fine-tuned policy encoder + per-label linear heads) and measure it.

    python scripts/train_guardrail.py --data-dir DIR [--report] [--dry-run] [--baseline OLD.npz] [--previous PREV.npz]

--data-dir DIR is a folder holding davidson_labeled_data.csv, toxigen_statements.csv and
nq_open_efficientqa_dev.jsonl, directly or in subfolders (public sets; see docs/guardrail.md for their sources and
licences). They are not part of this repository. Hand-written data ships with the script:
scripts/guardrail_supplement.jsonl (policy cases: identity statements, negations, counter-speech, dark-but-benign
questions, threats, insults, obfuscated spellings, ...) and scripts/guardrail_benign.py (generated harmless chat,
code and documentation text).

Protocol (seed 0, deterministic on one machine): every source is split by text - the supplement by template
group - into train / validation / test *before* anything is fitted (`split_of`). The policy encoder
(`guardrail_encoder.py`, ~8 minutes) and the linear heads are fitted on train only; the encoder's shares in the
sum and each label's threshold are chosen on validation only (`choose_thresholds`: benign refusals first - the
guardrail may refuse at most 0.3% of the validation questions and 5% of the validation pass-side statements);
every reported number is on test splits or on sets never used for fitting or choosing (artifacts/eval/*). The
files written to chatbot_model/guardrail_data/ (embedded.npz, policy_encoder.onnx) are the model this command
fits, scored in the report through the package's own inference code. Embeddings and the fine-tuned encoder are
cached under --cache (a temporary directory by default).
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

import guardrail_encoder  # noqa: E402
from chatbot_model.guardrail.embedded import (ENCODER_FILE, FEATURES, EmbeddedModel, PolicyEncoder,  # noqa: E402
                                              TokenEmbeddings, char_features, normalize)
from guardrail_benign import benign_corpus, split_benign  # noqa: E402
from guardrail_templates import template_rows  # noqa: E402
from near_copies import all_eval_texts, near_copies  # noqa: E402

SEED = 0
LABELS = ("hate", "threat", "insult", "sexual_minors")
SUPPLEMENT = ROOT / "scripts" / "guardrail_supplement.jsonl"
FILES = ("davidson_labeled_data.csv", "toxigen_statements.csv", "nq_open_efficientqa_dev.jsonl")
SPLITS = {"davidson": (0.7, 0.8), "default": (0.6, 0.8)}  # cumulative fractions: train < a <= validation < b
WEIGHTS = {"davidson": 1.0, "toxigen": 10.0, "nq": 2.0, "supplement": 20.0, "templates": 5.0, "benign": 2.0,
           "obfuscated": 10.0}
C = 4.0  # inverse L2 strength of each head
MAX_QUESTION_FPR = 0.003  # any label, on validation questions
MAX_PASS_FPR = 0.05  # any label, on each source's validation pass-side statements (ToxiGen benign; supplement pass)
ENCODER_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the encoder's share in the summed logits; chosen on validation
# the hate label's MiniLM head (`fit_hate_vector_head`): row weights per source and C, the best validation figure
# of the settings tried (C 1 or 4; supplement and templates 0.3 or 1; docs/guardrail.md)
HATE_VECTOR_WEIGHTS = {"toxigen": 1.0, "supplement": 0.3, "templates": 0.3}
C_HATE = 1.0
IDENTITY_SENTENCES = [  # identity sentences the previous model refused: all must pass
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


def near_copy_clusters(texts: list[str]) -> dict[str, str]:
    """Each text -> the first text of its cluster, clusters being linked by near copies (`near_copies`)."""
    parent = {t: t for t in texts}

    def root(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for a, b, _ in near_copies(texts, texts):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb, key=texts.index)] = min(ra, rb, key=texts.index)
    return {t: root(t) for t in texts}


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
    statements = tox["text"].astype(str).tolist()
    cluster = near_copy_clusters(statements)  # rewordings of one statement go to the same split
    for text, label in zip(statements, tox["label"]):
        add(text, "toxigen", ("hate",) if label == "hate" else (), ("hate",) if label == "hate" else LABELS, label,
            key=text_key(cluster[text]))
        rows[-1]["cluster"] = cluster[text]
    for line in path[FILES[2]].read_text().splitlines():
        if line.strip():
            add(json.loads(line)["question"], "nq", (), LABELS, "question")
    for line in SUPPLEMENT.read_text().splitlines():
        r = json.loads(line)
        add(r["text"], "supplement", r["labels"], LABELS, r["category"], key=r["group"])
    for r in template_rows(all_eval_texts() + IDENTITY_SENTENCES):
        add(r["text"], "templates", r["labels"], LABELS, r["category"], key=r["group"])
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
    from chatbot_model.retrieval.embedder import get_embedder

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


def fit_hate_vector_head(rows: list[dict], vectors: np.ndarray, model: dict) -> dict:
    """`model` with its hate head replaced by one on the MiniLM vector alone, fitted on the statements that teach
    implicit hate (HATE_VECTOR_WEIGHTS: ToxiGen's hateful and benign statements about the same groups weigh
    most). Hate without strong words is what the policy encoder misses most; in the joint heads these 364
    statements are outweighed by the hand-written and generated cases."""
    from sklearn.linear_model import LogisticRegression

    idx = [i for i, r in enumerate(rows) if r["split"] == "train" and r["source"] in HATE_VECTOR_WEIGHTS]
    head = LogisticRegression(C=C_HATE, max_iter=3000).fit(
        vectors[idx], [rows[i]["y"]["hate"] for i in idx],
        sample_weight=[HATE_VECTOR_WEIGHTS[rows[i]["source"]] for i in idx])
    model = {k: v.copy() for k, v in model.items()}
    model["w_minilm"][:, 0], model["w_char"][:, 0], model["bias"][0] = head.coef_[0], 0.0, head.intercept_[0]
    return model


def linear_logits(model: dict, vectors: np.ndarray, grams) -> np.ndarray:
    return np.asarray(vectors @ model["w_minilm"] + grams @ model["w_char"] + model["bias"], dtype=np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_encoder(rows: list[dict], cache: Path) -> Path:
    """The policy encoder fine-tuned on the training rows (normalised text), exported to int8 ONNX; cached by a
    hash of its training data and recipe."""
    train = [r for r in rows if r["split"] == "train"]
    recipe = json.dumps([[normalize(r["text"]), r["y"], r["mask"], r["weight"], r["source"]] for r in train] +
                        [guardrail_encoder.LAYERS, guardrail_encoder.EPOCHS, guardrail_encoder.LR,
                         guardrail_encoder.BATCH, guardrail_encoder.MAX_LENGTH,
                         guardrail_encoder.DAVIDSON_PER_EPOCH, SEED], sort_keys=True)
    file = cache / f"encoder-{hashlib.sha1(recipe.encode()).hexdigest()[:16]}.onnx"
    if file.exists():
        return file
    net = guardrail_encoder.build(n_labels=len(LABELS), seed=SEED)
    Y = np.array([[r["y"][l] for l in LABELS] for r in train], np.float32)
    M = np.array([[r["mask"][l] for l in LABELS] for r in train], np.float32)
    W = np.array([r["weight"] for r in train], np.float32)
    guardrail_encoder.train(net, [normalize(r["text"]) for r in train], Y, M, W,
                            np.array([r["source"] == "davidson" for r in train]), seed=SEED)
    return guardrail_encoder.export(net, file)


def choose_share(enc: np.ndarray, lin: np.ndarray, rows: list[dict]) -> tuple[np.ndarray, list[float]]:
    """The encoder's share per label - one for hate, one for the other labels, each from ENCODER_SHARES - and the
    thresholds that catch the most validation block-side rows (ToxiGen hateful, supplement and template block,
    averaged) under the refusal budgets of `choose_thresholds`. A smaller share must win by more than one
    validation row of the largest source (less is below what these sets can tell apart); otherwise the larger share
    stays: the encoder reads the frame (a negation, a quotation), the vector heads do not."""
    sources = ("toxigen", "supplement", "templates")
    val = [i for i, r in enumerate(rows) if r["split"] == "val" and any(r["y"].values()) and r["source"] in sources]
    tie = 1 / (len(sources) * max(sum(rows[i]["source"] == s for i in val) for s in sources))
    best = None
    for a_hate in sorted(ENCODER_SHARES, reverse=True):
        for a_rest in sorted(ENCODER_SHARES, reverse=True):
            a = np.array([a_hate] + [a_rest] * (len(LABELS) - 1))
            p = sigmoid(a * enc + (1 - a) * lin)
            t = choose_thresholds(p, rows)
            caught = np.mean([np.mean([(p[i] >= t).any() for i in val if rows[i]["source"] == s])
                              for s in sources])
            print(f"encoder share hate {a_hate:.2f}, other labels {a_rest:.2f}: validation block-side caught "
                  f"{caught:.4f}")
            if best is None or caught > best[0] + tie:
                best = (caught, a, t)
    return best[1], best[2]


def choose_thresholds(scores: np.ndarray, rows: list[dict]) -> list[float]:
    """Per-label thresholds, benign refusals first: the guardrail (any label) may refuse at most MAX_QUESTION_FPR of
    the validation questions (NQ) and at most MAX_PASS_FPR of each source's validation pass-side statements
    (ToxiGen benign; supplement pass). Each label gets the same share k of every budget (its threshold is the
    matching quantile of its own scores there); k is the largest of 1, 0.95, ... 0.05 at which the union of the
    labels meets all of them."""
    val = [i for i, r in enumerate(rows) if r["split"] == "val" and not any(r["y"].values())]
    pools = [(scores[[i for i in val if rows[i]["source"] == source]], budget)
             for source, budget in (("nq", MAX_QUESTION_FPR), ("toxigen", MAX_PASS_FPR), ("supplement", MAX_PASS_FPR))]
    for k in np.arange(1.0, 0.0, -0.05):
        t = np.array([min(max(*(np.quantile(pool[:, j], 1 - k * budget, method="higher") for pool, budget in pools),
                              0.05), 0.99) for j in range(scores.shape[1])]) + 1e-6
        if all((pool >= t).any(axis=1).mean() <= budget for pool, budget in pools):
            break
    return [float(x) for x in t]


def pack(model: dict, thresholds: list[float], share, encoder: Path, embeddings_sha256: str) -> dict:
    """The arrays of embedded.npz: the linear heads, the encoder's share per label and its file (by hash), and an
    offset per label that moves its threshold to 0.5."""
    t = np.array(thresholds)
    return {"labels": np.array(LABELS), "features": np.array(FEATURES),
            "w_minilm": model["w_minilm"].astype(np.float32), "w_char": model["w_char"].astype(np.float32),
            "bias": model["bias"].astype(np.float32), "offset": (-np.log(t / (1 - t))).astype(np.float32),
            "thresholds": t.astype(np.float32),
            "encoder_weight": np.broadcast_to(np.float32(share), (len(LABELS),)).astype(np.float32),
            "encoder_file": np.array(ENCODER_FILE),
            "encoder_sha256": np.array(hashlib.sha256(encoder.read_bytes()).hexdigest()),
            "embeddings_sha256": np.array(embeddings_sha256)}


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
    first = {}  # one statement per cluster of near copies (ToxiGen repeats some statements with small edits)
    for r, v in tg:
        first.setdefault(r["cluster"], (r, v))
    once = list(first.values())
    out["ToxiGen test, one statement per near-copy cluster: benign passed / hateful caught"] = (
        int(sum(v < 0.5 for r, v in once if not r["y"]["hate"])), sum(not r["y"]["hate"] for r, _ in once),
        int(sum(v >= 0.5 for r, v in once if r["y"]["hate"])), sum(r["y"]["hate"] for r, _ in once))
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
    tp = by["templates"]
    out["template test block caught"] = (int(sum(v >= 0.5 for r, v in tp if any(r["y"].values()))),
                                         sum(any(r["y"].values()) for r, _ in tp))
    out["template test pass passed"] = (int(sum(v < 0.5 for r, v in tp if not any(r["y"].values()))),
                                        sum(not any(r["y"].values()) for r, _ in tp))
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

    extra = {}
    for name, want in (("toxic.jsonl", True), ("benign.jsonl", False), ("retrieval.jsonl", False)):
        t = [r["question"] for r in read_eval(name)]
        extra[f"artifacts/eval/{name} {'blocked' if want else 'passed'}"] = (t, embed(t, args.cache), want)
    extra["identity sentences passed"] = (IDENTITY_SENTENCES, embed(IDENTITY_SENTENCES, args.cache), False)
    functional = read_eval("guardrail_functional.jsonl")
    results = []
    if args.baseline:
        results.append(measure("previous model (MiniLM head + profanity-check)",
                               lambda t, v: old_scores(args.baseline, t, v), rows, vectors, extra))
    if args.previous:
        previous = EmbeddedModel(args.previous)
        results.append(measure("previous shipped", lambda t, v: previous.probabilities(t, v, encode), rows, vectors,
                               extra))
    encoder = fit_encoder(rows, args.cache)
    linear = {use: fit(rows, vectors, grams, use) for use in (("minilm", "char", "both") if args.report else ("both",))}
    combined = fit_hate_vector_head(rows, vectors, linear["both"])
    lin = linear_logits(combined, vectors, grams)
    embeddings_sha256 = TokenEmbeddings().sha256  # the packaged MiniLM's token embeddings, read once
    enc = PolicyEncoder(encoder, hashlib.sha256(encoder.read_bytes()).hexdigest(),
                        embeddings_sha256).logits(texts, len(LABELS))
    share, thresholds = choose_share(enc, lin, rows)
    candidates = {"MiniLM heads": (linear.get("minilm"), 0.0), "char n-gram heads": (linear.get("char"), 0.0),
                  "MiniLM + char n-grams": (linear["both"], 0.0), "policy encoder": (linear["both"], 1.0),
                  f"policy encoder + linear heads, shares hate {share[0]:g} / others {share[1]:g} (shipped)":
                      (combined, share)}
    shipped = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, a) in candidates.items():
            if model is None or (not args.report and "shipped" not in name):
                continue
            if "shipped" in name:
                t = thresholds
            else:
                z = a * enc + (1 - a) * linear_logits(model, vectors, grams)
                t = choose_thresholds(sigmoid(z), rows)
            packed = pack(model, t, a, encoder, embeddings_sha256)
            np.savez_compressed(Path(tmp) / "embedded.npz", **packed)
            Path(tmp, ENCODER_FILE).write_bytes(encoder.read_bytes())
            inference = EmbeddedModel(Path(tmp) / "embedded.npz")  # the package's own scoring code
            results.append(measure(name, lambda t, v: inference.probabilities(t, v, encode), rows, vectors, extra))
            print(f"{name}: thresholds " + ", ".join(f"{l} {x:.3f}" for l, x in zip(LABELS, t)))
            if "shipped" in name:
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
        lowest = {}
        for f in dict.fromkeys(c["functionality"] for c in functional):
            idx = [i for i, c in enumerate(functional) if c["functionality"] == f]
            side = functional[idx[0]]["label"]
            good = np.mean([blocked[i] == (functional[i]["label"] == "block") for i in idx])
            lowest[side] = min(lowest.get(side, 1.0), good)
            print(f"| {f} | {side} | {len(idx)} | {good:.2f} |")
        print("lowest functionality: " + ", ".join(f"{k} side {v:.2f}" for k, v in lowest.items()))
    if args.report:
        iv = embed(IDENTITY_SENTENCES, args.cache)
        for text, p in zip(IDENTITY_SENTENCES, inference.probabilities(IDENTITY_SENTENCES, iv, encode)):
            print(f"  {p.max():.2f} {text}")
    target = args.out / "embedded.npz"
    if target.exists():  # reproducibility: the shipped files must be the model this command fits
        test = [i for i, r in enumerate(rows) if r["split"] == "test"]
        t, v = [texts[i] for i in test], vectors[test]
        try:
            new, old = inference.probabilities(t, v, encode), EmbeddedModel(target).probabilities(t, v, encode)
            diff, flips = float(np.abs(new - old).max()), int(((new >= 0.5).any(1) != (old >= 0.5).any(1)).sum())
            same = diff < 0.02 and flips <= len(test) // 1000
            print(f"same model as the shipped {target}: {'yes' if same else 'NO'} (on {len(test)} held-out texts: "
                  f"largest score difference {diff:.4f}, {flips} verdicts differ)")
        except Exception as exc:  # noqa: BLE001 - an older format or a broken file is a difference, said
            print(f"same model as the shipped {target}: NO ({exc})")
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / "embedded.npz", **packed)
        (args.out / ENCODER_FILE).write_bytes(encoder.read_bytes())
        size = sum((args.out / f).stat().st_size for f in ("embedded.npz", ENCODER_FILE)) / 1e6
        print(f"wrote {args.out / 'embedded.npz'} and {ENCODER_FILE} ({size:.1f} MB)")
    return {"results": results}


if __name__ == "__main__":
    main()
