"""The feedback store, its attachment to MLflow traces, and the adaptation state shared by every process.

Real components throughout: a SQLite feedback store and MLflow's sqlite store under tmp_path (conftest), other
Python processes for concurrency, an unreachable tracking server on a closed loopback port.
"""

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.entities import AssessmentSourceType

from chatbot_model.contract import MAX_COMMENT_CHARS
from chatbot_model.pipeline.adaptation import AdaptationRule, SharedAdaptation, decayed_counts
from chatbot_model.pipeline.adapter import DEFAULT_HINT, GROUNDED_HINT
from chatbot_model.config import configure_mlflow, load_settings
from chatbot_model.errors import InvalidInput
from chatbot_model.store import feedback as feedback_module
from chatbot_model.store.feedback import ASSESSMENT_NAME, FeedbackStore
from tests.helpers import free_port, wait_until

DAY = 24 * 3600.0


class Clock:
    """An injected clock: returns `now`, which the test moves."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings():
    s = load_settings()
    configure_mlflow(s)  # this test's sqlite tracking store (other tests may have pointed MLflow elsewhere)
    return s


@pytest.fixture
def store(settings):
    store = FeedbackStore(settings.feedback_db_url)
    yield store
    store.dispose()


def make_trace(name: str = "chat", end: bool = True):
    span = mlflow.start_span_no_context(name=name, span_type="CHAIN", inputs={"question": "q"})
    if end:
        span.end(outputs={"answer": "a"})
    return span


def user_ratings(trace_id: str) -> list:
    return [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == ASSESSMENT_NAME]


def run_python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


# ------------------------------------------------------------------ the store
def test_invalid_input_is_refused_and_nothing_is_stored(store):
    with pytest.raises(InvalidInput, match=r"rating must be one of \['up', 'down'\], got 'meh'"):
        store.record(trace_id="tr-1", rating="meh")
    with pytest.raises(InvalidInput, match="trace_id must be a non-empty string"):
        store.record(trace_id="  ", rating="up")
    with pytest.raises(InvalidInput, match=f"comment must be a string of at most {MAX_COMMENT_CHARS}"):
        store.record(trace_id="tr-1", rating="up", comment="x" * (MAX_COMMENT_CHARS + 1))
    assert store.ratings() == [] and store.stats()["total"] == 0


def test_schema_on_first_use_in_a_new_directory_in_wal_mode(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'deep' / 'er' / 'fb.db'}", attach=False)
    row_id = store.record(trace_id=None, rating="up", route="gpt", provider="openai", model="gpt-4o-mini",
                          model_version="3", session_id="s", comment="fine")
    (row,) = store.ratings()
    assert row.id == row_id and row.positive and row.model_version == "3" and row.comment == "fine"
    assert row.created_at.tzinfo is not None and row.synced_at is None
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_four_processes_write_800_ratings_and_none_is_lost(settings):
    code = """
        import sys
        from chatbot_model.store.feedback import FeedbackStore
        store = FeedbackStore(sys.argv[1], attach=False)
        for i in range(200):
            store.record(trace_id=f"tr-{sys.argv[2]}-{i}", rating="up" if i % 3 else "down", route="gpt",
                         model="m", model_version=sys.argv[2], session_id=sys.argv[2])
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), settings.feedback_db_url, str(p)],
                              stderr=subprocess.PIPE, text=True) for p in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    store = FeedbackStore(settings.feedback_db_url)
    rows = store.ratings()
    assert len(rows) == 800 and len({r.id for r in rows}) == 800
    assert len({r.trace_id for r in rows}) == 800
    stats = store.stats()
    assert stats["total"] == 800 and stats["by_route"]["gpt"]["up"] + stats["by_route"]["gpt"]["down"] == 800
    assert {v: sum(n.values()) for v, n in stats["by_version"].items()} == {"0": 200, "1": 200, "2": 200, "3": 200}
    assert len(store.ratings(model_version="2")) == 200


def test_ratings_filter_by_time(settings):
    clock = Clock(1_800_000_000.0)
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=clock)
    store.record(trace_id=None, rating="up")
    clock.now += 0.5
    middle = clock.now
    store.record(trace_id=None, rating="down")
    from datetime import datetime, timezone

    assert [r.rating for r in store.ratings(since=datetime.fromtimestamp(middle, timezone.utc))] == ["down"]
    naive = datetime.fromtimestamp(middle, timezone.utc).replace(tzinfo=None)
    assert [r.rating for r in store.ratings(since=naive)] == ["down"]
    assert [r.created_at.timestamp() for r in store.ratings()] == [middle - 0.5, middle]


# ------------------------------------------------------------------ attaching to MLflow traces
def test_a_rating_lands_on_its_trace_as_human_feedback(store):
    span = make_trace()
    row_id = store.record(trace_id=span.trace_id, rating="down", comment="missed the point", session_id="run-42",
                          route="claude", provider="anthropic", model="claude-3-5-sonnet-latest")
    (fb,) = user_ratings(span.trace_id)
    assert fb.source.source_type == AssessmentSourceType.HUMAN and fb.source.source_id == "run-42"
    assert fb.value is False and fb.rationale == "missed the point" and fb.metadata["feedback_id"] == str(row_id)
    (row,) = store.ratings()
    assert row.synced_at is not None and row.assessment_id == fb.assessment_id and row.sync_error is None

    anonymous = make_trace()
    store.record(trace_id=anonymous.trace_id, rating="up")
    (fb,) = user_ratings(anonymous.trace_id)
    assert fb.value is True and fb.source.source_id == "anonymous"
    assert store.stats()["unsynced"] == 0


def test_trace_not_exported_yet_then_sync_attaches_it_exactly_once(store):
    span = make_trace(end=False)  # the trace exists only in memory: not in the tracking store yet
    store.record(trace_id=span.trace_id, rating="down", session_id="s1")
    (row,) = store.ratings()
    assert row.synced_at is None and "not found" in row.sync_error
    assert store.stats()["unsynced"] == 1

    span.end()
    report = store.sync()
    assert (report.attached, report.already, report.pending) == (1, 0, 0)
    assert (store.sync().attached, store.sync().pending) == (0, 0)
    assert len(user_ratings(span.trace_id)) == 1 and store.stats()["unsynced"] == 0


def test_the_next_rating_retries_the_unsynced_ones(store):
    late = make_trace(end=False)
    store.record(trace_id=late.trace_id, rating="down")
    late.end()
    store.retry_after_s = 0.0  # the default waits 30 s between automatic retries of a row
    store.record(trace_id=make_trace().trace_id, rating="up")
    assert store.stats()["unsynced"] == 0 and len(user_ratings(late.trace_id)) == 1


def test_tracking_store_down_the_rating_is_kept_and_attached_once_when_it_is_back(store, settings, monkeypatch):
    span = make_trace()
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # nothing listens there: refused
    calls = []
    with monkeypatch.context() as patch:  # the quick probe fails: MLflow's client (minutes of retries) is never called
        patch.setattr(feedback_module, "_attach", lambda row: calls.append(row))
        patch.setattr(feedback_module, "_flush_traces", lambda: calls.append("flush"))
        try:
            row_id = store.record(trace_id=span.trace_id, rating="down", session_id="s", comment="wrong")
        finally:
            mlflow.set_tracking_uri(settings.tracking_uri)
    assert calls == []
    (row,) = store.ratings()
    assert row.id == row_id and row.synced_at is None and "unreachable" in row.sync_error

    from chatbot_model.cli.main import main

    out = CliRunner().invoke(main, ["sync-feedback"])
    assert out.exit_code == 0, out.output
    assert "attached 1, already attached 0, still pending 0" in out.output
    out = CliRunner().invoke(main, ["sync-feedback"])
    assert "attached 0, already attached 0, still pending 0" in out.output
    (fb,) = user_ratings(span.trace_id)
    assert fb.value is False and fb.rationale == "wrong"


def test_sync_feedback_reports_what_is_still_pending(store):
    store.record(trace_id="tr-0123456789abcdef0123456789abcdef", rating="up")
    from chatbot_model.cli.main import main

    out = CliRunner().invoke(main, ["sync-feedback"])
    assert out.exit_code == 1 and "still pending 1" in out.output and "not found" in out.output


def test_a_rating_logged_before_a_crash_is_not_attached_again(store, settings):
    span = make_trace()
    crashed = FeedbackStore(settings.feedback_db_url, attach=False, clock=lambda: time.time() - 3600)
    row_id = crashed.record(trace_id=span.trace_id, rating="up")
    assert crashed._claim(row_id)  # it took the row an hour ago (its lease has run out), logged the rating,
    # then died before marking the row as synced
    from mlflow.entities import AssessmentSource

    mlflow.log_feedback(trace_id=span.trace_id, name=ASSESSMENT_NAME, value=True,
                        source=AssessmentSource(source_type="HUMAN", source_id="anonymous"),
                        metadata={"feedback_id": str(row_id)})
    report = store.sync()
    assert (report.attached, report.already) == (0, 1)
    assert len(user_ratings(span.trace_id)) == 1 and store.stats()["unsynced"] == 0


def test_two_processes_syncing_at_once_attach_every_rating_once(settings):
    offline = FeedbackStore(settings.feedback_db_url, attach=False)
    traces = [make_trace().trace_id for _ in range(12)]
    for tid in traces:
        offline.record(trace_id=tid, rating="down")
    code = """
        import mlflow, os
        from chatbot_model.store.feedback import FeedbackStore
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        r = FeedbackStore(os.environ["CHATBOT_FEEDBACK_DB_URL"]).sync()
        print(r.attached, r.already, r.pending)
    """
    procs = [run_python(code) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    attached = [tuple(map(int, out.split()[-3:])) for out, _ in outs]
    assert sum(a for a, _, _ in attached) == 12 and all(p == 0 for _, _, p in attached)
    assert [len(user_ratings(t)) for t in traces] == [1] * 12


# ------------------------------------------------------------------ the adaptation rule
RULE = AdaptationRule(base_bias=0.3, default_hint=DEFAULT_HINT, half_life_s=DAY, gain=0.3, grounded_share=0.3)


def test_the_rule_is_bounded():
    quiet = RULE.apply(0, 0)
    assert (quiet.bias_towards_35, quiet.hint) == (0.3, DEFAULT_HINT)
    one = RULE.apply(0, 1)
    assert one.bias_towards_35 == pytest.approx(0.4) and one.grounded
    many = RULE.apply(0, 10)
    assert many.bias_towards_35 == pytest.approx(0.55) and many.bias_towards_35 > one.bias_towards_35
    assert RULE.apply(0, 1e9).bias_towards_35 <= 0.6 + 1e-9  # never above base + gain
    assert RULE.apply(1e9, 0).bias_towards_35 == 0.3  # thumbs up never push below the base
    assert AdaptationRule(base_bias=0.9, default_hint="d").apply(0, 1e9).bias_towards_35 <= 1.0


def test_settings_set_the_rule(monkeypatch):
    monkeypatch.setenv("CHATBOT_ADAPTATION_HALF_LIFE_H", "2")
    monkeypatch.setenv("CHATBOT_ADAPTATION_BIAS_GAIN", "0.5")
    monkeypatch.setenv("CHATBOT_BIAS_TOWARDS_35", "0.1")
    rule = AdaptationRule.from_settings(load_settings())
    assert (rule.half_life_s, rule.gain, rule.base_bias, rule.grounded_share) == (7200.0, 0.5, 0.1, 0.3)
    assert rule.default_hint == DEFAULT_HINT
    assert AdaptationRule.from_settings(load_settings(), base_bias=0.7, default_hint="mine").default_hint == "mine"


def test_one_negative_moves_the_bias_a_bounded_step_and_many_recent_ones_move_it_more(store):
    store.record(trace_id=None, rating="down")
    one = RULE.compute(store)
    assert one.bias_towards_35 == pytest.approx(0.4, abs=1e-3)
    for _ in range(9):
        store.record(trace_id=None, rating="down")
    many = RULE.compute(store)
    assert 0.54 < many.bias_towards_35 < 0.6 and many.hint == GROUNDED_HINT


def test_old_ratings_decay_back_to_the_defaults(store):
    for _ in range(10):
        store.record(trace_id=None, rating="down")
    now = time.time()
    states = [RULE.compute(store, now=now + k * DAY) for k in (0, 1, 3, 11)]
    biases = [s.bias_towards_35 for s in states]
    assert biases == sorted(biases, reverse=True) and biases[0] > 0.54
    assert states[1].decayed_down == pytest.approx(5.0, rel=0.01)  # one half-life: half the weight
    assert states[2].hint == GROUNDED_HINT  # 1.25 of 3.25 is still over 30% ...
    assert (states[3].bias_towards_35, states[3].hint) == (0.3, DEFAULT_HINT)  # ... past ten half-lives: gone
    assert RULE.compute(store, now=now + 4 * DAY).hint == DEFAULT_HINT


def test_the_hint_needs_enough_negatives_and_comes_back_after_positives(store):
    for _ in range(6):
        store.record(trace_id=None, rating="up")
    store.record(trace_id=None, rating="down")
    assert RULE.compute(store).hint == DEFAULT_HINT  # one angry rating among good ones changes nothing
    assert RULE.compute(store).bias_towards_35 == 0.3
    downs = 1
    while RULE.compute(store).hint == DEFAULT_HINT and downs < 20:
        store.record(trace_id=None, rating="down")
        downs += 1
    assert downs == 4  # 4 / (6 + 4 + 2) = 33% negative; 3 / 11 = 27% was not enough
    ups = 0
    while RULE.compute(store).hint == GROUNDED_HINT and ups < 20:
        store.record(trace_id=None, rating="up")
        ups += 1
    assert ups == 2  # 4 / (8 + 4 + 2) = 29%


def test_blocked_answers_and_other_model_versions_do_not_count(store):
    store.record(trace_id=None, rating="down", route="blocked")
    store.record(trace_id=None, rating="down", route="blocked", model_version="1")
    assert RULE.compute(store).bias_towards_35 == 0.3
    assert RULE.compute(store, model_version="1").bias_towards_35 == 0.3
    store.record(trace_id=None, rating="down", route="gpt", model_version="1")
    assert RULE.compute(store, model_version="2").bias_towards_35 == 0.3
    assert RULE.compute(store, model_version="1").bias_towards_35 == pytest.approx(0.4, abs=1e-3)
    assert RULE.compute(store).bias_towards_35 == pytest.approx(0.4, abs=1e-3)


def test_each_rating_weighs_exactly_half_per_half_life_and_the_window_is_bounded(settings):
    clock = Clock(1_800_000_000.0)
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=clock)
    for age_h in (0.0, 0.7, 12.0, 36.5, 239.0, 241.0):  # hours before `now`; 241 h is past ten half-lives
        clock.now = 1_800_000_000.0 - age_h * 3600
        store.record(trace_id=None, rating="down")
    clock.now = 1_800_000_000.0 + 60  # after `now`: not given yet
    store.record(trace_id=None, rating="up")
    now = 1_800_000_000.0
    rows = RULE.window(store, now=now)
    assert [round(now - ts) for ts, _ in rows] == [239 * 3600, 131400, 43200, 2520, 0]
    assert decayed_counts(rows, now, DAY) == (0.0, pytest.approx(sum(0.5 ** (h / 24) for h in
                                                                    (0.0, 0.7, 12.0, 36.5, 239.0)), rel=1e-12))
    state = RULE.compute(store, now=now)
    assert state.decayed_down == round(decayed_counts(rows, now, DAY)[1], 6) and state.decayed_up == 0.0
    # the rule of chatbot_model/pipeline/adaptation.py, computed here from its formula (U = 0, prior P = 2)
    down = sum(0.5 ** (h / 24) for h in (0.0, 0.7, 12.0, 36.5, 239.0))
    share = down / (down + 2.0)
    assert state.negative_share == pytest.approx(share, abs=1e-6) and share > 0.3
    assert state.bias_towards_35 == pytest.approx(min(1.0, RULE.base_bias + RULE.gain * share), abs=1e-6)
    assert state.hint == GROUNDED_HINT and state.grounded and state.computed_at == now


def test_each_version_counts_only_the_ratings_given_to_it_after_its_baseline(settings):
    """Version 2's base already carries version 1's ratings: they are not counted again (the bias is 0.45, not 0.60)."""
    clock = Clock(1_800_000_000.0)
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=clock)
    for _ in range(2):
        store.record(trace_id=None, rating="down", route="gpt", model_version="1")
    now = clock.now
    v1 = RULE.compute(store, now=now, model_version="1")
    assert (v1.bias_towards_35, v1.hint) == (pytest.approx(0.45), GROUNDED_HINT)
    # `adapt` registers version 2 with what version 1 learned as its base; version 2 serves from it
    v2_rule = replace(RULE, base_bias=v1.bias_towards_35, default_hint=v1.hint)
    v2 = SharedAdaptation(store, v2_rule, model_version="2", clock=clock)
    assert v2.current() == (pytest.approx(0.45), GROUNDED_HINT)
    assert v2_rule.compute(store, now=now).bias_towards_35 == pytest.approx(0.6)  # counted twice: the old bug
    # ratings given to version 2 (an hour later) move version 2 only
    clock.now = later = now + 3600
    for _ in range(2):
        store.record(trace_id=None, rating="down", route="claude", model_version="2")
    v2.invalidate()
    assert v2.current() == (pytest.approx(0.6), GROUNDED_HINT)
    assert (v2.state().decayed_up, v2.state().decayed_down) == (0.0, 2.0)
    assert RULE.compute(store, now=later, model_version="1") == RULE.apply(0.0, 2 * 0.5 ** (1 / 24), later)
    # a baseline: with no version known, only the ratings from `since_ts` on count
    assert RULE.window(store, now=later, since_ts=later) == [(later, "down")] * 2
    assert len(RULE.window(store, now=later)) == 4  # no version, no baseline: every rating (as before)


def test_shared_state_is_cached_and_survives_a_store_outage(store, tmp_path):
    shared = SharedAdaptation(store, RULE, refresh_s=60)
    assert shared.current() == (0.3, DEFAULT_HINT)
    store.record(trace_id=None, rating="down")
    assert shared.current() == (0.3, DEFAULT_HINT)  # cached until the refresh interval ...
    shared.invalidate()
    assert shared.current()[1] == GROUNDED_HINT  # ... or an invalidation
    (tmp_path / "dir").mkdir()
    broken = SharedAdaptation(FeedbackStore(f"sqlite:///{tmp_path / 'dir'}"), RULE, refresh_s=0)
    assert broken.current() == (0.3, DEFAULT_HINT)  # a directory is no database: the base state, a warning


def test_two_processes_agree_after_a_rating_within_the_refresh_interval(store):
    ticks = Clock(0.0)  # this process's refresh timer, moved by hand
    shared = SharedAdaptation(store, RULE, refresh_s=3.0, monotonic=ticks)
    assert shared.current() == (0.3, DEFAULT_HINT)
    other = run_python("""
        import json, os
        from chatbot_model.pipeline.adaptation import AdaptationRule, SharedAdaptation
        from chatbot_model.pipeline.adapter import DEFAULT_HINT
        from chatbot_model.store.feedback import FeedbackStore
        store = FeedbackStore(os.environ["CHATBOT_FEEDBACK_DB_URL"])
        rule = AdaptationRule(base_bias=0.3, default_hint=DEFAULT_HINT, half_life_s=86400.0, gain=0.3,
                              grounded_share=0.3)
        shared = SharedAdaptation(store, rule, refresh_s=3.0)
        before = shared.current()
        for _ in range(2):
            store.record(trace_id=None, rating="down")
        shared.invalidate()
        print(json.dumps({"before": before, "after": shared.current()}))
    """)
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    seen = json.loads(out)
    assert seen["before"] == [0.3, DEFAULT_HINT] and seen["after"][1] == GROUNDED_HINT
    ticks.now = 2.99
    assert shared.current() == (0.3, DEFAULT_HINT)  # within the interval: this process's cached state
    ticks.now = 3.0
    bias, hint = shared.current()  # the interval is over: re-read, and the two processes agree
    assert hint == seen["after"][1] and bias == pytest.approx(seen["after"][0], abs=1e-4)


# ------------------------------------------------------------------ the CLI and the chat loop
def test_feedback_stats_prints_counts_bias_and_hint(store):
    store.record(trace_id=None, rating="down", route="claude", provider="anthropic", model="claude-x",
                 model_version="4")
    store.record(trace_id=None, rating="up", route="gpt", provider="openai", model="gpt-y")
    from chatbot_model.cli.main import main

    out = CliRunner().invoke(main, ["feedback", "stats"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "ratings: 2 (up 1, down 1)" in text
    assert "by route:" in text and "claude" in text and "gpt" in text
    assert "by model:" in text and "claude-x" in text and "by model version:" in text and "(none)" in text
    assert "bias_towards_35: 0.300" in text and f"hint: {DEFAULT_HINT!r}" in text
    out = CliRunner().invoke(main, ["feedback", "stats", "--model-version", "4"])
    assert "bias_towards_35: 0.400" in out.output and f"hint: {GROUNDED_HINT!r}" in out.output


CORPUS = [
    {"id": "aliases", "title": "Model aliases", "source": "docs/aliases.md",
     "text": "MLflow aliases are mutable named references to a model version. "
             "Load an aliased model with the URI models:/name@alias."},
    {"id": "promote", "title": "Promotion", "source": "docs/promote.md",
     "text": "Promote a model version to Production with llmops-chatbot promote_model NAME VERSION."},
]


def test_the_chat_loop_writes_through_the_store_and_every_service_sees_it(settings, tmp_path, capsys):
    from chatbot_model.cli.chat import run_chat
    from chatbot_model.pipeline.service import LLMService

    (tmp_path / "docs.json").write_text(json.dumps(CORPUS))
    settings = load_settings(guardrail_backend="embedded", docs_path=tmp_path / "docs.json")
    svc = LLMService.from_settings(settings)
    assert svc.feedback_store is not None and svc.describe()["bias_towards_35"] == 0.3
    stream = io.StringIO("How do I promote a model version to Production?\nn\nWhat is an MLflow alias?\ny\nq\n")
    assert run_chat(svc, settings, stream) == 2
    out = capsys.readouterr().out
    assert (f"feedback: hint {DEFAULT_HINT!r} -> {GROUNDED_HINT!r} | bias_towards_35 0.30 -> 0.40") in out
    assert (f"feedback: hint {GROUNDED_HINT!r} -> {DEFAULT_HINT!r} | bias_towards_35 0.40 -> 0.30") in out

    run_id = mlflow.search_runs(search_all_experiments=True).iloc[0]["run_id"]
    rows = svc.feedback_store.ratings()
    assert [r.rating for r in rows] == ["down", "up"]
    for row in rows:
        assert row.session_id == run_id and row.route == "gpt" and row.provider == "local"
        assert row.model == "extractive-v1" and row.synced_at is not None
        (fb,) = user_ratings(row.trace_id)
        assert fb.source.source_type == AssessmentSourceType.HUMAN and fb.source.source_id == run_id

    other = LLMService(settings, guardrail=svc.guardrail, rag=svc.rag, router=type(svc.router)(0.3),
                       adapter=type(svc.adapter)(DEFAULT_HINT), providers=svc.providers,
                       feedback_store=FeedbackStore(settings.feedback_db_url))
    other.feedback(False)  # no result: a rating without a trace
    svc.adaptation.invalidate()
    # down, up, down: balance (2 - 1) / (3 + 2) = 0.2 -> bias 0.3 + 0.3 * 0.2; share 2 / 5 -> grounded
    assert svc.answer("What is an MLflow alias?").route_reasons[-2] == "bias_towards_35=0.36"
    assert svc.current_state()[1] == GROUNDED_HINT
    assert svc.adapter.hint == DEFAULT_HINT and svc.router.bias_towards_35 == 0.3  # per request, never written


# ------------------------------------------------------------------ background attach, backoff, orphans
LOST = "tr-0123456789abcdef0123456789abcdef"  # a trace id the tracking store never gets


def test_a_rating_whose_trace_never_arrives_is_orphaned_after_n_tries_with_backoff(settings):
    clock = Clock(1_800_000_000.0)
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=clock)
    store.max_attempts, store.retry_after_s, store.retry_cap_s = 3, 10.0, 15.0
    row_id = store.record(trace_id=LOST, rating="down")
    tries = []
    for _ in range(3):
        assert store.due_ids(10) == [row_id]
        report = store.sync_due()
        tries.append((report.pending, report.orphaned))
        assert store.due_ids(10) == []            # backing off: not due again at once
        clock.now += store.retry_delay(len(tries)) - 0.001
        assert store.due_ids(10) == []
        clock.now += 0.001
    assert tries == [(1, 0), (1, 0), (0, 1)]
    assert [store.retry_delay(n) for n in (1, 2, 3)] == [10.0, 15.0, 15.0]  # doubling, capped
    (row,) = store.ratings()
    assert row.orphaned_at is not None and row.synced_at is None and "not found" in row.sync_error
    assert store.due_ids(10) == [] and store.sync().orphaned == 0  # terminal: never tried again
    assert store.stats()["unsynced"] == 0 and store.stats()["orphaned"] == 1
    store.dispose()


def test_a_trace_that_arrives_before_the_last_try_is_attached_not_orphaned(settings):
    clock = Clock(1_800_000_000.0)
    store = FeedbackStore(settings.feedback_db_url, attach=False, clock=clock)
    store.max_attempts = 2
    span = make_trace(end=False)
    store.record(trace_id=span.trace_id, rating="up")
    assert store.sync_due().pending == 1
    span.end()
    clock.now += store.retry_delay(1)
    report = store.sync_due()
    assert (report.attached, report.orphaned) == (1, 0) and len(user_ratings(span.trace_id)) == 1
    store.dispose()


def test_sync_feedback_reports_orphans_and_exits_0(store, monkeypatch):
    from chatbot_model.cli.main import main

    monkeypatch.setenv("CHATBOT_FEEDBACK_MAX_ATTEMPTS", "2")  # the CLI reads it from the settings
    store.record(trace_id=LOST, rating="up")  # try 1 (record attaches)
    out = CliRunner().invoke(main, ["sync-feedback"])  # try 2: orphaned
    assert out.exit_code == 0, out.output
    assert "still pending 0, orphaned now 1" in out.output and "orphaned ratings" in out.output
    out = CliRunner().invoke(main, ["sync-feedback"])
    assert out.exit_code == 0 and "attached 0, already attached 0, still pending 0, orphaned now 0" in out.output
    out = CliRunner().invoke(main, ["feedback", "stats"])
    assert "orphaned (trace never arrived): 1" in out.output


def test_background_records_return_before_any_attach_and_the_worker_attaches_each_once(store, monkeypatch):
    gate, threads = threading.Event(), []
    real_attach = feedback_module._attach

    def held(row):
        threads.append(threading.current_thread().name)
        assert gate.wait(60)
        return real_attach(row)

    monkeypatch.setattr(feedback_module, "_attach", held)
    spans = [make_trace() for _ in range(5)]
    ids = [store.record(trace_id=s.trace_id, rating="up", background=True) for s in spans]  # none blocks
    assert len(ids) == 5 and store.stats()["total"] == 5
    gate.set()
    store.stop_background(60)
    store.sync_due()
    assert set(threads) <= {"feedback-sync", threading.current_thread().name}
    assert all(len(user_ratings(s.trace_id)) == 1 for s in spans) and store.stats()["unsynced"] == 0


def test_concurrent_ratings_share_transactions_and_each_returns_its_own_committed_row(settings, monkeypatch):
    store = FeedbackStore(settings.feedback_db_url, attach=False)  # only the inserts open transactions
    store.stats()  # the schema, before counting
    # hold the first transaction open until 7 more writers are waiting: they must all go in the next one
    writers, first_in, go = 8, threading.Event(), threading.Event()
    transactions = []
    real_begin = type(store.engine).begin

    def begin(engine):
        transactions.append(len(store._waiting))
        if len(transactions) == 1:
            first_in.set()
            assert go.wait(60)
        return real_begin(engine)

    monkeypatch.setattr(type(store.engine), "begin", begin)
    ids, errors = {}, []

    def rate(n):
        try:
            ids[n] = store.record(trace_id=f"tr-{n}", rating="up", comment=f"c{n}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(0,))]
    threads[0].start()
    assert first_in.wait(60)
    threads += [threading.Thread(target=rate, args=(n,)) for n in range(1, writers)]
    for t in threads[1:]:
        t.start()
    wait_until(lambda: len(store._waiting) >= writers - 1, "every other writer to queue behind the open transaction")
    go.set()
    for t in threads:
        t.join(60)
    monkeypatch.undo()
    assert not errors and len(transactions) == 2  # 8 rows, 2 transactions
    rows = {r.id: r for r in store.ratings()}
    assert sorted(ids.values()) == sorted(rows) and all(rows[ids[n]].comment == f"c{n}" for n in ids)
    store.dispose()


def test_ratings_attach_to_a_tracking_server_several_at_a_time(tmp_path, monkeypatch):
    """Each attach mostly waits on the tracking server, so a pass attaches CHATBOT_FEEDBACK_ATTACH_WORKERS (4)
    at once: four attaches meet at a barrier, which one-at-a-time attaching would never reach."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", attach=False)
    ids = [store.record(trace_id=f"tr-{n:032x}", rating="up", session_id=f"s{n}") for n in range(8)]
    monkeypatch.setattr(FeedbackStore, "_tracking_reachable", lambda self: (True, None))
    monkeypatch.setattr(FeedbackStore, "_tracking_is_server", staticmethod(lambda: True))
    together = threading.Barrier(store.attach_workers, timeout=60)

    def attach(row):
        together.wait()
        return f"a-{row['id']}", True

    monkeypatch.setattr(feedback_module, "_attach", attach)
    report = store.sync(ids=ids)
    assert (report.attached, report.pending) == (8, 0) and store.stats()["unsynced"] == 0
