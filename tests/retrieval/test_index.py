"""Index choice by corpus size: the types agree with exact search, the choice is persisted, reloaded and shown."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError
from chatbot_model.retrieval.index import FLAT_MAX, apply_search_params, build_index, choose_index_type, ivf_lists
from chatbot_model.retrieval.rag import RAGPipeline
from tests.helpers import RAG_CORPUS


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_auto_picks_flat_for_small_corpora_and_ivf_for_large_ones():
    assert choose_index_type(82) == "flat"
    assert choose_index_type(FLAT_MAX - 1) == "flat"
    assert choose_index_type(FLAT_MAX) == "ivf"
    assert choose_index_type(1_000_000) == "ivf"
    assert choose_index_type(500, "hnsw") == "hnsw"
    assert choose_index_type(500, "ivf") == "flat"  # too few vectors to train lists
    assert ivf_lists(100_000) == 1024 and ivf_lists(1_000_000) == 4096
    with pytest.raises(ConfigError, match="unknown index type 'annoy'"):
        choose_index_type(10, "annoy")


def test_unknown_index_type_is_a_config_error():
    with pytest.raises(ConfigError, match="CHATBOT_INDEX_TYPE"):
        load_settings(index_type="annoy")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_give_the_same_top1_as_flat(kind):
    data = clustered(5000)
    rng = np.random.default_rng(1)
    queries = data[rng.integers(0, len(data), 200)] + 0.05 * rng.normal(size=(200, data.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat, _ = build_index(data, "flat")
    approx, params = build_index(data, kind)
    assert params["type"] == kind and params["class"] == type(approx).__name__
    _, exact_ids = flat.search(queries, 10)
    _, ids = approx.search(queries, 10)
    assert np.mean(ids[:, 0] == exact_ids[:, 0]) >= 0.99
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
    assert recall >= 0.95
    if kind == "ivf":
        assert params["nlist"] == ivf_lists(5000) and 1 <= params["nprobe"] <= params["nlist"]
        assert params["calibrated_recall_at_10"] >= 0.95


def test_search_params_are_applied_on_load():
    import faiss

    index, params = build_index(clustered(3000), "ivf", ivf_nprobe=8)
    assert params["nprobe"] == 8 and index.nprobe == 8
    copy = faiss.deserialize_index(faiss.serialize_index(index))
    assert apply_search_params(copy, params)["nprobe"] == 8 and copy.nprobe == 8
    assert apply_search_params(copy, params, ivf_nprobe=3)["nprobe"] == 3 and copy.nprobe == 3
    old = faiss.IndexFlatIP(4)  # an index persisted before index_params existed
    assert apply_search_params(old, None) == {"type": "flat", "class": "IndexFlatIP"}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(RAG_CORPUS))
    return path


def test_the_chosen_index_type_is_persisted_reloaded_and_shown(corpus, tmp_path, monkeypatch):
    from chatbot_model.cli.main import main

    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx", index_type="hnsw", hnsw_ef_search=40)
    built = RAGPipeline(settings).load_or_build()
    assert built.manifest["index_type"] == "hnsw"
    assert built.manifest["index_params"]["m"] == 32
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["index_type"] == "hnsw" and manifest["index_params"]["ef_search"] == 40

    reloaded = RAGPipeline(settings.model_copy(update={"index_type": "auto", "hnsw_ef_search": 80})).load_or_build()
    assert type(reloaded.index).__name__ == "IndexHNSWFlat"
    assert reloaded.index.hnsw.efSearch == 80 and reloaded.manifest["index_params"]["ef_search"] == 80
    assert reloaded.manifest["build_seconds"] == manifest["build_seconds"]  # loaded, not rebuilt
    assert reloaded.retrieve("How do I load a model by its alias?")[0].chunk.doc_id == "aliases"

    monkeypatch.setenv("CHATBOT_INDEX_DIR", str(tmp_path / "idx"))
    out = CliRunner().invoke(main, ["index-info"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["index_type"] == "hnsw"


def test_asking_for_another_index_type_rebuilds(corpus, tmp_path):
    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    manifest = tmp_path / "idx" / "manifest.json"
    assert RAGPipeline(settings).load_or_build().manifest["index_type"] == "flat"
    hnsw = RAGPipeline(settings.model_copy(update={"index_type": "hnsw"})).load_or_build()
    assert type(hnsw.index).__name__ == "IndexHNSWFlat"
    assert RAGPipeline(settings).load_or_build().manifest["index_type"] == "hnsw"  # auto takes what is there
    flat = RAGPipeline(settings.model_copy(update={"index_type": "flat"})).load_or_build()
    assert flat.manifest["index_type"] == "flat"
    written = manifest.stat().st_mtime_ns
    # ivf over 3 chunks is flat by rule: the flat index on disk is what was asked, no rebuild
    again = RAGPipeline(settings.model_copy(update={"index_type": "ivf"})).load_or_build()
    assert again.manifest["index_type"] == "flat" and manifest.stat().st_mtime_ns == written


def test_auto_keeps_the_shipped_corpus_on_an_exact_index(index_dir):
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["index_type"] == "flat"
    assert manifest["index_params"]["class"] == "IndexFlatIP"
