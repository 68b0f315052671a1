"""The alias moves in a real MLflow registry: the wrapper serves the new version without a restart and without a
failed request, releases the old one, and every answer, trace and rating carries the version that answered."""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from chatbot_model.server import create_app
from tests.helpers import (CHROMIUM_ARGS, ROOT, ChatClient, chromium, free_port, make_settings, server_process,
                           tracking_store, wait_released)

pytestmark = pytest.mark.slow
NAME = "llmops-chatbot"


@pytest.fixture(scope="module")
def two_versions(shipped_index, tmp_path_factory):
    """A store with versions 1 and 2 of llmops-chatbot, `production` on version 1."""
    from mlflow import MlflowClient

    from chatbot_model.lifecycle.registry import log_and_register

    tmp = tmp_path_factory.mktemp("rollout-registry")
    store = tracking_store(tmp)
    with pytest.MonkeyPatch.context() as env:  # the store of this module's fixture only, restored after
        env.setenv("MLFLOW_TRACKING_URI", store)
        settings = make_settings(shipped_index, store, tmp)
        v1 = log_and_register(settings)
        v2 = log_and_register(settings, hint="Answer in one short paragraph and cite the sources.")
        MlflowClient(store).set_registered_model_alias(NAME, "production", v1.version)
    return store, v1.version, v2.version


def test_moving_the_alias_swaps_the_served_version_without_a_failed_request(two_versions, shipped_index, tmp_path,
                                                                            monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from chatbot_model.store.feedback import FeedbackStore

    store, v1, v2 = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    settings = make_settings(shipped_index, store, tmp_path, alias_poll_s=0)
    with TestClient(create_app(settings)) as http:
        backend = http.app.state.backend
        assert backend.loaded.wait(300) and backend.ready(), backend.load_error
        assert http.get("/health").json()["model_version"] == v1
        old_model = weakref.ref(backend.champion.current.model.unwrap_python_model())

        client = ChatClient(http)
        client.start()
        client.wait_for(lambda c: len(c.versions) >= 2, timeout=120)
        MlflowClient(store).set_registered_model_alias(NAME, "production", v2)  # the promotion
        (loader,) = backend.poll()
        loader.join(300)
        assert backend.version == v2, backend.info()["rollout"]
        seen = len(client.versions)
        client.wait_for(lambda c: len(c.versions) >= seen + 2, timeout=120)
        client.stop.set()
        client.join(60)

        assert set(client.statuses) == {200}, "a request failed during the swap"
        first = client.versions.index(v2)
        assert set(client.versions[:first]) == {v1} and set(client.versions[first:]) == {v2}
        health = http.get("/health").json()
        assert health["model_version"] == v2 and health["alias_target"] == v2 and health["rollout"]["swaps"] == 1

        wait_released(backend, 1)
        gc.collect()
        assert old_model() is None, "version 1 is still referenced after the swap"

        body = http.post("/chat", json={"question": "How do I register a model?"}).json()
        assert body["model_version"] == v2
        assert http.post("/feedback", json={"trace_id": body["trace_id"], "rating": "up"}).status_code == 200
        assert FeedbackStore(settings.feedback_db_url).ratings()[-1].model_version == v2
        trace = MlflowClient(store).get_trace(body["trace_id"])
        assert trace.info.tags["model_version"] == v2 and trace.info.tags["abstained"] == "false"


def test_a_version_that_cannot_load_keeps_the_old_one_serving(two_versions, shipped_index, tmp_path, monkeypatch):
    """An alias moved to a version whose artifacts are gone: not swapped in, reported; version 1 keeps serving."""
    import mlflow
    from mlflow import MlflowClient

    store, v1, _ = two_versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    client.set_registered_model_alias(NAME, "production", v1)
    broken = client.create_model_version(NAME, source=str(tmp_path / "no-such-model"), run_id=None)
    settings = make_settings(shipped_index, store, tmp_path, alias_poll_s=0)
    try:
        with TestClient(create_app(settings)) as http:
            backend = http.app.state.backend
            assert backend.loaded.wait(300) and backend.ready(), backend.load_error
            client.set_registered_model_alias(NAME, "production", broken.version)
            for thread in backend.poll():
                thread.join(300)
            r = http.post("/chat", json={"question": "How do I register a model?"})
            assert r.status_code == 200 and r.json()["model_version"] == v1
            health = http.get("/health").json()
            assert health["model_version"] == v1 and health["alias_target"] == str(broken.version)
            assert health["rollout"]["failed"]["version"] == str(broken.version)
            assert 'chatbot_model_rollout_failed{role="champion"} 1.0' in http.get("/metrics").text
    finally:
        client.set_registered_model_alias(NAME, "production", v1)  # the broken version stays registered, unused


# ---------------------------------------------------------------- the MLflow UI moves the alias
@contextmanager
def process(args: list[str], env: dict, cwd, url: str, ready_path: str, timeout: float = 300):
    """A server subprocess in its own process group; yields once `url + ready_path` answers 200, then ends it."""
    log = Path(cwd) / f"{Path(args[0]).name}-{url.rsplit(':', 1)[1]}.log"
    with server_process(args, env, cwd, url, ready_path, log, timeout) as proc:
        yield proc


class HttpClient(threading.Thread):
    """Questions to the wrapper one after another until stopped; every status and answering version kept."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.statuses, self.versions = url, [], []
        self.stop, self.seen = threading.Event(), threading.Condition()

    def run(self):
        with httpx.Client(timeout=60) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = http.post(f"{self.url}/chat", json={"question": f"How do I register model {n}?"})
                    status, version = r.status_code, r.json().get("model_version") if r.status_code == 200 else None
                except httpx.HTTPError as exc:
                    status, version = type(exc).__name__, None
                with self.seen:
                    self.statuses.append(status)
                    if version:
                        self.versions.append(version)
                    self.seen.notify_all()

    def wait_for(self, predicate, timeout: float = 300) -> None:
        with self.seen:
            assert self.seen.wait_for(lambda: predicate(self), timeout), (self.statuses[-5:], self.versions[-5:])


def test_moving_the_alias_in_the_mlflow_ui_changes_what_the_running_wrapper_serves(two_versions, shipped_index,
                                                                                   tmp_path):
    """`mlflow server` on loopback, the wrapper as its own process polling every second, a client asking all the
    time; a person (Playwright in Debian's chromium) adds the `production` alias to version 2 in the MLflow UI.
    The very next poll loads version 2; the client then gets its answers, and no request failed."""
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright


    store, v1, v2 = two_versions
    MlflowClient(store).set_registered_model_alias(NAME, "production", v1)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(MLFLOW_TRACKING_URI=store, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               CHATBOT_ALIAS_POLL_S="1", CHATBOT_GUARDRAIL_BACKEND="embedded", CHATBOT_INDEX_DIR=str(shipped_index),
               CHATBOT_FEEDBACK_DB_URL=f"sqlite:///{tmp_path / 'feedback.db'}")
    ui, wrapper = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    with process([str(bindir / "mlflow"), "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port",
                  ui.rsplit(":", 1)[1], "--workers", "1"], env, tmp_path, ui, "/health"), \
         process([sys.executable, "-m", "chatbot_model.cli.main", "serve", "--port", wrapper.rsplit(":", 1)[1]], env,
                 tmp_path, wrapper, "/ready"):
        assert httpx.get(f"{wrapper}/health").json()["model_version"] == v1
        client = HttpClient(wrapper)
        client.start()
        client.wait_for(lambda c: len(c.versions) >= 2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(f"{ui}/#/models/{NAME}/versions/{v2}")
                expect(page.get_by_role("heading", name=f"Version {v2}")).to_be_visible(timeout=120_000)
                page.get_by_role("button", name="Add").first.click()  # "Aliases: Add"
                dialog = page.get_by_role("dialog")
                expect(dialog).to_contain_text(f"Add/Edit alias for model version {v2}")
                box = dialog.get_by_role("combobox")
                box.fill("production")
                box.press("Enter")
                expect(dialog).to_contain_text(f"also being used on version {v1}")  # the UI says it moves
                polls_at_move = httpx.get(f"{wrapper}/health").json()["rollout"]["polls"]
                dialog.get_by_role("button", name="Save aliases").click()
                expect(dialog).to_be_hidden(timeout=60_000)
            finally:
                browser.close()
        assert str(MlflowClient(store).get_registered_model(NAME).aliases["production"]) == v2
        polls_after_save = httpx.get(f"{wrapper}/health").json()["rollout"]["polls"]
        client.wait_for(lambda c: v2 in c.versions)
        seen = len(client.versions)
        client.wait_for(lambda c: len(c.versions) >= seen + 2)
        client.stop.set()
        client.join(120)
        health = httpx.get(f"{wrapper}/health").json()

    assert set(client.statuses) == {200}, "a request failed while the alias moved"
    first = client.versions.index(v2)
    assert set(client.versions[:first]) == {v1} and set(client.versions[first:]) == {v2}
    assert health["model_version"] == v2 and health["alias_target"] == v2
    # loaded by the first poll after the save (or the one running while it was saved), counted in polls from when
    # the save was confirmed, however long the save itself took on a busy machine
    assert polls_at_move < health["rollout"]["swapped_at_poll"] <= polls_after_save + 2, health["rollout"]
