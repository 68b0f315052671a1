"""Input errors with one voice: a body that is not JSON says where (400 `invalid_json`, line and column); a
body not sent as JSON says which Content-Type to send (415); an empty and a blank question get the same
words on /chat, /v1, the pyfunc and the CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException

from chatbot_model.cli.main import main
from chatbot_model.config import load_settings
from chatbot_model.lifecycle.pyfunc import answer_frame
from chatbot_model.pipeline.adapter import ControlHintAdapter
from chatbot_model.pipeline.router import HeuristicRouter
from chatbot_model.pipeline.service import LLMService
from chatbot_model.server import create_app
from chatbot_model.server.backends import ServiceBackend

EMPTY = "question is empty; ask something in words"
JSON = {"content-type": "application/json"}


class NeverAsked:
    """A service the requests below must never reach."""

    def describe(self) -> dict:
        return {}

    def __getattr__(self, name):
        raise AssertionError(f"invalid input reached the service ({name})")


@pytest.fixture
def client():
    settings = load_settings(feedback_db_url="")
    with TestClient(create_app(settings, backend=ServiceBackend(settings, service=NeverAsked()))) as c:
        yield c


def test_a_body_that_is_not_json_says_where(client):
    r = client.post("/chat", content=b'{"question": "hi",\n  }', headers=JSON)
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    assert r.json()["message"].startswith("body is not valid JSON (line 2, column 3): Expecting property name")
    assert "fields" not in r.json()
    r = client.post("/v1/chat/completions", content=b'{"messages": [}', headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert r.json()["error"]["message"].startswith("body is not valid JSON (line 1, column 15)")


@pytest.mark.parametrize("headers, got", [({}, "no Content-Type"),
                                          ({"content-type": "application/x-www-form-urlencoded"},
                                           "Content-Type application/x-www-form-urlencoded")])
def test_a_body_not_sent_as_json_says_which_content_type_to_send(client, headers, got):
    r = client.post("/chat", content=b'{"question": "hi"}', headers=headers)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert r.json()["message"].startswith(f"the body must be JSON sent with `Content-Type: application/json` (got {got})")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_and_blank_questions_get_the_same_words_everywhere(client, question):
    r = client.post("/chat", json={"question": question})
    assert (r.status_code, r.json()["message"], r.json()["fields"]) == (422, EMPTY, ["question"])
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the last user message is empty; ask something in words"
    checks_only = LLMService(load_settings(), guardrail=None, rag=None, router=HeuristicRouter(),
                             adapter=ControlHintAdapter())  # the service's input checks; nothing behind them
    with pytest.raises(MlflowException, match=f"row 0: {EMPTY}"):
        answer_frame(checks_only, [question])
    out = CliRunner().invoke(main, ["ask", question])
    assert out.exit_code == 1 and f"Error: {EMPTY}" in out.output
