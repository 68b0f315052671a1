"""RAGPipeline: loading, chunking, persistence with fingerprints, retrieval (real embedder, real FAISS)."""

import json

import numpy as np
import pytest

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError, InvalidInput
from chatbot_model.retrieval.rag import RAGPipeline, chunk_documents, load_documents, split_sentences
from chatbot_model.contract import Document
from tests.helpers import RAG_CORPUS

@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(RAG_CORPUS))
    return path


@pytest.fixture
def rag(corpus, tmp_path):
    return RAGPipeline(load_settings(docs_path=corpus, index_dir=tmp_path / "idx")).load_or_build()


def test_retrieve_finds_the_right_document_with_cosine_scores(rag):
    sources = rag.retrieve("How do I load a registered model by its alias?", k=2)
    assert [s.chunk.doc_id for s in sources][0] == "aliases"
    assert sources[0].score > sources[1].score
    assert -1.0 <= sources[1].score <= sources[0].score <= 1.0
    assert sources[0].to_dict()["title"] == "Model aliases"


def test_batch_retrieval_matches_single_and_embeds_once(rag, monkeypatch):
    questions = ["approximate nearest neighbour index", "are toxic questions blocked?"]
    single = [rag.retrieve(q, k=1)[0].chunk.doc_id for q in questions]
    calls = []
    encode = rag.embedder.encode
    monkeypatch.setattr(rag.embedder, "encode", lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw))
    batch = [found[0].chunk.doc_id for found in rag.retrieve_many(questions, k=1)]
    assert batch == single == ["faiss", "guardrail"]
    assert calls == [2]


def test_index_persists_and_is_reused_until_documents_change(corpus, tmp_path):
    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    first = RAGPipeline(settings).load_or_build()
    mtime = (tmp_path / "idx" / "index.faiss").stat().st_mtime_ns
    again = RAGPipeline(settings).load_or_build()
    assert again.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert (tmp_path / "idx" / "index.faiss").stat().st_mtime_ns == mtime  # loaded, not rebuilt
    corpus.write_text(json.dumps(RAG_CORPUS + [{"id": "new", "title": "New", "text": "A brand new document."}]))
    changed = RAGPipeline(settings).load_or_build()
    assert changed.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert changed.manifest["documents"] == 4


def test_failed_build_leaves_the_previous_index(corpus, tmp_path, monkeypatch):
    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    RAGPipeline(settings).load_or_build()
    before = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    broken = RAGPipeline(settings)
    monkeypatch.setattr("faiss.write_index", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        broken.build(load_documents(corpus) + [Document("x", "X", "Another text.")])
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index-")] == []


def test_loads_folders_of_markdown_text_and_jsonl(tmp_path):
    folder = tmp_path / "kb"
    (folder / "sub").mkdir(parents=True)
    (folder / "intro.md").write_text("# Intro\nThe chatbot answers questions about MLflow.")
    (folder / "sub" / "notes.txt").write_text("Plain text notes about FAISS.")
    (folder / "more.jsonl").write_text('{"id": "j1", "title": "J", "text": "From JSON lines."}\n')
    (folder / "ignored.csv").write_text("a,b")
    docs = {d.id: d for d in load_documents(folder)}
    assert set(docs) == {"intro", "sub/notes", "j1"}
    assert docs["intro"].title == "Intro" and docs["sub/notes"].source == "sub/notes.txt"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "expected a JSON list"),
    ('[{"id": "x", "title": "no text"}]', "non-empty string field 'text'"),
    ('[{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]', "duplicate document id 'x'"),
    ("[]", "no documents found"),
])
def test_malformed_docs_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "docs.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_documents(path)


def test_missing_docs_path_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*CHATBOT_DOCS_PATH"):
        load_documents(tmp_path / "nope.json")


def test_long_texts_are_chunked_with_overlap():
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(60)]
    chunks = chunk_documents([Document("long", "Long", " ".join(sentences))], size=300, overlap=80)
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert set(a.sentences) & set(b.sentences), "neighbouring chunks share sentences"
    covered = {s for c in chunks for s in c.sentences}
    assert covered == set(sentences)


def test_split_sentences_drops_headings_and_bullets():
    text = "# Title\n- First point. Second point!\n\nThird one?"
    assert split_sentences(text) == ["First point.", "Second point!", "Third one?"]


def test_sentence_vectors_align_with_chunk_sentences(rag):
    source = rag.retrieve("exact inner product search", k=1)[0]
    assert source.sentence_vectors.shape == (len(source.chunk.sentences), rag.embedder.dim)
    direct = rag.embedder.encode(list(source.chunk.sentences))
    assert source.sentence_vectors.dtype == np.float32
    assert np.allclose(direct, source.sentence_vectors, atol=1e-3)  # stored as float16
    cosines = np.sum(direct * source.sentence_vectors, axis=1) / np.linalg.norm(source.sentence_vectors, axis=1)
    assert np.all(cosines > 0.9999)


def test_context_vectors_embed_each_sentence_after_its_document_title(rag):
    from chatbot_model.retrieval.chunk_store import in_context

    source = rag.retrieve("exact inner product search", k=1)[0]
    chunk = source.chunk
    direct = rag.embedder.encode([in_context(chunk.title, s) for s in chunk.sentences])
    assert np.allclose(direct, rag.chunks.context_vectors(chunk.chunk_id), atol=1e-3)  # stored as float16
    assert not np.allclose(direct, source.sentence_vectors, atol=1e-2)
    assert source.doc_context_vectors.shape == source.doc_sentence_vectors.shape == (len(source.doc_sentences),
                                                                                     rag.embedder.dim)


def test_the_chunk_store_is_memory_mapped_and_gives_back_every_chunk(corpus, tmp_path):
    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    built = RAGPipeline(settings).load_or_build()
    expected = chunk_documents(load_documents(corpus), settings.chunk_size, settings.chunk_overlap)
    loaded = RAGPipeline(settings).load_or_build()
    assert list(loaded.chunks) == list(built.chunks) == expected
    assert isinstance(loaded.chunks.vectors, np.memmap) and loaded.chunks.vectors.dtype == np.float16
    assert [loaded.chunks.documents[n][0] for n in loaded.chunks.chunk_docs] == [c.doc_id for c in expected]


def test_an_index_directory_of_the_previous_format_is_rebuilt(corpus, tmp_path, monkeypatch):
    import chatbot_model.retrieval.rag as rag_module

    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    monkeypatch.setattr(rag_module, "INDEX_FORMAT", 1)
    old_fp = rag_module.fingerprint(load_documents(corpus), RAGPipeline(settings).embedder_name, settings)
    monkeypatch.undo()
    RAGPipeline(settings).load_or_build()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps({**manifest, "format": 1, "fingerprint": old_fp}))
    (tmp_path / "idx" / "sentences.bin").unlink()  # what a format-1 directory lacks
    rebuilt = RAGPipeline(settings).load_or_build()
    assert rebuilt.retrieve("exact inner product search", k=1)[0].chunk.doc_id == "faiss"
    assert (tmp_path / "idx" / "sentences.bin").is_file()
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["format"] == rag_module.INDEX_FORMAT


def test_a_truncated_chunk_store_is_rebuilt_not_served(corpus, tmp_path):
    settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx")
    RAGPipeline(settings).load_or_build()
    blob = tmp_path / "idx" / "sentences.bin"
    blob.write_bytes(blob.read_bytes()[:10])
    rag = RAGPipeline(settings).load_or_build()
    assert len(blob.read_bytes()) > 10 and rag.retrieve("exact inner product search", k=1)[0].chunk.doc_id == "faiss"


def test_empty_question_is_rejected(rag):
    with pytest.raises(InvalidInput):
        rag.retrieve_many(["ok", "  "])


def test_sources_are_distinct_documents_even_when_one_document_has_many_close_chunks(tmp_path):
    long_doc = {"id": "aliases-long", "title": "Aliases in depth", "source": "long.md",
                "text": " ".join(f"MLflow aliases detail number {i} explains loading models by alias." for i in range(40))}
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(RAG_CORPUS + [long_doc]))
    rag = RAGPipeline(load_settings(docs_path=path, index_dir=tmp_path / "idx", chunk_size=200,
                                    chunk_overlap=40)).load_or_build()
    assert sum(c.doc_id == "aliases-long" for c in rag.chunks) > 5
    ids = [s.chunk.doc_id for s in rag.retrieve("How do I load a model by its alias?", k=3)]
    assert len(ids) == len(set(ids)) == 3 and set(ids[:2]) == {"aliases-long", "aliases"}


def test_a_matching_index_is_checked_by_streaming_the_documents_not_loading_them(tmp_path, monkeypatch):
    import chatbot_model.retrieval.rag as rag_module

    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in RAG_CORPUS) + "\n")
    settings = load_settings(docs_path=docs, index_dir=tmp_path / "idx")
    RAGPipeline(settings).load_or_build()

    def no_list(path):
        raise AssertionError("a matching index must not need the documents as a list")

    monkeypatch.setattr(rag_module, "load_documents", no_list)
    assert RAGPipeline(settings).load_or_build().retrieve("exact inner product search", k=1)[0].chunk.doc_id == "faiss"
    docs.write_text(docs.read_text() + json.dumps({"id": "new", "text": "A new document."}) + "\n")
    with pytest.raises(AssertionError, match="as a list"):  # changed documents: a rebuild, which needs them all
        RAGPipeline(settings).load_or_build()


def test_the_shipped_knowledge_base_is_recognised_by_its_digest():
    # a logged model recognises the shipped documents without the checkout (its "not covered" reply names the topic)
    from chatbot_model.config import DEFAULT_ARTIFACTS
    from chatbot_model.retrieval.rag import SHIPPED_DOCUMENTS_DIGEST, documents_digest, is_shipped_corpus, iter_documents

    digest = documents_digest(iter_documents(DEFAULT_ARTIFACTS / "docs.json"))
    assert digest == SHIPPED_DOCUMENTS_DIGEST, "artifacts/docs.json changed: update SHIPPED_DOCUMENTS_DIGEST in rag.py"
    assert is_shipped_corpus({"documents_digest": digest}) and not is_shipped_corpus({"documents_digest": "other"})
