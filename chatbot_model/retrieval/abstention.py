"""Is the question covered by the knowledge base? A small logistic regression over what retrieval saw.

One cosine is weak evidence: "use my own docs" scores low against *Indexing your own documents*, while "How do I
create an index in MySQL?" scores high against the FAISS page. The model looks at a few numbers of each
retrieval (`FEATURES`, computed in `rag.RAGPipeline.retrieve_vectors`):

| feature | what it is |
|---|---|
| `dense_best` | cosine of the best chunk |
| `lexical_coverage` | BM25 of the best chunk as a share of what a chunk holding every query word could score |
| `dense_margin` | best minus second-best document cosine |
| `agreement` | 1 when the dense and the lexical rankings put the same document first |
| `log_length` | log(1 + number of query words) |
| `known_share` | share of query words in the index vocabulary (after spelling correction) |
| `sentence_best` | best cosine with one sentence of the first three sources' documents (near their chunks) |

`p = sigmoid(w . x + b)`; covered when `p >= threshold`. Trained by `fit` (L2-regularised logistic regression,
Newton steps, balanced classes) on covered questions against off-topic ones; the threshold is then chosen on the
training questions (`choose_threshold`). The fitted model is a small dict (`to_dict`) held in the settings
(`abstain_model`, logged in model_settings.json), so a version answers with the model it was evaluated with.
`scripts/calibrate_abstention.py --docs PATH` refits it for other documents; docs/abstention.md.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from chatbot_model.retrieval.rag import split_sentences

FEATURES = ("dense_best", "lexical_coverage", "dense_margin", "agreement", "log_length", "known_share",
            "sentence_best")


@dataclass(frozen=True)
class AbstentionModel:
    weights: tuple[float, ...]
    bias: float
    threshold: float
    features: tuple[str, ...] = FEATURES

    @classmethod
    def from_dict(cls, data: dict) -> "AbstentionModel":
        features = tuple(data.get("features", FEATURES))
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != len(features) or set(features) - set(FEATURES):
            raise ValueError(f"abstention model: {len(weights)} weights for features {list(features)}; "
                             f"known features are {list(FEATURES)}")
        return cls(weights, float(data["bias"]), float(data["threshold"]), features)

    def to_dict(self) -> dict:
        return {"features": list(self.features), "weights": [round(w, 6) for w in self.weights],
                "bias": round(self.bias, 6), "threshold": round(self.threshold, 4)}

    def probability(self, features: dict[str, float]) -> float:
        """P(covered) for one retrieval's features."""
        z = self.bias + sum(w * float(features.get(name, 0.0)) for w, name in zip(self.weights, self.features))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def covered(self, features: dict[str, float]) -> bool:
        return self.probability(features) >= self.threshold


def matrix(rows: list[dict[str, float]], features: tuple[str, ...] = FEATURES) -> np.ndarray:
    return np.array([[float(r.get(name, 0.0)) for name in features] for r in rows], dtype=np.float64)


def fit(covered: list[dict[str, float]], offtopic: list[dict[str, float]], *, l2: float = 1.0,
        features: tuple[str, ...] = FEATURES, steps: int = 50) -> tuple[np.ndarray, float]:
    """(weights, bias) of a logistic regression, covered = 1; both classes weigh the same in total."""
    x = np.vstack([matrix(covered, features), matrix(offtopic, features)])
    y = np.r_[np.ones(len(covered)), np.zeros(len(offtopic))]
    sample = np.r_[np.full(len(covered), 0.5 / len(covered)), np.full(len(offtopic), 0.5 / len(offtopic))] * len(y)
    xb = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -50, 50)))
        gradient = xb.T @ (sample * (p - y)) + penalty * theta
        hessian = (xb * (sample * p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def choose_threshold(p_covered: np.ndarray, p_offtopic: np.ndarray, *, min_declined: float = 0.99) -> float:
    """The highest-answering threshold that still declines `min_declined` of the off-topic training questions:
    just above their (1 - min_declined) upper quantile, never below 0.5 (balanced classes: the neutral point),
    rounded to 0.01."""
    t = float(np.quantile(p_offtopic, min_declined)) + 1e-6 if len(p_offtopic) else 0.5
    return round(max(0.5, math.ceil(t * 100) / 100), 2)


def train(covered: list[dict[str, float]], offtopic: list[dict[str, float]], *, l2: float = 1.0,
          min_declined: float = 0.99, features: tuple[str, ...] = FEATURES) -> AbstentionModel:
    """Fit the regression and choose its threshold on the same training questions."""
    weights, bias = fit(covered, offtopic, l2=l2, features=features)
    model = AbstentionModel(tuple(float(w) for w in weights), bias, 0.5, tuple(features))
    p_off = np.array([model.probability(r) for r in offtopic])
    p_on = np.array([model.probability(r) for r in covered])
    return AbstentionModel(model.weights, bias, choose_threshold(p_on, p_off, min_declined=min_declined),
                           tuple(features))


def pseudo_questions(docs, *, per_document: int = 4, seed: int = 0) -> list[str]:
    """Covered questions made from the documents alone, for calibrating on a user's own knowledge base: each
    title in lower case, and `per_document` word windows (3 to 8 words) of random sentences of each document,
    the way people type fragments of what they read. Seeded: the same documents give the same questions."""
    rng = random.Random(seed)
    out = []
    for doc in docs:
        out.append(doc.title.lower())
        sentences = split_sentences(doc.text)
        for sentence in rng.sample(sentences, min(per_document, len(sentences))):
            words = sentence.split()
            n = rng.randint(3, 8)
            start = rng.randint(0, max(0, len(words) - n))
            out.append(" ".join(words[start:start + n]).lower().strip(".,;:"))
    return [q for q in out if q.strip()]
