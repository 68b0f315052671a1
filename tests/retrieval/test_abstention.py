"""The "not covered" model: it separates covered from off-topic questions on what retrieval saw, keeps its
threshold on the training side, travels as a dict in the settings, and is refitted from documents alone."""

import json

import numpy as np
import pytest

from chatbot_model.config import load_settings
from chatbot_model.contract import Document
from chatbot_model.retrieval.abstention import (FEATURES, AbstentionModel, choose_threshold, pseudo_questions,
                                                train)


def rows(rng, n, dense, lexical, known):
    return [{"dense_best": rng.normal(dense, 0.05), "lexical_coverage": rng.normal(lexical, 0.05),
             "dense_margin": 0.05, "agreement": 1.0, "log_length": 1.5, "known_share": known} for _ in range(n)]


def test_a_fitted_model_answers_covered_questions_and_declines_off_topic_ones():
    rng = np.random.default_rng(0)
    covered, offtopic = rows(rng, 200, 0.5, 0.4, 1.0), rows(rng, 400, 0.15, 0.05, 0.4)
    model = train(covered, offtopic)
    assert model.features == FEATURES and 0.5 <= model.threshold < 1
    assert np.mean([model.covered(r) for r in covered]) > 0.95
    assert np.mean([not model.covered(r) for r in offtopic]) >= 0.99
    again = AbstentionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert [again.covered(r) for r in covered[:20]] == [model.covered(r) for r in covered[:20]]


def test_a_model_fitted_on_fewer_features_decides_on_those_only():
    # a version logged before a feature existed carries its own model in model_settings.json
    older = AbstentionModel.from_dict({"features": list(FEATURES[:6]), "weights": [8, 4, 1, 1.5, -2, 6],
                                       "bias": -4, "threshold": 0.69})
    row = rows(np.random.default_rng(0), 1, 0.5, 0.4, 1.0)[0]
    assert older.probability(row) == older.probability({**row, "sentence_best": -1.0})
    with pytest.raises(ValueError, match="known features are"):
        AbstentionModel.from_dict({"features": ["dense_best", "made_up"], "weights": [1, 1], "bias": 0,
                                   "threshold": 0.5})


def test_the_threshold_declines_the_asked_share_of_off_topic_training_questions():
    assert choose_threshold(np.array([0.9]), np.linspace(0, 0.8, 101), min_declined=0.99) == 0.80
    assert choose_threshold(np.array([0.9]), np.zeros(10)) == 0.5  # never below the neutral point


def test_a_model_naming_unknown_features_is_refused():
    with pytest.raises(ValueError, match="known features"):
        AbstentionModel.from_dict({"features": ["colour"], "weights": [1.0], "bias": 0, "threshold": 0.5})


def test_questions_made_from_documents_are_seeded_fragments_of_them():
    docs = [Document("a", "Rolling out a version", "Run kubectl rollout restart. Then watch kubectl rollout status. "
                     "Roll back by moving the alias.", "a.md")]
    made = pseudo_questions(docs)
    assert made == pseudo_questions(docs) and made[0] == "rolling out a version" and len(made) == 4
    assert all(q and q in docs[0].text.lower() for q in made[1:])


def test_calibrating_for_your_own_documents_needs_only_the_documents(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from calibrate_abstention import OFFTOPIC_SAMPLE, calibrate, read_jsonl

    from chatbot_model.retrieval.rag import RAGPipeline, load_documents

    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps([
        {"id": f"d{i}", "title": title, "source": "x.md", "text": text} for i, (title, text) in enumerate([
            ("Brewing coffee", "Grind the beans medium fine. Use water at 94 degrees. Brew for four minutes."),
            ("Cleaning the grinder", "Empty the hopper. Run grinder cleaning tablets through it. Brush the burrs."),
            ("Descaling the machine", "Fill the tank with descaler. Run the descale program. Rinse twice."),
            ("Milk foam", "Use cold whole milk. Purge the steam wand. Keep the tip just under the surface.")])]))
    rag = RAGPipeline(load_settings(docs_path=docs, index_dir=tmp_path / "idx")).load_or_build()
    offtopic = [r["question"] for r in read_jsonl(OFFTOPIC_SAMPLE)]
    model, numbers = calibrate(rag, load_documents(docs), offtopic=offtopic)
    assert numbers["offtopic_declined"] >= 0.95 and numbers["covered_answered"] >= 0.5

    def covered(question):
        return model.covered(rag.retrieve_vectors([question], rag.encode_queries([question]))[0].features)

    assert covered("how long do I brew the coffee") and covered("descale program")
    assert not covered("Who won the 1998 football world cup?")
