"""LLMService: guardrail -> retrieval -> routing -> prompt -> provider (with fallback) -> output guardrail.

`answer_many` is the real implementation and works as a batch: one embedding call for all questions, one
guardrail call for all questions and one for all answers, one FAISS search, and remote provider calls run
concurrently (bounded). `answer` is a batch of one. Every question becomes one MLflow trace with a span per
step; its id comes back in the result.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chatbot_model.config import Settings
from chatbot_model.contract import (ChatResult, Completion, CompletionRequest, Source, check_history, trim_history,
                                    validate_history, validate_question)
from chatbot_model.errors import ConfigError, InvalidInput, ProviderError
from chatbot_model.guardrail.core import SAFE_REPLY, build_guardrail
from chatbot_model.pipeline import followup
from chatbot_model.pipeline.adaptation import SharedAdaptation
from chatbot_model.pipeline.adapter import REQUEST_HINT, ControlHintAdapter
from chatbot_model.pipeline.router import ROUTES, HeuristicRouter, Route
from chatbot_model.pipeline.streaming import STREAM_SINK, stream_answer
from chatbot_model.providers import PROVIDERS, build_provider
from chatbot_model.providers.base import reason_of
from chatbot_model.providers.deadline import REQUEST_DEADLINE, SYSTEM_CLOCK, Deadline
from chatbot_model.providers.local import KB_TOPIC, not_covered
from chatbot_model.retrieval.abstention import AbstentionModel
from chatbot_model.retrieval.embedder import EMBEDDED_MODEL
from chatbot_model.retrieval.rag import RAGPipeline, is_shipped_corpus
from chatbot_model.tracing.writer import record_traces

log = logging.getLogger(__name__)
SUGGEST_NEAR = 0.5  # a declined question whose P(covered) is at least this share of the threshold gets suggestions


def build_prompt(question: str, sources: list[Source], topic: str | None = KB_TOPIC,
                 suggestions: tuple[str, ...] = ()) -> str:
    """Numbered sources, then the question and the citation instruction. No sources (the service abstains: the
    knowledge base does not cover the question): the model must say so instead of answering from general
    knowledge; what the knowledge base covers is named for the shipped one (`topic`), and the closest document
    titles when the question came near being covered."""
    if not sources:
        covers = f"; it covers {topic}" if topic else ""
        near = (" The closest documents are " + " and ".join(f'"{t}"' for t in suggestions) + "; mention them."
                if suggestions else "")
        what = " and what it does cover" if topic else ""
        return (f"The knowledge base has nothing relevant to this question{covers}.\n\n"
                f"Question: {question}\n"
                f"Say plainly, in one or two sentences, that the knowledge base does not cover this question{what}."
                f"{near} Do not answer it from general knowledge and cite no sources.")
    blocks = [f"[{n}] {s.chunk.title} ({s.chunk.source})\n{s.chunk.text}" for n, s in enumerate(sources, 1)]
    return ("Sources:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\n"
            "Answer from the sources above and cite them as [n]. If they do not contain the answer, say so.")


def _abstention_model(settings: Settings):
    """The settings' abstention model, or None (then the cosine floor decides)."""
    if not settings.abstain_model:
        return None
    try:
        return AbstentionModel.from_dict(settings.abstain_model)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"CHATBOT_ABSTAIN_MODEL is not a valid abstention model ({exc}); run "
                          "scripts/calibrate_abstention.py, or set it to {} to use CHATBOT_ABSTAIN_BELOW") from None


@dataclass
class Step:
    """Wall-clock bounds of one batch step, reused for every question's span."""

    name: str
    start_ns: int
    end_ns: int = 0


@contextmanager
def _timed(steps: dict[str, Step], name: str):
    step = steps[name] = Step(name, time.time_ns())
    try:
        yield
    finally:
        step.end_ns = time.time_ns()


@dataclass
class _Turn:
    """One question of a batch as it goes through the steps of `LLMService.answer_many`."""

    question: str
    history: list[dict]
    error: str = ""  # why the row is not answered (bad input, `rows=True` only): it skips every step
    resolution: followup.Resolution | None = None
    rows: list[int] = field(default_factory=list)  # rows of the batch's query vectors: its candidate queries
    check_in: Any = None
    sources: list[Source] = field(default_factory=list)
    retrieval: Any = None  # the kept `rag.Retrieval` (sources and the abstention features)
    decline: tuple[str, tuple[str, ...]] = ("", ())  # the "not covered" reply and the titles it suggests
    query_vector: np.ndarray | None = None
    standalone: str = ""
    abstained: bool = False
    route: Route | None = None
    completion: Completion | None = None
    fallback: str | None = None
    check_out: Any = None

    @property
    def prompt_sources(self) -> list[Source]:
        return [] if self.abstained else self.sources


class LLMService:
    """Orchestrates one request or a batch; components are injected (tests pass real ones with fakes inside)."""

    def __init__(self, settings: Settings, *, guardrail, rag, router: HeuristicRouter,
                 adapter: ControlHintAdapter, providers: dict | None = None, feedback_store=None,
                 model_version: str | None = None, adaptation_since_ts: float | None = None):
        self.settings = settings
        self.guardrail = guardrail
        self.rag = rag
        self.router = router
        self.adapter = adapter
        self.providers = providers or {name: build_provider(name, settings) for name in PROVIDERS}
        self._models = {"openai": settings.gpt_model, "anthropic": settings.claude_model}
        self._pool = ThreadPoolExecutor(max_workers=settings.provider_max_concurrency, thread_name_prefix="provider")
        self.clock = SYSTEM_CLOCK  # of the request deadline; tests inject a fake one
        self.abstention = _abstention_model(settings)
        self._kb_topic: str | None | bool = False  # not looked up yet
        warm = getattr(getattr(guardrail, "classifier", None), "warm", None)
        if warm is not None and len(getattr(rag, "chunks", ())):  # the output check's knowledge-base sentences
            # not a daemon: a daemon thread inside ONNX Runtime at interpreter exit aborts the process; `warm` stops
            # as soon as the main thread has finished
            threading.Thread(target=warm, args=(rag.chunks,), name="guardrail-warm").start()
        # with a feedback store, bias and hint come from the state shared by every process (adaptation.py)
        self.feedback_store, self.model_version, self.adaptation = feedback_store, model_version, None
        if feedback_store is not None:
            self.adaptation = SharedAdaptation.from_settings(
                feedback_store, settings, base_bias=router.bias_towards_35, default_hint=adapter.default_hint,
                since_ts=adaptation_since_ts)

    @classmethod
    def from_settings(cls, settings: Settings, *, docs_path=None, hint: str | None = None,
                      bias: float | None = None, progress: bool = False, providers: dict | None = None,
                      feedback_store=None, model_version: str | None = None,
                      adaptation_since_ts: float | None = None) -> "LLMService":
        """Build every component from settings; the index is loaded, or built when stale.

        The feedback store is `CHATBOT_FEEDBACK_DB_URL` unless one is passed (an empty URL: none, in-memory
        feedback as before).
        """
        from chatbot_model.store.feedback import FeedbackStore  # deferred: loads sqlalchemy

        adapter = ControlHintAdapter(hint) if hint else ControlHintAdapter.from_file(settings.hint_path)
        router = HeuristicRouter(settings.bias_towards_35 if bias is None else bias)
        rag = RAGPipeline(settings).load_or_build(docs_path, progress=progress)
        if feedback_store is None and settings.feedback_db_url:
            feedback_store = FeedbackStore(settings.feedback_db_url, settings=settings)
        return cls(settings, guardrail=build_guardrail(settings), rag=rag, router=router, adapter=adapter,
                   providers=providers, feedback_store=feedback_store, model_version=model_version,
                   adaptation_since_ts=adaptation_since_ts)

    # ------------------------------------------------------------ requests
    def answer(self, question: str, history: list[dict] | None = None) -> ChatResult:
        """One question, one result (a batch of one)."""
        return self.answer_many([question], histories=[history])[0]

    def stream(self, question: str, history: list[dict] | None = None, deadline: Deadline | None = None):
        """One question answered as a stream of events: sources, text deltas, the final row
        (`chatbot_model.pipeline.streaming`)."""
        return stream_answer(self, question, history, deadline)

    def answer_many(self, questions: list[str], deadline: Deadline | None = None,
                    histories: list[list[dict] | None] | None = None, *, rows: bool = False) -> list[ChatResult]:
        """Answers in input order. This is where questions and histories are validated (`contract`): any invalid
        one raises InvalidInput naming it and nothing is answered; with `rows=True` (a caller's table of rows,
        such as the pyfunc's input) it is that row's `error` instead, and a history over the budget is an
        error too rather than trimmed.

        `histories[i]`: the earlier turns of question i's conversation (`contract.validate_history`), trimmed
        to CHATBOT_HISTORY_MAX_MESSAGES / _CHARS. `deadline` bounds the provider calls of the whole batch
        (default: CHATBOT_REQUEST_BUDGET_S from when they start); `deadline.cancel()` from another thread ends
        the remote calls at once (local answers). Each step below runs once for the whole batch."""
        every = self._turns(questions, histories, rows)
        turns = [t for t in every if not t.error]
        if not turns:
            return [self._result(t, 0.0) for t in every]
        t0 = time.time_ns()
        steps: dict[str, Step] = {}
        with _timed(steps, "condense"):
            self._resolve_followups(turns)
        with _timed(steps, "embed"):
            vectors = self._embed(turns)
        with _timed(steps, "guardrail_input"):
            self._check_questions(turns, vectors)
        safe = [t for t in turns if t.check_in.safe]
        with _timed(steps, "retrieval"):
            self._retrieve(safe, vectors)
        self._abstain(safe)
        bias, hint = self.current_state()  # this request's snapshot; shared components are never written
        hint = REQUEST_HINT.get() or hint  # a caller's own system prompt, when the server allows it
        with _timed(steps, "routing"):
            for turn in safe:
                turn.route = self.router.route(turn.question, bias=bias)
        with _timed(steps, "llm"):
            self._complete(safe, hint, deadline)
        with _timed(steps, "guardrail_output"):
            checks = self._check_answers({i: turn.completion for i, turn in enumerate(safe)})
            for i, turn in enumerate(safe):
                turn.check_out = checks[i]
        results = [self._result(turn, (time.time_ns() - t0) / 1e6) for turn in turns]
        if self.settings.tracing:
            self._trace(results, steps, [turn.check_in for turn in turns], t0, hint)
        answered = iter(results)
        return [self._result(t, 0.0) if t.error else next(answered) for t in every]

    # ------------------------------------------------------------ the steps of answer_many
    def _turns(self, questions, histories, rows: bool) -> list["_Turn"]:
        """Validated questions and histories, one `_Turn` each (see `answer_many`)."""
        if not isinstance(questions, (list, tuple)):
            raise InvalidInput(f"questions must be a list of strings, got {type(questions).__name__}")
        n, many = len(questions), len(questions) > 1
        if histories is None:
            histories = [None] * n
        elif not isinstance(histories, (list, tuple)) or len(histories) != n:
            raise InvalidInput(f"histories must be a list with one history per question ({n}), got "
                               f"{len(histories) if isinstance(histories, (list, tuple)) else type(histories).__name__}")
        turns = []
        for i, (question, history) in enumerate(zip(questions, histories)):
            where = (f"row {i}: question", f"row {i}: history") if rows else \
                (f"question #{i}", f"history of question #{i}") if many else ("question", "history")
            try:
                turns.append(_Turn(validate_question(question, self.settings.max_question_chars, where[0]),
                                   self._history(history, where[1], strict=rows)))
            except InvalidInput as exc:
                if not rows:
                    raise
                turns.append(_Turn(question if isinstance(question, str) else "", [], error=str(exc)))
        return turns

    def _resolve_followups(self, turns: list["_Turn"]) -> None:
        for turn, resolution in zip(turns, self._resolve([t.question for t in turns], [t.history for t in turns])):
            turn.resolution = resolution

    def _embed(self, turns: list["_Turn"]) -> np.ndarray:
        """One embedding call: the questions first (row i = turn i), then the extra queries of follow-ups; each
        turn learns the rows of its candidate queries."""
        texts = [t.question for t in turns]
        for turn_no, turn in enumerate(turns):
            turn.rows = []
            for candidate in turn.resolution.candidates:
                if candidate == turn.question:
                    turn.rows.append(turn_no)
                else:
                    turn.rows.append(len(texts))
                    texts.append(candidate)
        return self.rag.encode_queries(texts)

    def _check_questions(self, turns: list["_Turn"], vectors: np.ndarray) -> None:
        shared = vectors[:len(turns)] if self._guardrail_shares_embedder() else None
        for turn, check in zip(turns, self.guardrail.check_many([t.question for t in turns], vectors=shared)):
            turn.check_in = check

    def _retrieve(self, turns: list["_Turn"], vectors: np.ndarray) -> None:
        """One retrieval call (one FAISS search, BM25 per query) for every candidate query; each turn keeps the
        candidate `followup.choose` picks."""
        text_of = {row: text for turn in turns for row, text in zip(turn.rows, turn.resolution.candidates)}
        wanted = [row for turn in turns for row in turn.rows]
        found = dict(zip(wanted, self.rag.retrieve_vectors([text_of[r] for r in wanted], vectors[wanted]))) \
            if wanted else {}
        for turn in turns:
            kept = followup.choose(turn.resolution, [found[row] for row in turn.rows], self.covered)
            turn.retrieval = found[turn.rows[kept]]
            turn.sources = turn.retrieval.sources
            turn.query_vector = vectors[turn.rows[kept]]
            turn.standalone = turn.resolution.candidates[kept] if turn.history else ""

    def _abstain(self, turns: list["_Turn"]) -> None:
        """Not covered: the abstention model (or, without one, the cosine floor) says the knowledge base does not
        answer it; the provider then gets no sources and build_prompt tells it to say so (the local answerer
        replies NOT_COVERED, with the closest titles when the question came near being covered)."""
        for turn in turns:
            turn.abstained = not turn.sources or not self.covered(turn.retrieval)
            if turn.abstained:
                turn.decline = self._decline(turn.retrieval)
        if any(turn.abstained for turn in turns):
            log.info("abstained on %d of %d questions (not covered)", sum(turn.abstained for turn in turns),
                     len(turns))

    def _complete(self, turns: list["_Turn"], hint: str, deadline: Deadline | None) -> None:
        requests = {i: CompletionRequest(system=hint, prompt=build_prompt(t.question, t.prompt_sources, self.kb_topic,
                                                                          t.decline[1]),
                                         question=t.question, sources=t.prompt_sources, model="",
                                         question_vector=t.query_vector, history=t.history, decline=t.decline[0])
                    for i, t in enumerate(turns)}
        answers = self._complete_all(requests, {i: t.route for i, t in enumerate(turns)}, deadline)
        for i, turn in enumerate(turns):
            turn.completion, turn.fallback = answers[i]

    @property
    def kb_topic(self) -> str | None:
        """What the knowledge base is about, for the "not covered" reply: the shipped one's topic, None for
        other documents (generic wording)."""
        if self._kb_topic is False:
            self._kb_topic = KB_TOPIC if is_shipped_corpus(getattr(self.rag, "manifest", {}) or {}) else None
        return self._kb_topic

    def _decline(self, retrieval) -> tuple[str, tuple[str, ...]]:
        """(the local "not covered" reply, the titles it suggests): the two closest document titles when the
        question came near being covered (`SUGGEST_NEAR`)."""
        near = False
        if retrieval is not None and retrieval.sources:
            if self.abstention is not None:
                near = self.abstention.probability(retrieval.features) >= SUGGEST_NEAR * self.abstention.threshold
            else:
                near = retrieval.best_score >= self.settings.abstain_below - 0.1
        titles = tuple(dict.fromkeys(s.chunk.title for s in retrieval.sources))[:2] if near else ()
        return not_covered(self.kb_topic is not None, titles), titles

    def covered(self, retrieval) -> bool:
        """Does the knowledge base answer the question that made `retrieval`? The abstention model's decision
        (settings.abstain_model), else the best cosine against settings.abstain_below."""
        if retrieval is None or not retrieval.sources:
            return False
        if self.abstention is not None:
            return self.abstention.covered(retrieval.features)
        return retrieval.best_score >= self.settings.abstain_below

    def _result(self, turn: "_Turn", elapsed_ms: float) -> ChatResult:
        if turn.error:
            return ChatResult(question=turn.question, answer="", sources=[], route="", provider="", model="",
                              error=turn.error)
        if not turn.check_in.safe:
            result = self._blocked(turn.question, turn.check_in, "input", elapsed_ms)
        else:
            completion = turn.completion
            result = ChatResult(
                question=turn.question, standalone_question=turn.standalone, answer=completion.text,
                sources=[s.to_dict() for s in turn.prompt_sources], abstained=turn.abstained,
                route=turn.route.name, provider=completion.provider, model=completion.model, fallback=turn.fallback,
                route_reasons=turn.route.reasons, guardrail=turn.check_out.to_dict(), latency_ms=round(elapsed_ms, 2))
            if not turn.check_out.safe:
                result = self._blocked(turn.question, turn.check_out, "output", elapsed_ms, result)
        result.model_version = self.model_version
        return result

    def _resolve(self, qs: list[str], hs: list[list[dict]]) -> list[followup.Resolution]:
        """What retrieval searches for each question (`followup`): with history and a remote provider, its
        condense-question rewrite (concurrently, within CHATBOT_CONDENSE_TIMEOUT_S); else, or when that fails,
        the offline rule's candidates."""
        out = [followup.offline_candidates(q, h) for q, h in zip(qs, hs)]
        name = next((p for p in ROUTES.values() if self.providers[p].remote and self.providers[p].available()[0]),
                    None)
        todo = [i for i, h in enumerate(hs) if h]
        if name is None or not todo:
            return out
        provider, model = self.providers[name], self._models.get(name, "")
        deadline = Deadline.start(self.settings.condense_timeout_s, 0.0, self.clock)
        limit = self.settings.max_question_chars
        if len(todo) == 1:
            rewrites = {todo[0]: followup.condense(qs[todo[0]], hs[todo[0]], provider, model, deadline, limit)}
        else:
            futures = {i: self._pool.submit(followup.condense, qs[i], hs[i], provider, model, deadline, limit)
                       for i in todo}
            rewrites = {i: f.result() for i, f in futures.items()}
        for i, text in rewrites.items():
            if text:
                out[i] = followup.Resolution(qs[i], (text,), "condensed")
        return out

    def _history(self, history, where: str, strict: bool) -> list[dict]:
        """A validated history ([] when none): over the budget, an error when `strict`, else trimmed to it."""
        if strict:
            return check_history(history, self.settings, where)
        limit = max(self.settings.max_question_chars, self.settings.history_max_chars)
        return trim_history(validate_history(history, where, max_question_chars=limit),
                            self.settings.history_max_messages, self.settings.history_max_chars)

    def _check_answers(self, completions: dict[int, Completion]) -> dict:
        """Output guardrail. An answer made of knowledge-base sentences whose vectors the provider already has
        (the local answerer) is scored sentence by sentence from those vectors, unsafe when any sentence is;
        other answers are scored as whole texts. At most two guardrail calls per batch."""
        reuse = self._guardrail_shares_embedder()
        out = {i: c.check for i, c in completions.items() if c.check is not None}  # checked while streamed
        split = [i for i, c in completions.items()
                 if i not in out and reuse and c.segments and c.segment_vectors is not None]
        whole = [i for i in completions if i not in set(split) and i not in out]
        if whole:
            out.update(zip(whole, self.guardrail.check_many([completions[i].text for i in whole])))
        if split:
            texts = [t for i in split for t in completions[i].segments]
            parts = iter(self.guardrail.check_many(texts, vectors=np.concatenate(
                [completions[i].segment_vectors for i in split])))
            for i in split:
                out[i] = self.guardrail.combine([next(parts) for _ in completions[i].segments])
        return out

    def _guardrail_shares_embedder(self) -> bool:
        return self.rag.embedder_name == EMBEDDED_MODEL

    def _blocked(self, question: str, check, where: str, elapsed_ms: float, result: ChatResult | None = None):
        base = result or ChatResult(question=question, answer="", sources=[], route="blocked",
                                    provider="guardrail", model=check.backend)
        base.answer, base.blocked, base.blocked_by = SAFE_REPLY, True, where
        base.guardrail, base.latency_ms = check.to_dict(), round(elapsed_ms, 2)
        if where == "output":
            base.sources = []
        log.info("blocked %s (labels %s)", where, sorted(check.flagged))
        return base

    # ------------------------------------------------------------ providers
    def _complete_all(self, requests: dict[int, CompletionRequest], routes: dict[int, Route],
                      deadline: Deadline | None = None):
        """Remote calls of a batch run concurrently (bounded pool); a single request and the local answerer run
        inline, so concurrent single requests (the server) are not capped by the pool. Every question of the
        batch shares one deadline (the one given, else the server's `REQUEST_DEADLINE`, else
        CHATBOT_REQUEST_BUDGET_S from now)."""
        deadline = deadline or REQUEST_DEADLINE.get() or Deadline.start(
            self.settings.request_budget_s, self.settings.local_reserve_s, self.clock)
        futures = {}
        out = {}
        for i, req in requests.items():
            chain = self._chain(routes[i])
            if len(requests) == 1 or self._first_available(chain) == "local":
                out[i] = self._complete_with_fallback(req, chain, deadline)
            else:
                futures[i] = self._pool.submit(self._complete_with_fallback, req, chain, deadline)
        for i, fut in futures.items():
            out[i] = fut.result()
        return out

    def _chain(self, route: Route) -> list[str]:
        """The route's provider, then the other routes' providers in ROUTES order, then local (no repeats)."""
        return list(dict.fromkeys([route.provider, *ROUTES.values(), "local"]))

    def _first_available(self, chain: list[str]) -> str:
        return next((name for name in chain if self.providers[name].available()[0]), "local")

    def _complete_with_fallback(self, request: CompletionRequest, chain: list[str],
                                deadline: Deadline | None = None) -> tuple[Completion, str | None]:
        """Try each provider of the chain in turn within the deadline; say why when it is not the first.

        The reason shown is a short category per provider ("openai: server error (500) x3"); the upstream
        detail is logged, never returned."""

        reasons = []
        sink = STREAM_SINK.get()  # a streamed request (LLMService.stream): the answer goes out as it comes
        for name in chain:
            provider = self.providers[name]
            request.model = self._models.get(name, "")
            try:
                if sink is not None:
                    return sink.complete(self, provider, request, deadline), ("; ".join(reasons) or None)
                return provider.complete(request, deadline=deadline), ("; ".join(reasons) or None)
            except ProviderError as exc:
                quiet = getattr(exc, "skipped", False) or reason_of(exc) == "cancelled"  # the client hung up
                log.log(logging.INFO if quiet else logging.WARNING, "provider %s not used: %s", name, exc)
                reasons.append(f"{name}: {reason_of(exc)}")
        raise ProviderError("every provider failed: " + "; ".join(reasons))

    # ------------------------------------------------------------ feedback
    def current_state(self) -> tuple[float, str]:
        """(bias_towards_35, hint) to use now: the shared adaptation state (cached; re-read every
        adaptation_refresh_s) with a feedback store, else this process's router and adapter."""
        if self.adaptation is not None:
            return self.adaptation.current()
        return self.router.bias_towards_35, self.adapter.hint

    def feedback(self, positive: bool, *, result: ChatResult | None = None, session_id: str | None = None,
                 comment: str | None = None) -> dict:
        """Apply one rating; returns before/after for display.

        With a feedback store the rating is stored (attributed to the model version that answered and
        attached to the trace of `result`) and the shared state re-read; without one, it changes this
        process's hint and router only.
        """
        if self.adaptation is None:
            before = self._state()
            self.adapter.feedback(positive)
            self.router.feedback(positive)
            return {"before": before, "after": self._state()}
        before = self._state(self.adaptation.refresh())
        row_id = self.feedback_store.record(
            trace_id=result.trace_id if result else None, rating="up" if positive else "down", comment=comment,
            session_id=session_id, route=result.route if result else None,
            provider=result.provider if result else None, model=result.model if result else None,
            model_version=self.model_version)
        return {"before": before, "after": self._state(self.adaptation.refresh()), "feedback_id": row_id}

    def _state(self, state=None) -> dict:
        if state is not None:
            return {"hint": state.hint, "bias_towards_35": state.bias_towards_35}
        bias, hint = self.current_state()
        return {"hint": hint, "bias_towards_35": bias}

    def close(self) -> None:
        """Release what this service holds beyond memory (its provider worker pool, its feedback store's
        connections): a server that swapped in another model version calls it on the old one."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.feedback_store is not None:
            self.feedback_store.dispose()

    def describe(self) -> dict:
        """What is active: guardrail backend, embedder, index, providers and whether they have keys."""
        return {
            "guardrail": self.guardrail.backend,
            **({"guardrail_reason": why} if (why := getattr(self.guardrail.classifier, "chosen_because", None))
               else {}),
            "embedder": self.rag.embedder_name,
            "index": self.rag.info(),
            "providers": {name: p.status() for name, p in self.providers.items()},
            **self._state(),
        }

    # ------------------------------------------------------------ tracing
    def _trace(self, results: list[ChatResult], steps: dict[str, Step], checks_in, t0: int, hint: str) -> None:
        """One MLflow trace per question, spans timed by the batch step they shared, queued for the background
        exporter (`chatbot_model.tracing.writer`). Never fails or slows the request."""
        try:
            record_traces(results, steps, checks_in, t0, hint, queue_size=self.settings.trace_queue_size,
                          share=self.settings.trace_export_share, sink=self.settings.trace_sink)
        except Exception as exc:  # tracing is best effort: an unreachable store must not fail answers
            log.warning("could not record the trace: %s", exc)
