"""The interactive chat loop (human in the loop): ask, read the answer as it arrives, rate y/n, see what the
rating changed.

The loop keeps the conversation: each question goes with the earlier turns (newest within
CHATBOT_HISTORY_MAX_MESSAGES / _CHARS; refused questions left out), so "and how do I undo that?" follows the
previous answer. `new` starts a new conversation.

Works on a terminal and on a pipe. One MLflow run per session: the effective settings as params; per turn
(step) the latency, the route, whether it was blocked and the rating as metrics.
"""

from __future__ import annotations

import logging
from typing import TextIO

import click

from chatbot_model.contract import ChatResult, trim_history
from chatbot_model.errors import InvalidInput, ProviderError
from chatbot_model.pipeline.streaming import DeltaEvent, FinalEvent, ReplaceEvent, StreamFailed

log = logging.getLogger(__name__)
QUIT = {"q", "quit", "exit"}
NEW = {"new", "/new"}
RATINGS = {"y": 1, "yes": 1, "n": -1, "no": -1, "": 0}


def _read(stream: TextIO, prompt: str) -> str | None:
    """One line from `stream` after `prompt`; None at end of input."""
    click.echo(prompt, nl=False)
    line = stream.readline()
    if not line:
        click.echo()
        return None
    return line.strip()


def banner(service) -> str:
    info = service.describe()
    providers = ", ".join(f"{name} ({state})" for name, state in info["providers"].items())
    return (f"llmops-chatbot | guardrail: {info['guardrail']} | embedder: {info['embedder']} | "
            f"{info['index'].get('documents', '?')} documents, {info['index'].get('chunks', '?')} chunks\n"
            f"providers: {providers}\n"
            f"hint: {info['hint']!r} | bias_towards_35: {info['bias_towards_35']:.2f}\n"
            "Ask a question (follow-ups use the conversation; `new` starts over); rate each answer y/n "
            "(Enter skips); q quits.")


def format_result(result: ChatResult) -> str:
    lines = [f"bot> {result.answer}"]
    if result.standalone_question and result.standalone_question != result.question:
        lines.append(f"     (retrieved as: {result.standalone_question})")
    if result.blocked:
        flagged = ", ".join(f"{k}={v:.2f}" for k, v in result.guardrail.get("flagged", {}).items())
        lines.append(f"     blocked by the {result.blocked_by} guardrail ({result.guardrail.get('backend')}: {flagged})")
    for n, s in enumerate(result.sources, 1):
        lines.append(f"     [{n}] {s['title']} ({s['id']}, score {s['score']:.2f})")
    meta = f"     route={result.route} provider={result.provider} model={result.model} {result.latency_ms:.0f} ms"
    if result.fallback:
        meta += f" | fallback: {result.fallback}"
    lines.append(meta)
    return "\n".join(lines)


def stream_answer(service, question: str, history: list | None = None) -> ChatResult:
    """Print the answer as it arrives ("bot> ", then each sentence once the guardrail passed it; the safe reply
    in place of the rest if it stops the answer) and return the whole result."""

    result, started = None, False
    for event in service.stream(question, history):
        if isinstance(event, (DeltaEvent, ReplaceEvent)):
            if not started:
                click.echo("bot> ", nl=False)
            elif isinstance(event, ReplaceEvent):
                click.echo("\n     ", nl=False)
            click.echo(event.text, nl=False)
            started = True
        elif isinstance(event, FinalEvent):
            result = event.result
    click.echo()
    return result


def format_effect(change: dict) -> str:
    before, after = change["before"], change["after"]
    hint = (f"hint {before['hint']!r} -> {after['hint']!r}" if before["hint"] != after["hint"]
            else f"hint unchanged {after['hint']!r}")
    return f"     feedback: {hint} | bias_towards_35 {before['bias_towards_35']:.2f} -> {after['bias_towards_35']:.2f}"


def run_chat(service, settings, stream: TextIO) -> int:
    """Run the loop until q or end of input; returns the number of answered turns."""
    import mlflow

    click.echo(banner(service))
    turns = 0
    history: list[dict] = []
    with mlflow.start_run(run_name="chat-session", tags={"kind": "chat-session"}) as run:
        mlflow.log_params({k: v[:500] for k, v in settings.masked().items()})
        mlflow.log_param("guardrail_backend_active", service.guardrail.backend)
        while True:
            question = _read(stream, "you> ")
            if question is None or question.lower() in QUIT:
                break
            if not question:
                continue
            if question.lower() in NEW:
                history = []
                click.echo("     (new conversation)")
                continue
            try:
                result = stream_answer(service, question, history)
            except (InvalidInput, ProviderError, StreamFailed) as exc:
                click.echo(f"error: {exc}")
                continue
            click.echo(format_result(result).split("\n", 1)[1])
            if not result.blocked:
                history = trim_history(history + [{"role": "user", "content": result.question},
                                                  {"role": "assistant", "content": result.answer}],
                                       settings.history_max_messages, settings.history_max_chars)
            rating = _ask_rating(stream)
            if rating:
                # stored with the answer's trace id; the session (this run) is the rater
                click.echo(format_effect(service.feedback(rating > 0, result=result, session_id=run.info.run_id)))
            mlflow.log_metrics({"latency_ms": result.latency_ms, "route_claude": float(result.route == "claude"),
                                "blocked": float(result.blocked), "feedback": float(rating or 0)}, step=turns)
            turns += 1
            if rating is None:
                break
    click.echo(f"bye ({turns} turns)")
    return turns


def _ask_rating(stream: TextIO) -> int | None:
    """1, -1, 0 (skipped) or None at end of input; asks again on anything else."""
    while True:
        answer = _read(stream, "helpful? [y/n, Enter skips] ")
        if answer is None or answer.lower() in QUIT:
            return None
        if answer.lower() in RATINGS:
            return RATINGS[answer.lower()]
        click.echo("please answer y, n, or press Enter to skip")
