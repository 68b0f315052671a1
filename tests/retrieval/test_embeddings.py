"""Embedders: the ONNX Runtime fast path computes the PyTorch vectors; choosing and sharing backends."""

import json

import numpy as np
import pytest

from chatbot_model.retrieval import embedder as embeddings

from chatbot_model.retrieval import onnx_export
from chatbot_model.config import load_settings
from chatbot_model.retrieval.embedder import EMBEDDED_MODEL, Embedder, OnnxEmbedder, get_embedder
from chatbot_model.errors import ConfigError

SENTENCES = [
    "How do I promote a model version to Production?",
    "MLflow aliases are mutable named references to a model version.",
    "The guardrail blocks toxic questions before any model is called, and it also checks every answer.",
    "FAISS",
    "A much longer passage about retrieval: " + "chunks are embedded once at index time and searched with "
    "an inner-product index, so the cosine similarity of normalised vectors ranks them. " * 6,
]


@pytest.fixture(scope="module")
def torch_vectors():
    return Embedder("").encode(SENTENCES)


@pytest.fixture(scope="module")
def onnx_embedder():
    return OnnxEmbedder("")  # exports into the user cache once (~15 s), then loads in well under a second


def test_onnx_vectors_equal_the_torch_ones(onnx_embedder, torch_vectors):
    vectors = onnx_embedder.encode(SENTENCES)
    assert vectors.dtype == np.float32 and vectors.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors * torch_vectors).sum(axis=1).min() >= 0.999


def test_onnx_batches_keep_the_input_order_and_equal_single_calls(onnx_embedder):
    batch = onnx_embedder.encode(SENTENCES, batch_size=2)
    singles = np.vstack([onnx_embedder.encode([s]) for s in SENTENCES])
    assert (batch * singles).sum(axis=1).min() >= 0.9999
    assert onnx_embedder.encode([]).shape == (0, 384)


def test_onnx_keeps_the_embedder_identity(onnx_embedder):
    assert onnx_embedder.name == EMBEDDED_MODEL and onnx_embedder.dim == 384 and onnx_embedder.backend == "onnx"
    meta = json.loads((onnx_embedder.directory / "export.json").read_text())
    assert meta["key"] == onnx_export.export_key(embeddings.embedded_model_path())
    assert meta["max_seq_length"] == 256  # not the 128 of the shipped tokenizer.json


def test_long_texts_are_truncated_like_sentence_transformers(onnx_embedder):
    text = "word " * 2000
    assert len(onnx_embedder._tokenizer.encode(text).ids) == 256
    torch_vector = Embedder("").encode([text])
    assert float(onnx_embedder.encode([text])[0] @ torch_vector[0]) >= 0.999


def test_get_embedder_loads_once_and_auto_reuses_a_loaded_backend(monkeypatch):
    embeddings.clear_cache()
    try:
        first = get_embedder("")
        assert first is get_embedder("") and first is get_embedder("", first.backend)
        assert first.backend == "onnx"  # auto: ONNX Runtime is installed and the embedded model exports exactly
        assert isinstance(get_embedder("", "torch"), Embedder) and get_embedder("", "torch").backend == "torch"
    finally:
        embeddings.clear_cache()


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="CHATBOT_EMBEDDING_BACKEND"):
        load_settings(embedding_backend="tensorflow")


def test_models_the_export_cannot_reproduce_fall_back_to_torch(tmp_path):
    model = tmp_path / "cls-model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (model / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 8, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (model / "sentence_bert_config.json").write_text("{}")
    assert not embeddings._onnx_possible(str(model))  # auto -> torch
    with pytest.raises(ConfigError, match="mean Pooling"):
        onnx_export.onnx_model_dir(str(model), tmp_path / "cache")
    with pytest.raises(ConfigError, match="local model directory"):
        onnx_export.onnx_model_dir("some-org/some-hub-model", tmp_path / "cache")


def test_a_registered_directory_is_used_before_exporting(onnx_embedder, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(onnx_export, "_extra_onnx_dirs", [])  # none registered by models loaded earlier
    shipped = tmp_path / "shipped"
    shutil.copytree(onnx_embedder.directory, shipped)
    onnx_export.register_onnx_dir(shipped)
    assert onnx_export.onnx_model_dir("", tmp_path / "empty-cache", export=False) == shipped
    onnx_export._extra_onnx_dirs.remove(shipped)
    with pytest.raises(ConfigError, match="no ONNX export"):
        onnx_export.onnx_model_dir("", tmp_path / "empty-cache", export=False)


@pytest.fixture
def tiny_classifier(tmp_path):
    """A tiny random multi-label BERT classifier with the six toxic-bert labels and the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    labels = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=6, id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)}, problem_type="multi_label_classification")
    path = tmp_path / "tiny-toxic-bert"
    BertForSequenceClassification(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(embeddings.embedded_model_path()).save_pretrained(path)
    return path


def test_toxic_bert_on_onnx_runtime_scores_like_the_pipeline(tiny_classifier, tmp_path, monkeypatch):
    from chatbot_model.guardrail.core import ToxicBert, export_toxic_bert_onnx

    torch_bert = ToxicBert(str(tiny_classifier))
    assert torch_bert._onnx is None  # nothing exported yet: the transformers pipeline
    export_toxic_bert_onnx(str(tiny_classifier))
    onnx_bert = ToxicBert(str(tiny_classifier))
    assert onnx_bert._onnx is not None and onnx_bert.labels == torch_bert.labels
    texts = SENTENCES + ["you are an idiot", "word " * 1000]
    expected, got = torch_bert.scores(texts), onnx_bert.scores(texts)
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        assert max(abs(a[k] - b[k]) for k in a) < 1e-4
