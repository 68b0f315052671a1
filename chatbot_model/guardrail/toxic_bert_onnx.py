"""toxic-bert (or any local sequence classifier) run by ONNX Runtime: the guardrail's fast path when an
export of the model is cached (`guardrail.export_toxic_bert_onnx` makes one; needs torch once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chatbot_model.retrieval.embedder import default_threads, onnx_session, run_batched
from chatbot_model.retrieval.onnx_export import ONNX_FILE, export_meta, onnx_model_dir


class OnnxTextClassifier:
    """A sequence classifier (e.g. toxic-bert) run by ONNX Runtime: `probabilities(texts)` -> sigmoid of the
    logits, (n, labels). Same truncation as the transformers pipeline (`truncation=True`: the model's max length)."""

    tokens_per_run = 4096

    def __init__(self, model_dir: str | Path, *, cache_dir: str | Path | None = None, threads: int = 0,
                 export: bool = True):
        from tokenizers import Tokenizer

        self.directory = onnx_model_dir(str(model_dir), cache_dir, export=export, head="logits")
        meta = export_meta(self.directory)
        self.labels = tuple(meta["labels"])
        self.threads = threads or default_threads()
        self._session = onnx_session(self.directory / ONNX_FILE, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def probabilities(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        return run_batched(self, list(texts), batch_size, len(self.labels), self._logits)

    def _logits(self, feeds: dict) -> np.ndarray:
        logits = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
