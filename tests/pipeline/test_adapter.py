"""ControlHintAdapter: default hint from the shipped file, negative and positive feedback."""

import pytest

from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT, ControlHintAdapter
from chatbot_model.config import DEFAULT_ARTIFACTS
from chatbot_model.errors import ConfigError


def test_shipped_hint_is_the_default():
    assert ControlHintAdapter.from_file(DEFAULT_ARTIFACTS / "adapter_hint.txt").hint == DEFAULT_HINT
    assert DEFAULT_HINT == "Answer in a helpful, concise, and knowledge-sharing way"


def test_negative_feedback_grounds_the_hint_and_positive_keeps_it():
    adapter = ControlHintAdapter()
    assert adapter.feedback(positive=True) == DEFAULT_HINT
    assert adapter.feedback(positive=False) == GROUNDED_HINT == "Be more factual, detailed, and knowledge-grounded"
    assert adapter.feedback(positive=True) == GROUNDED_HINT
    assert adapter.reset() == DEFAULT_HINT


@pytest.mark.parametrize("content", [None, "  \n"])
def test_missing_or_empty_hint_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "hint.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="hint"):
        ControlHintAdapter.from_file(path)
