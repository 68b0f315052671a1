"""The lexical side of retrieval: what a user types (a setting name, a flag, a typo) finds its document, the
BM25 index is saved beside the dense one and loaded from it, and ranking fuses both."""

import json

import numpy as np

from chatbot_model.config import load_settings
from chatbot_model.contract import Chunk
from chatbot_model.retrieval.lexical import DIRNAME, LexicalIndex, Vocabulary, tokenize
from chatbot_model.retrieval.rag import RAGPipeline

CORPUS = [
    {"id": "tracing", "title": "Tracing of requests", "source": "t.md",
     "text": "Each request is recorded as one trace. Tracing can be switched off with CHATBOT_TRACING=false."},
    {"id": "promote", "title": "Promoting a version", "source": "p.md",
     "text": "Run llmops-chatbot promote_model --stage Production to promote a version. The gate checks it first."},
    {"id": "ports", "title": "Port already in use", "source": "o.md",
     "text": "Find the process holding a port with lsof -i :8000. Stop it, or start on another port."},
]


def test_tokens_keep_identifiers_whole_and_split():
    tokens = tokenize("Set CHATBOT_TRACING=false and the --force flag on /invocations")
    assert "chatbot_tracing" in tokens and "tracing" in tokens and "force" in tokens and "invocation" in tokens
    assert "the" not in tokens and "and" not in tokens


def test_a_misspelt_word_is_read_as_the_frequent_indexed_word_one_edit_away():
    vocabulary = Vocabulary({"promote": 5, "production": 3, "version": 4, "promoted": 1})
    assert [vocabulary.correct(w) for w in ("promte", "prodution", "verison", "version")] == \
        ["promote", "production", "version", "version"]
    assert vocabulary.correct("zebra") == "zebra" and vocabulary.correct("ab") == "ab"


def test_bm25_finds_the_document_of_a_setting_name_and_of_a_typo():
    chunks = [Chunk(i, d["id"], d["title"], d["source"], d["text"], (d["text"],)) for i, d in enumerate(CORPUS)]
    index = LexicalIndex.build(chunks)
    for question, doc in (("CHATBOT_TRACING", 0), ("promte to prodution", 1), ("lsof", 2)):
        scores = index.document_scores(index.chunk_scores(index.query(question)))
        assert int(np.argmax(scores)) == doc, question
    nothing = index.query("capital of australia")
    assert index.known_share(nothing) == 0.0 and not index.chunk_scores(nothing).any()


def test_the_lexical_index_is_saved_beside_the_dense_one_and_loaded_with_it(tmp_path):
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps(CORPUS))
    settings = load_settings(docs_path=docs, index_dir=tmp_path / "idx")
    RAGPipeline(settings).load_or_build()
    assert (tmp_path / "idx" / DIRNAME / "doc_starts.npy").is_file()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["lexical"]["type"] == "bm25s" and manifest["lexical"]["terms"] > 10
    loaded = RAGPipeline(settings).load_or_build()  # same fingerprint: loaded, not rebuilt
    assert loaded.lexical is not None
    assert loaded.retrieve("promte latest verison to prodution", k=1)[0].chunk.doc_id == "promote"
    (tmp_path / "idx" / DIRNAME / "doc_starts.npy").unlink()  # a directory without it is rebuilt
    assert RAGPipeline(settings).load_or_build().retrieve("lsof", k=1)[0].chunk.doc_id == "ports"
    assert (tmp_path / "idx" / DIRNAME / "doc_starts.npy").is_file()


def test_hybrid_retrieval_reports_the_abstention_features_and_carries_whole_documents(tmp_path):
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps(CORPUS))
    rag = RAGPipeline(load_settings(docs_path=docs, index_dir=tmp_path / "idx")).load_or_build()
    question = "how do I turn off tracing"
    found = rag.retrieve_vectors([question], rag.encode_queries([question]))[0]
    assert found.sources[0].chunk.doc_id == "tracing"
    assert set(found.features) == {"dense_best", "lexical_coverage", "dense_margin", "agreement", "log_length",
                                   "known_share", "sentence_best"}
    assert found.features["sentence_best"] > found.features["dense_best"]  # one sentence says it, not the chunk
    assert found.features["agreement"] == 1.0 and 0 < found.features["lexical_coverage"] <= 1
    top = found.sources[0]
    assert "Tracing can be switched off with CHATBOT_TRACING=false." in top.doc_sentences
    assert top.doc_sentence_vectors.shape == (len(top.doc_sentences), 384)
    dense_only = RAGPipeline(load_settings(docs_path=docs, index_dir=tmp_path / "idx", lexical_weight=0))
    dense_only.load_or_build()
    scores = [s.score for s in dense_only.retrieve(question, k=3)]
    assert scores == sorted(scores, reverse=True)  # weight 0: ranked by cosine alone
