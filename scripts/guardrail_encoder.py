"""Fine-tune the policy encoder of the embedded guardrail and export it to int8 ONNX (used by train_guardrail.py).

The encoder is the first `LAYERS` transformer layers of the packaged all-MiniLM-L6-v2, fine-tuned (its token
embeddings frozen) with a mean-pooled linear head of one logit per policy label, on the *normalised* text
(`guardrail_embedded.normalize`: leetspeak and spaced letters mapped back). The exported graph starts after the
embedding layer, so the package ships only the fine-tuned layers (int8, a few MB): at inference the token
embeddings come from the packaged MiniLM's own weights (`guardrail_embedded.TokenEmbeddings`).
Needs torch and transformers (dependencies of the project); CPU only, deterministic for a seed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

LAYERS = 3
EPOCHS = 4
LR = 5e-5
BATCH = 32
MAX_LENGTH = 64  # training only: longer texts are cut (inference runs the whole text, up to 256 tokens)
DAVIDSON_PER_EPOCH = 4000  # a fresh sample of the Davidson training rows each epoch, weighted up to the whole
PUBLIC_PER_EPOCH = 2500  # likewise for the public hate sets (ToxiGen annotated and seeds, Latent Hatred, HatemojiBuild)


def _torch():
    import torch

    return torch


def build(layers: int = LAYERS, n_labels: int = 4, seed: int = 0):
    """MiniLM's embeddings + first `layers` layers (eager attention, exportable) + a linear head per label."""
    torch = _torch()
    from transformers import AutoModel, AutoTokenizer

    from chatbot_model.retrieval.embedder import embedded_model_path

    torch.manual_seed(seed)
    path = embedded_model_path()
    base = AutoModel.from_pretrained(path, attn_implementation="eager")
    base.encoder.layer = base.encoder.layer[:layers]
    base.config.num_hidden_layers = layers
    for p in base.embeddings.parameters():
        p.requires_grad = False

    class Body(torch.nn.Module):
        """Token embeddings (the `hidden` input) -> layers -> masked mean -> one logit per label."""

        def __init__(self):
            super().__init__()
            self.layers = base.encoder.layer
            self.head = torch.nn.Linear(base.config.hidden_size, n_labels)

        def forward(self, hidden, mask):
            additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * -1e4
            for layer in self.layers:
                out = layer(hidden, attention_mask=additive)
                hidden = out[0] if isinstance(out, tuple) else out
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = base.embeddings
            self.body = Body()

        def forward(self, ids, mask):
            return self.body(self.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids)), mask)

    net = Net()
    net.tokenizer = AutoTokenizer.from_pretrained(path)
    return net


def _batch(net, texts: list[str], max_length: int):
    b = net.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def train(net, texts: list[str], Y: np.ndarray, M: np.ndarray, W: np.ndarray, davidson: np.ndarray,
          public: np.ndarray | None = None, *, epochs: int = EPOCHS, seed: int = 0, log=print):
    """Masked, weighted binary cross-entropy per label. `Y`, `M`: (n, labels) targets and which labels a row
    teaches; `W`: row weights; `davidson`, `public`: boolean rows sampled DAVIDSON_PER_EPOCH and PUBLIC_PER_EPOCH
    per epoch (each sample weighted up to its whole pool)."""
    torch = _torch()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pos_weight = np.ones(Y.shape[1], np.float32)  # positives weigh at least a quarter of the negatives
    for j in range(Y.shape[1]):
        pos, neg = W[(M[:, j] == 1) & (Y[:, j] == 1)].sum(), W[(M[:, j] == 1) & (Y[:, j] == 0)].sum()
        pos_weight[j] = max(1.0, 0.25 * neg / max(pos, 1e-9))
    public = np.zeros_like(davidson) if public is None else public
    dav, pub, other = np.flatnonzero(davidson), np.flatnonzero(public), np.flatnonzero(~davidson & ~public)
    per_epoch, per_epoch_public = min(DAVIDSON_PER_EPOCH, len(dav)), min(PUBLIC_PER_EPOCH, len(pub))
    scale = np.where(davidson, len(dav) / max(per_epoch, 1), 1.0) / W[other].mean()
    scale = np.where(public, len(pub) / max(per_epoch_public, 1) / W[other].mean(), scale)
    steps = epochs * ((len(other) + per_epoch + per_epoch_public + BATCH - 1) // BATCH)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps + 1, pct_start=0.1,
                                                anneal_strategy="linear")
    net.train()
    for epoch in range(epochs):
        started, total = time.perf_counter(), 0.0
        order = np.concatenate([other, rng.choice(dav, per_epoch, replace=False)] +
                               ([rng.choice(pub, per_epoch_public, replace=False)] if len(pub) else []))
        rng.shuffle(order)
        for start in range(0, len(order), BATCH):
            b = order[start:start + BATCH]
            logits = net(*_batch(net, [texts[i] for i in b], MAX_LENGTH))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.tensor(Y[b]), reduction="none", pos_weight=torch.tensor(pos_weight))
            w = torch.tensor(M[b] * (W[b] * scale[b])[:, None], dtype=torch.float32)
            loss = (loss * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        log(f"policy encoder epoch {epoch + 1}/{epochs}: loss {total:.2f} ({time.perf_counter() - started:.0f} s)")
    net.eval()
    return net


def export(net, target: Path) -> Path:
    """The fine-tuned layers and head as int8 ONNX (`hidden` float32 [b, n, 384], `mask` int64 [b, n] ->
    `logits` float32 [b, labels]); MatMul weights quantized per channel."""
    torch = _torch()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "encoder.onnx"
        hidden, mask = torch.randn(2, 7, net.body.head.in_features), torch.ones(2, 7, dtype=torch.int64)
        torch.onnx.export(net.body, (hidden, mask), str(fp32), input_names=["hidden", "mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"hidden": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                                        "logits": {0: "batch"}})
        target.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(fp32), str(target), per_channel=True, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
    return target
