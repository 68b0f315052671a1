"""HeuristicRouter: picks the `gpt` (OpenAI) or `claude` (Anthropic Claude 3.5 Sonnet) route for a question.

The rule, in full:
  complexity = mean of four features in [0, 1]
      length     words / 40, capped at 1
      reasoning  1 if the question asks for reasoning (why, explain, compare, trade-off, design, debug, ...)
      multipart  1 if it asks several things (two or more '?', or a numbered / bulleted list)
      technical  1 if it contains code, a stack trace, a command line or a config snippet
  score = 0.6 * complexity + 0.4 * bias_towards_35
  route = "claude" if score >= 0.5 else "gpt"
With the default bias (0.3), short factual questions go to `gpt` and long, reasoning-heavy ones to
`claude`; at bias 1.0 any question with a little complexity (>= 0.17) goes to `claude`.

Feedback: a thumbs down raises `bias_towards_35` by `step` (0.1), a thumbs up keeps it; the bias is clamped
to [0, 1]. (The feedback store turns many ratings into a bias with a bounded, decaying rule: `feedback.py`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ROUTES = {"gpt": "openai", "claude": "anthropic"}  # route -> provider
_REASONING = re.compile(
    r"\b(why|explain|compare|comparison|difference|differences|trade-?offs?|design|architect\w*|debug\w*|"
    r"analy[sz]\w*|evaluate|reason\w*|step[- ]by[- ]step|pros and cons|versus|vs\.?|how does|in depth)\b",
    re.IGNORECASE)
_TECHNICAL = re.compile(r"```|Traceback|Error:|\$ |--\w+|\w+\(\)|\{.*:.*\}|=\w+|/\w+/\w+", re.DOTALL)
_LIST = re.compile(r"(^|\n)\s*(\d+[.)]|[-*])\s+\S")


@dataclass
class Route:
    """The decision and why it was taken."""

    name: str
    score: float
    reasons: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return ROUTES[self.name]


class HeuristicRouter:
    """Question features + `bias_towards_35` -> route; see the module docstring for the rule."""

    weight_complexity = 0.6
    weight_bias = 0.4
    threshold = 0.5

    def __init__(self, bias_towards_35: float = 0.3, step: float = 0.1):
        if not 0.0 <= bias_towards_35 <= 1.0:
            raise ValueError(f"bias_towards_35 must be in [0, 1], got {bias_towards_35}")
        self.bias_towards_35 = float(bias_towards_35)
        self.step = step

    @staticmethod
    def features(question: str) -> dict[str, float]:
        """The four complexity features, each in [0, 1]."""
        return {
            "length": min(len(question.split()) / 40.0, 1.0),
            "reasoning": 1.0 if _REASONING.search(question) else 0.0,
            "multipart": 1.0 if question.count("?") >= 2 or _LIST.search(question) else 0.0,
            "technical": 1.0 if _TECHNICAL.search(question) else 0.0,
        }

    def score(self, question: str, bias: float | None = None) -> tuple[float, dict[str, float]]:
        feats = self.features(question)
        complexity = sum(feats.values()) / len(feats)
        bias = self.bias_towards_35 if bias is None else bias
        return self.weight_complexity * complexity + self.weight_bias * bias, feats

    def route(self, question: str, bias: float | None = None) -> Route:
        """The route for `question`, with the features and the bias that decided it. `bias` (this request's,
        from the shared adaptation state) replaces the router's own without changing it."""
        bias = self.bias_towards_35 if bias is None else float(bias)
        score, feats = self.score(question, bias)
        name = "claude" if score >= self.threshold else "gpt"
        reasons = [f"{k}={v:.2f}" for k, v in feats.items() if v > 0] or ["simple question"]
        reasons.append(f"bias_towards_35={bias:.2f}")
        reasons.append(f"score={score:.2f} {'>=' if name == 'claude' else '<'} {self.threshold}")
        return Route(name=name, score=round(score, 4), reasons=reasons)

    def feedback(self, positive: bool) -> float:
        """Apply one rating; returns the new bias (down: +step, up: unchanged; clamped to [0, 1])."""
        if not positive:
            self.bias_towards_35 = min(1.0, round(self.bias_towards_35 + self.step, 6))
        return self.bias_towards_35
