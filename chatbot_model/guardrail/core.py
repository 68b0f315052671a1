"""Toxicity guardrail: scores text with a pluggable classifier; unsafe when any label >= the threshold.

Backends (`CLASSIFIERS`): `toxic-bert` (the transformers model unitary/toxic-bert, six multi-label sigmoid
scores) and `embedded` (offline: one score per policy label - hate, threat, insult, sexual_minors - from a
fine-tuned 3-layer MiniLM policy encoder (int8 ONNX) and optional linear heads; `guardrail_embedded.py`, weights in
`guardrail_data/embedded.npz`, trained by `scripts/train_guardrail.py`, policy and comparison in
docs/guardrail.md). `auto` uses toxic-bert when it loads, else the embedded classifier.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar
from urllib.parse import urlparse

import numpy as np

from chatbot_model.config import Settings
from chatbot_model.errors import ConfigError, InvalidInput, unknown_name
from chatbot_model.guardrail.embedded import CACHED_TEXTS, load_model
from chatbot_model.guardrail.stated_hatred import states_hatred
from chatbot_model.guardrail.toxic_bert_onnx import OnnxTextClassifier
from chatbot_model.providers import runner
from chatbot_model.providers.breaker import CircuitBreaker
from chatbot_model.providers.deadline import SYSTEM_CLOCK
from chatbot_model.retrieval.embedder import get_embedder
from chatbot_model.retrieval.onnx_export import onnx_model_dir

log = logging.getLogger(__name__)

STATED_HATRED = "stated_hatred"  # the label of `states_hatred`
SAFE_REPLY = (
    "I can't help with that request. Please rephrase it respectfully and without harmful content, "
    "and I'll be glad to help with your question."
)
DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_WEIGHTS = DATA_DIR / "embedded.npz"
TOXIC_BERT_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
HOW_TO_GET_TOXIC_BERT = (
    "download unitary/toxic-bert once with `huggingface-cli download unitary/toxic-bert` "
    "(or `hf download unitary/toxic-bert`) or set CHATBOT_TOXIC_BERT_MODEL to a local directory"
)


@dataclass(frozen=True)
class GuardrailResult:
    """The verdict on one text: every label's score, the labels at or above the threshold, the backend."""

    safe: bool
    scores: dict[str, float]
    flagged: dict[str, float]
    backend: str

    def to_dict(self) -> dict:
        return {
            "safe": self.safe,
            "backend": self.backend,
            "flagged": {k: round(v, 4) for k, v in self.flagged.items()},
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
        }


class Classifier(ABC):
    """Scores texts in [0, 1] per label; the threshold decision lives in `Guardrail`."""

    name: ClassVar[str]
    labels: tuple[str, ...]

    @abstractmethod
    def scores(self, texts: list[str], vectors: np.ndarray | None = None) -> list[dict[str, float]]:
        """One {label: score} per text. `vectors`: optional normalised all-MiniLM-L6-v2 embeddings of `texts`."""


class ToxicBert(Classifier):
    """The transformers text-classification pipeline of unitary/toxic-bert (hub id or local directory)."""

    name = "toxic-bert"
    labels = TOXIC_BERT_LABELS

    def __init__(self, model: str = "unitary/toxic-bert", pipeline=None, onnx=None):
        self.model = model
        # ONNX Runtime when an export of this model is cached (`export_toxic_bert_onnx`): same scores, ~2x faster
        self._onnx = onnx if onnx is not None or pipeline is not None else _cached_onnx(model)
        self._pipe = pipeline if pipeline is not None or self._onnx is not None else self._load(model)
        id2label = getattr(getattr(self._pipe, "model", None), "config", None)
        id2label = getattr(id2label, "id2label", None)
        if self._onnx is not None:
            self.labels = tuple(self._onnx.labels)
        elif id2label:
            self.labels = tuple(id2label[i] for i in sorted(id2label))

    @staticmethod
    def _load(model: str):
        source = _resolve(model)
        try:
            from transformers import pipeline

            # toxic-bert is multi-label: sigmoid per label, all labels (top_k=None), CPU
            return pipeline("text-classification", model=source, tokenizer=source, top_k=None,
                            function_to_apply="sigmoid", device=-1)
        except Exception as exc:
            raise ConfigError(f"cannot load toxic-bert from {model!r} ({exc.__class__.__name__}: {exc}); "
                              f"{HOW_TO_GET_TOXIC_BERT}") from None

    def scores(self, texts: list[str], vectors: np.ndarray | None = None) -> list[dict[str, float]]:
        if not texts:
            return []
        if self._onnx is not None:
            return [dict(zip(self.labels, map(float, row))) for row in self._onnx.probabilities(list(texts))]
        rows = self._pipe(list(texts), truncation=True, batch_size=16)
        by_label = [{d["label"]: float(d["score"]) for d in row} for row in rows]
        return [{label: scores[label] for label in self.labels if label in scores} | scores for scores in by_label]


def _local_dir(model: str) -> Path | None:
    """The directory of `model`: itself when it is one, else its snapshot in the Hugging Face cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _cached_onnx(model: str):
    """An `OnnxTextClassifier` over a cached export of `model`, or None (then the transformers pipeline runs)."""
    directory = _local_dir(model)
    if directory is None:
        return None
    try:
        return OnnxTextClassifier(directory, export=False)
    except (ImportError, ConfigError, OSError, KeyError, ValueError):
        return None


def export_toxic_bert_onnx(model: str = "unitary/toxic-bert") -> Path:
    """Export toxic-bert (local dir or cached hub id) to ONNX once (needs torch); later loads use it."""

    directory = _local_dir(model)
    if directory is None:
        raise ConfigError(f"toxic-bert {model!r} is not available locally; {HOW_TO_GET_TOXIC_BERT}")
    return onnx_model_dir(str(directory), head="logits")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _resolve(model: str) -> str:
    """A local directory for `model` (as given, or its Hugging Face cache snapshot), else the hub id when the hub
    is reachable; fails fast, before importing torch, when it is neither cached nor downloadable."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a valid repo id
        raise ConfigError(f"toxic-bert {model!r} is neither a local directory nor a hub id; "
                          f"{HOW_TO_GET_TOXIC_BERT}") from None
    if isinstance(cached, str):
        return str(Path(cached).parent)  # the cached snapshot: loads with no network call
    if _offline():
        raise ConfigError(f"toxic-bert {model!r} is not a local directory nor in the Hugging Face cache, and "
                          f"the hub is offline (HF_HUB_OFFLINE); {HOW_TO_GET_TOXIC_BERT}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as exc:
        raise ConfigError(f"toxic-bert {model!r} is not cached and the hub {endpoint.hostname} is unreachable "
                          f"({exc}); {HOW_TO_GET_TOXIC_BERT}") from None
    return model


class _ScoreMemory:
    """The scores of the CACHED_TEXTS most recently checked whole texts (bounded, thread-safe)."""

    def __init__(self):
        self._scores: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()
        self._claimed: set[str] = set()  # texts a warm-up is scoring now

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, text: str) -> bool:
        return text in self._scores

    def recall(self, texts: list[str]) -> dict[str, list[float]]:
        with self._lock:
            return {t: self._scores[t] for t in dict.fromkeys(texts) if t in self._scores}

    def claim(self, texts: list[str]) -> list[str]:
        """The texts neither remembered nor being scored by another warm-up, now claimed by the caller (who
        `release`s them once scored)."""
        with self._lock:
            mine = [t for t in dict.fromkeys(texts) if t not in self._scores and t not in self._claimed]
            self._claimed.update(mine)
            return mine

    def release(self, texts: list[str]) -> None:
        with self._lock:
            self._claimed.difference_update(texts)

    def keep(self, scores: dict[str, list[float]]) -> None:
        with self._lock:
            for text, row in scores.items():
                self._scores[text] = row
                self._scores.move_to_end(text)
            while len(self._scores) > CACHED_TEXTS:
                self._scores.popitem(last=False)


_memories: "weakref.WeakKeyDictionary[object, dict[int, _ScoreMemory]]" = weakref.WeakKeyDictionary()
_memories_lock = threading.Lock()


def _scores_of(model, embedder) -> _ScoreMemory:
    """One memory per loaded weights file and embedder in the process, shared by every `Embedded` using both (a
    text's score depends on nothing else): a second service or a newly loaded model version with the same weights,
    such as an alias rollout's, finds the knowledge base's sentences already scored."""
    with _memories_lock:
        return _memories.setdefault(embedder, {}).setdefault(id(model), _ScoreMemory())  # models are never unloaded


WARM_BATCH = 8  # knowledge-base sentences scored per call while warming (more is not cheaper per sentence)


class Embedded(Classifier):
    """Offline default: the policy encoder, and linear heads on the MiniLM vector and on character n-grams of the
    normalised text (`chatbot_model.guardrail.embedded`), rescaled so that 0.5 is each label's operating point; one
    loaded model per weights file and process. The policy and the measurements are in docs/guardrail.md."""

    name = "embedded"
    labels = ("hate", "threat", "insult", "sexual_minors")

    def __init__(self, weights: str | Path = EMBEDDED_WEIGHTS, embedder=None):
        self.model = load_model(str(weights))
        self.labels = self.model.labels
        self._embedder = embedder

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = get_embedder("")
        return self._embedder

    def warm(self, chunks) -> None:
        """Score the knowledge base's sentences ahead of the output checks that cite them (the model remembers its
        recent texts); run by the service in a background thread."""

        sentences = list(dict.fromkeys(s for chunk in chunks for s in chunk.sentences))[:CACHED_TEXTS // 2]
        # each sentence is scored by one warm-up only: services built together (or a version loaded during a
        # warm-up) would otherwise all score the same first sentences at once
        memory = _scores_of(self.model, self.embedder)
        mine = memory.claim(sentences)
        try:
            for start in range(0, len(mine), WARM_BATCH):
                if not threading.main_thread().is_alive():  # never holds the process's exit
                    return
                self.scores(mine[start:start + WARM_BATCH])
        except RuntimeError:  # the interpreter shuts down under a batch: its thread pools take no more work
            return
        finally:
            memory.release(mine)

    def scores(self, texts: list[str], vectors: np.ndarray | None = None) -> list[dict[str, float]]:
        """Each distinct text is scored once while it stays among the CACHED_TEXTS most recent: a score depends
        on the text alone (`vectors` are its embeddings), and answers repeat (the knowledge base's sentences,
        the "not covered" reply)."""
        if not texts:
            return []
        memory = _scores_of(self.model, self.embedder)
        known = memory.recall(texts)
        first: dict[str, int] = {}  # each text not known yet -> its first row
        for i, text in enumerate(texts):
            if text not in known:
                first.setdefault(text, i)
        if first:
            missing = list(first)
            rows = None if vectors is None else np.asarray(vectors)[list(first.values())]
            if rows is None and self.model.needs_vectors:
                rows = self.embedder.encode(missing)
            known.update(zip(missing, self._probabilities(missing, rows)))
        memory.keep(known)
        return [dict(zip(self.labels, known[t])) for t in texts]

    def _probabilities(self, texts: list[str], vectors: np.ndarray | None) -> list[list[float]]:
        return self.model.probabilities(texts, vectors, encode=self.embedder.encode).tolist()


# OpenAI moderation categories behind each policy label (docs/guardrail.md, "Policy"): a label's score is the
# highest of its categories. "violence" (depictions, history of wars) and "sexual" (adult content) are not in the
# policy and stay out.
MODERATION_LABELS = {
    "hate": ("hate", "hate/threatening"),
    "threat": ("harassment/threatening", "hate/threatening", "illicit/violent"),
    "insult": ("harassment",),
    "sexual_minors": ("sexual/minors",),
}


class OpenAIModeration(Classifier):
    """OpenAI's moderation endpoint through the `openai` SDK (opt-in: CHATBOT_GUARDRAIL_BACKEND=openai-moderation,
    needs OPENAI_API_KEY; OPENAI_BASE_URL is honoured). Categories map to the policy labels (`MODERATION_LABELS`).
    Each call has a total time limit (CHATBOT_GUARDRAIL_MODERATION_TIMEOUT_S) and goes through a circuit breaker
    (the providers' settings); without a key, when the circuit is open, or on any failure, the `fallback`
    classifier (the embedded one) scores the texts and its name is the verdict's backend."""

    name = "openai-moderation"
    labels = tuple(MODERATION_LABELS)
    key_env_var = "OPENAI_API_KEY"

    def __init__(self, settings: Settings, fallback: Classifier | None = None, client=None, clock=None):
        self.settings = settings
        self.fallback = fallback if fallback is not None else Embedded()
        self._client = client
        self.breaker = CircuitBreaker(self.name, failures=settings.breaker_failures, window_s=settings.breaker_window_s,
                                      cooldown_s=settings.breaker_cooldown_s, clock=clock or SYSTEM_CLOCK)

    def _key(self) -> str | None:
        secret = self.settings.openai_api_key
        return (secret.get_secret_value() if secret is not None else None) or None

    @property
    def client(self):
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise ConfigError("the openai-moderation guardrail needs the openai SDK: pip install openai") from None
            self._client = openai.AsyncOpenAI(api_key=self._key(), base_url=self.settings.openai_base_url or None,
                                              timeout=self.settings.guardrail_moderation_timeout_s, max_retries=0)
        return self._client

    def scores(self, texts: list[str], vectors: np.ndarray | None = None) -> list[dict[str, float]]:
        return self.scored(texts, vectors)[0]

    def scored(self, texts: list[str], vectors: np.ndarray | None = None) -> tuple[list[dict[str, float]], str]:
        if not texts:
            return [], self.name
        why = f"{self.key_env_var} is not set" if self._client is None and not self._key() else \
            self.breaker.admit(self._key())
        if why is None:
            try:
                results = self._moderate(list(texts))
                self.breaker.success()
                return results, self.name
            except Exception as exc:  # noqa: BLE001 - every failure falls back; the breaker counts it
                why = self._judge(exc)
        log.warning("guardrail backend %s unavailable (%s): the %s classifier decides", self.name, why,
                    self.fallback.name)
        return self.fallback.scores(texts, vectors), self.fallback.name

    def _moderate(self, texts: list[str]) -> list[dict[str, float]]:
        client = self.client  # made (the SDK imported) before the clock starts
        response = runner.run(lambda: client.moderations.create(
            model=self.settings.guardrail_moderation_model, input=texts), self.settings.guardrail_moderation_timeout_s)
        results = list(response.results)
        if len(results) != len(texts):
            raise ValueError(f"the moderation endpoint returned {len(results)} results for {len(texts)} texts")
        out = []
        for result in results:
            scores = result.category_scores.model_dump(by_alias=True)
            out.append({label: float(max(scores.get(c) or 0.0 for c in categories))
                        for label, categories in MODERATION_LABELS.items()})
        return out

    def _judge(self, exc: Exception) -> str:
        """Count the failure in the breaker (401/403 disable it until the key changes); the reason, for the log."""
        status = getattr(exc, "status_code", None)
        if isinstance(exc, TimeoutError):
            why = f"timeout after {self.settings.guardrail_moderation_timeout_s:g} s"
        else:
            why = f"HTTP {status}" if status else type(exc).__name__
        if status in (401, 403):
            self.breaker.disable(f"auth failed ({status})", self._key())
        elif status is None or status == 429 or status >= 500:
            self.breaker.failure(why)
        return why


CLASSIFIERS: dict[str, Callable[[Settings], Classifier]] = {
    "toxic-bert": lambda settings: ToxicBert(settings.toxic_bert_model),
    "embedded": lambda settings: Embedded(),
    "openai-moderation": lambda settings: OpenAIModeration(settings),
}


class Guardrail:
    """Applies one classifier and the threshold rule: unsafe when any label's score >= `threshold`. A text that
    states hatred of a protected group plainly (`stated_hatred.states_hatred`) also gets the label
    `STATED_HATRED` at 1.0, whatever the backend."""

    def __init__(self, classifier: Classifier, threshold: float = 0.5):
        if not 0 < threshold < 1:
            raise ConfigError(f"guardrail threshold must be in (0, 1), got {threshold}")
        self.classifier = classifier
        self.threshold = float(threshold)

    @property
    def backend(self) -> str:
        return self.classifier.name

    def check(self, text: str, vector=None) -> GuardrailResult:
        if not isinstance(text, str):
            raise InvalidInput(f"the guardrail checks text: expected a string, got {type(text).__name__}")
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.check_many([text], vectors)[0]

    def check_many(self, texts: list[str], vectors=None) -> list[GuardrailResult]:
        if isinstance(texts, str):
            raise InvalidInput("the guardrail checks a list of strings, got one string (use check)")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInput("the guardrail checks a list of strings")
        if not texts:
            return []
        if vectors is not None and len(vectors) != len(texts):
            raise InvalidInput(f"got {len(vectors)} vectors for {len(texts)} texts")
        scored = getattr(self.classifier, "scored", None)  # a classifier with a fallback names who decided
        scores, backend = scored(texts, vectors) if scored else (self.classifier.scores(texts, vectors), self.backend)
        return [self._verdict({**s, STATED_HATRED: 1.0} if states_hatred(t) else s, backend)
                for t, s in zip(texts, scores)]

    def combine(self, parts: list[GuardrailResult]) -> GuardrailResult:
        """The verdict on a text made of `parts`: each label's highest score (unsafe when any part is)."""
        labels = dict.fromkeys(label for p in parts for label in p.scores)
        scores = {label: max(p.scores.get(label, 0.0) for p in parts) for label in labels}
        return self._verdict(scores, parts[0].backend)

    def _verdict(self, scores: dict[str, float], backend: str | None = None) -> GuardrailResult:
        flagged = {label: s for label, s in scores.items() if s >= self.threshold}
        return GuardrailResult(safe=not flagged, scores=scores, flagged=flagged, backend=backend or self.backend)


def _load_with_timeout(factory: Callable[[], Classifier], timeout_s: float, what: str) -> Classifier:
    """Run `factory` in a daemon thread; raise TimeoutError when it takes longer than `timeout_s`."""
    box: dict = {}

    def run():
        try:
            box["value"] = factory()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="guardrail-load", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"loading {what} took longer than {timeout_s:g} s (CHATBOT_GUARDRAIL_LOAD_TIMEOUT_S)")
    if "error" in box:
        raise box["error"]
    return box["value"]


_AUTO_REASONS_LOGGED: set[str] = set()


def _auto(settings: Settings) -> Classifier:
    started = time.perf_counter()
    try:
        classifier = _load_with_timeout(lambda: CLASSIFIERS["toxic-bert"](settings), settings.guardrail_load_timeout_s,
                                        f"toxic-bert {settings.toxic_bert_model!r}")
    except Exception as exc:
        reason = str(exc).split("; ")[0]  # the fix is said once, below
        if reason not in _AUTO_REASONS_LOGGED:  # once per process, at INFO: `llmops-chatbot doctor` explains it
            _AUTO_REASONS_LOGGED.add(reason)
            log.info("guardrail backend: embedded, because %s; to use toxic-bert, %s", reason, HOW_TO_GET_TOXIC_BERT)
        classifier = CLASSIFIERS["embedded"](settings)
        classifier.chosen_because = f"auto: {reason}"  # /health shows it
        return classifier
    log.info("guardrail backend: toxic-bert (%s, loaded in %.1f s)", settings.toxic_bert_model,
             time.perf_counter() - started)
    return classifier


def build_guardrail(settings: Settings) -> Guardrail:
    """The guardrail named by `settings.guardrail_backend` ("auto" or a key of `CLASSIFIERS`)."""
    name = settings.guardrail_backend
    if name == "auto":
        classifier = _auto(settings)
    elif name in CLASSIFIERS:
        classifier = CLASSIFIERS[name](settings)
    else:
        raise unknown_name("guardrail backend", name, ["auto", *CLASSIFIERS])
    return Guardrail(classifier, settings.guardrail_threshold)
