"""The promotion gate: a version goes to Production only when its evaluation passed and it is not worse.

`EvaluationGate` plugs into `registry.promote(..., gate=...)`. For Production it reads the `eval.*` tags that
`llmops-chatbot evaluate` sets on a model version and refuses (raises `PromotionRefused`) when
- the version was never evaluated (no `eval.status`): "run `llmops-chatbot evaluate --model-uri ...` first";
- its evaluation failed (`eval.status` = failed, with `eval.failures`);
- a metric is worse than the current Production version's beyond the tolerance (`evaluation.compare`).
The first Production version (none yet) needs only `passed`. Staging has no gate.

With a feedback store (`feedback_store=`), the online comparison counts too: when both the candidate and the
current Production version have ratings, `comparison.verdict` (two-proportion z-test on the up-share at 5%,
each version with at least `min_ratings` ratings) is printed beside the offline table, and a candidate that is
significantly *worse* online is refused. "Better" and "not yet distinguishable" do not block: the offline
evaluation still decides then.

With `force=True` the refusal becomes a WARNING and, once promoted, `record_forced` tags the version with
`promotion.forced=true`, `promotion.forced_reason`, `promotion.forced_by` and `promotion.gate_refusal`.
"""

from __future__ import annotations

import getpass
import logging

from chatbot_model.errors import ChatbotError
from chatbot_model.lifecycle.comparison import MIN_RATINGS, table, verdict, version_stats
from chatbot_model.lifecycle.evaluation import compare
from chatbot_model.lifecycle.model_uri import production_version

log = logging.getLogger(__name__)
TAG_PREFIX = "eval."
STATUS_TAG = "eval.status"
GATED_STAGES = ("Production",)


class PromotionRefused(ChatbotError):
    """The promotion gate refused a version (not evaluated, failed, or worse than Production)."""

    code = "promotion_refused"


def eval_metrics(tags: dict) -> dict[str, float]:
    """The numeric `eval.<metric>` tags of a model version."""
    out = {}
    for key, value in (tags or {}).items():
        if key.startswith(TAG_PREFIX):
            try:
                out[key[len(TAG_PREFIX):]] = float(value)
            except (TypeError, ValueError):
                pass
    return out


class EvaluationGate:
    """`gate(model_version, stage)` for `registry.promote`; `lines` holds the side-by-side table it printed."""

    def __init__(self, client, name: str, *, force: bool = False, feedback_store=None, min_ratings: int | None = None):
        self.client, self.name, self.force = client, name, force
        self.feedback_store, self.min_ratings = feedback_store, min_ratings or MIN_RATINGS
        self.lines: list[str] = []
        self.refusal: str | None = None  # what the gate said when `force` overrode it
        self.production_version: str | None = None

    def __call__(self, model_version, stage: str) -> None:
        if stage not in GATED_STAGES:
            return
        problem = self.check(model_version)
        if problem is None:
            return
        if not self.force:
            raise PromotionRefused(problem)
        self.refusal = problem
        log.warning("promotion gate overridden with --force: %s", problem)

    def check(self, model_version) -> str | None:
        """None when `model_version` may go to Production, else why not (and the table in `lines`)."""
        version = str(model_version.version)
        tags = dict(self.client.get_model_version(self.name, version).tags or {})
        uri = f"models:/{self.name}/{version}"
        status = tags.get(STATUS_TAG)
        candidate = eval_metrics(tags)
        production = production_version(self.client, self.name)
        prod_metrics = {}
        if production is not None and str(production.version) != version:
            self.production_version = str(production.version)
            prod_metrics = eval_metrics(dict(self.client.get_model_version(self.name, self.production_version).tags or {}))
        self.lines, regressions = compare(candidate, prod_metrics)
        self.lines[0] += f"   (candidate = version {version}, production = " \
                         f"{'version ' + self.production_version if self.production_version else 'none yet'})"
        if status is None:
            self.lines = []  # nothing to compare yet
            return (f"{self.name} version {version} was never evaluated; run `llmops-chatbot evaluate "
                    f"--model-uri {uri}` first (or promote with --force)")
        if status != "passed":
            failures = tags.get("eval.failures") or "see the evaluation run"
            return (f"{self.name} version {version} failed its evaluation (run {tags.get('eval.run_id', '?')}): "
                    f"{failures}; fix it and evaluate again, or promote with --force")
        if self.production_version and not prod_metrics:
            log.warning("Production version %s has no eval.* tags: nothing to compare with", self.production_version)
        if regressions:
            return (f"{self.name} version {version} is worse than Production version {self.production_version} "
                    f"beyond the tolerance: {'; '.join(regressions)} (or promote with --force)")
        return self.check_online(version)

    def check_online(self, version: str) -> str | None:
        """The online rule (module docstring): refuse a candidate significantly worse than Production on live
        ratings; None when it is not, or when there is nothing to compare."""
        if self.feedback_store is None or not self.production_version:
            return None

        production = version_stats(self.feedback_store, self.production_version, "production")
        candidate = version_stats(self.feedback_store, version, "candidate")
        if not production.ratings or not candidate.ratings:
            return None
        result = verdict(production, candidate, self.min_ratings)
        self.lines += ["online (live ratings):", *table([production, candidate]),
                       f"online verdict: candidate {result.outcome} ({result.reason})"]
        if result.outcome == "worse":
            return (f"{self.name} version {version} is significantly worse than Production version "
                    f"{self.production_version} on live ratings ({result.reason}); see `llmops-chatbot feedback "
                    f"compare --name {self.name}` (or promote with --force)")
        return None

    def record_forced(self, version: str, reason: str | None = None) -> dict[str, str] | None:
        """Tag a version promoted over the gate's refusal; None when nothing was overridden."""
        if self.refusal is None:
            return None
        tags = {"promotion.forced": "true",
                "promotion.forced_reason": (reason or "none given")[:5000],
                "promotion.forced_by": _who(),
                "promotion.gate_refusal": self.refusal[:5000]}
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)
        return tags


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"
