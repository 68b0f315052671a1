"""The offline default guardrail classifier: linear heads, one per policy label, on two representations.

- the all-MiniLM-L6-v2 sentence vector of the raw text (reused from the query embedding when given), and
- hashed character n-grams (`char_wb`, 2-5) of the *normalised* text (`normalize`: lower case, accents and
  zero-width characters removed, leetspeak such as "w0rthless 1d1ot" mapped back to letters, spaced-out letters
  joined, long letter runs shortened), which catches obfuscated spellings the sentence vector misses.

score(label) = sigmoid(vector . W_minilm[label] + ngrams . W_char[label] + b[label]); each head's intercept is
shifted so that its chosen threshold maps to 0.5 (the `Guardrail` rule). A text that normalisation changes beyond
case and accents (an obfuscated spelling, rare in real traffic) is also scored from the vector of its normalised
form, and each label keeps the higher score: one extra embedding for those texts only. Weights are numpy arrays in
`guardrail_data/embedded.npz` (no pickle), trained by `scripts/train_guardrail.py`; see docs/guardrail.md.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

from chatbot_model.errors import ConfigError, InvalidInput

WEIGHTS = Path(__file__).resolve().parent / "guardrail_data" / "embedded.npz"
FEATURES = "char_wb-2-5-v1"  # the n-gram recipe; a weights file trained with another one is refused
N_FEATURES = 2**18
NGRAMS = (2, 5)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "€": "e", "£": "l", "¡": "i"})
_INNER_LEET = str.maketrans({"!": "i", "|": "i", "+": "t", "*": "", ".": "", "-": "", "_": ""})
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060\ufeff\u00ad]")
_SPACED = re.compile(r"(?<![\w@$])[a-z0-9@$]([ .\-_*])[a-z0-9@$](?:\1[a-z0-9@$])+(?![\w@$])")  # "i d i o t"
_RUNS = re.compile(r"([a-z])\1{2,}")
_TOKEN = re.compile(r"\S+")


def _unleet(token: str) -> str:
    """Map leetspeak inside a word: only tokens mixing letters with digits or symbols ("2024" stays)."""
    core = token.strip(".,;:!?\"'()[]")
    if not re.search(r"[a-z]", core) or not re.search(r"[0-9@$€£¡!|+*]", core):
        return token
    start = token.find(core)
    inner = core[0] + core[1:-1].translate(_INNER_LEET) + core[-1] if len(core) > 2 else core
    return token[:start] + inner.translate(_LEET) + token[start + len(core):]


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", _ZERO_WIDTH.sub("", text))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def normalize(text: str) -> str:
    """The text as the character n-gram model sees it (see the module docstring)."""
    text = _plain(text)
    text = _SPACED.sub(lambda m: m.group().replace(m.group(1), ""), text)
    text = _TOKEN.sub(lambda m: _unleet(m.group()), text)
    return _RUNS.sub(r"\1\1", text)


@lru_cache(maxsize=1)
def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="char_wb", ngram_range=NGRAMS, n_features=N_FEATURES, alternate_sign=False,
                             norm="l2", lowercase=False, dtype=np.float32)


def char_features(texts: list[str]):
    """Sparse (len(texts), N_FEATURES) l2-normalised hashed character n-grams of the normalised texts."""
    return _vectorizer().transform([normalize(t) for t in texts])


class EmbeddedModel:
    """The arrays of one weights file and the numpy arithmetic that scores with them."""

    def __init__(self, weights: str | Path = WEIGHTS):
        try:
            with np.load(weights, allow_pickle=False) as data:
                self.labels = tuple(str(x) for x in data["labels"])
                self.w_minilm = data["w_minilm"].astype(np.float32)
                self.w_char = data["w_char"].astype(np.float32)
                self.bias = data["bias"].astype(np.float32)
                features = str(data["features"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the embedded guardrail weights {str(weights)!r} ({exc}); "
                              "regenerate them with `python scripts/train_guardrail.py --data-dir DIR`") from None
        if features != FEATURES or self.w_char.shape != (N_FEATURES, len(self.labels)):
            raise ConfigError(f"the guardrail weights {str(weights)!r} were trained for features {features!r}, "
                              f"this code computes {FEATURES!r}; retrain with `python scripts/train_guardrail.py`")
        self.dimension = self.w_minilm.shape[0]

    def probabilities(self, texts: list[str], vectors: np.ndarray, encode=None) -> np.ndarray:
        """(len(texts), len(labels)) scores; 0.5 is each label's operating point. `encode(texts)`: normalised
        MiniLM vectors, used for the normalised form of obfuscated texts (skipped when None)."""
        scores = self._scores(texts, vectors)
        changed = [i for i, t in enumerate(texts) if normalize(t) != _plain(t)] if encode is not None else []
        if changed:
            forms = [normalize(texts[i]) for i in changed]
            scores[changed] = np.maximum(scores[changed], self._scores(forms, encode(forms)))
        return scores

    def _scores(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        if vectors.shape[1] != self.dimension:
            raise InvalidInput(f"guardrail vectors have dimension {vectors.shape[1]}, expected "
                               f"{self.dimension} (normalised all-MiniLM-L6-v2 embeddings)")
        grams = char_features(texts)
        z = vectors @ self.w_minilm + self.bias
        for row in range(len(texts)):
            lo, hi = grams.indptr[row], grams.indptr[row + 1]
            z[row] += grams.data[lo:hi] @ self.w_char[grams.indices[lo:hi]]
        return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
