"""The adaptation state (router bias and hint) derived from the stored feedback, the same in every process.

The rule, in full (settings in brackets, defaults after `=`):
  weight of a rating    w = 0.5 ** (age / half_life)           [CHATBOT_ADAPTATION_HALF_LIFE_H = 24 hours]
  decayed counts        U = sum of w over thumbs up, D = sum of w over thumbs down
  balance               (D - U) / (D + U + P)                  P = 2, a prior of two neutral ratings
  bias_towards_35       base + k * max(0, balance)             [CHATBOT_ADAPTATION_BIAS_GAIN k = 0.3]
                        base = the configured (or model's) bias, CHATBOT_BIAS_TOWARDS_35 = 0.3; capped at 1
  negative share        D / (D + U + P)
  hint                  the grounded hint when the negative share >= s, else the default hint
                                                               [CHATBOT_ADAPTATION_GROUNDED_SHARE s = 0.3]
Ratings of blocked answers are left out (the router and the hint took no part), and so are ratings older
than ten half-lives (weight < 0.1%) and ratings given after `now`. When a model version is given, only the
ratings given to that version count: its base bias and hint (from its own artifacts) already carry what its
parent learned, so a version registered by `adapt` does not count its parent's ratings again. Without a
version (none known) every rating counts. `since_ts` moves the start of the window later (a baseline).

One implementation serves everyone: the store returns the (time, rating) rows of the window and
`decayed_counts` weighs them exactly; the live services (`SharedAdaptation`), `feedback stats` and
`lifecycle.adapt` all go through `AdaptationRule.window` and `AdaptationRule.weigh`.

What follows from it:
- Bounded: the bias stays in [base, min(1, base + k)]; thumbs up only offset thumbs down, they never push
  the bias below the base (as before: a thumbs up keeps the bias).
- One rating weighs what the history lets it: on a quiet store one thumbs down does what it did in the
  single-process design (bias +k / (1 + P) = +0.10, grounded hint, share 1/3), and one thumbs up after it
  switches back (share 1/4); after five recent thumbs up one thumbs down changes nothing (balance < 0, share
  1/8), while ten recent thumbs down raise the bias by 0.25. One angry rating fades: its share falls below s
  within a quarter of a half-life.
- Recent feedback weighs more, and nothing lasts forever: without new ratings D and U halve every half-life
  while P stays, so the bias returns to the base and the hint to the default.
- A pure function of the stored rows and the clock: processes reading the same store agree. Each process
  caches the state and re-reads it every CHATBOT_ADAPTATION_REFRESH_S seconds (default 5), and at once after
  it records a rating itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass

from chatbot_model.pipeline.adapter import GROUNDED_HINT, read_hint

log = logging.getLogger(__name__)
PRIOR = 2.0
HORIZON_HALF_LIVES = 10.0  # older ratings weigh < 0.1%: left out


def decayed_counts(rows, now: float, half_life_s: float) -> tuple[float, float]:
    """(U, D) of `rows`, (created_ts, rating) pairs: each weighs 0.5 ** (age / half_life), exactly.

    Rows older than `HORIZON_HALF_LIVES` half-lives or given after `now` weigh nothing.
    """
    up = down = 0.0
    horizon = HORIZON_HALF_LIVES * half_life_s
    for created_ts, rating in rows:
        age = now - created_ts
        if age < 0 or age > horizon:
            continue
        weight = 0.5 ** (age / half_life_s)
        if rating == "up":
            up += weight
        else:
            down += weight
    return up, down


@dataclass(frozen=True)
class AdaptationState:
    """The derived state and the numbers it came from."""

    bias_towards_35: float
    hint: str
    grounded: bool
    decayed_up: float
    decayed_down: float
    negative_share: float
    computed_at: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AdaptationRule:
    """The rule of the module docstring, with its parameters."""

    base_bias: float
    default_hint: str
    half_life_s: float = 24 * 3600.0
    gain: float = 0.3
    grounded_share: float = 0.3
    prior: float = PRIOR

    @classmethod
    def from_settings(cls, settings, *, base_bias: float | None = None, default_hint: str | None = None):
        """Parameters from settings; the base bias and default hint of a loaded model override theirs."""
        if default_hint is None:
            default_hint = read_hint(settings.hint_path)
        return cls(base_bias=settings.bias_towards_35 if base_bias is None else float(base_bias),
                   default_hint=default_hint, half_life_s=settings.adaptation_half_life_h * 3600.0,
                   gain=settings.adaptation_bias_gain, grounded_share=settings.adaptation_grounded_share)

    def apply(self, up: float, down: float, now: float | None = None) -> AdaptationState:
        """The state for decayed counts `up` and `down`."""
        total = up + down + self.prior
        balance = (down - up) / total
        share = down / total
        bias = min(1.0, self.base_bias + self.gain * max(0.0, balance))
        grounded = share >= self.grounded_share
        return AdaptationState(bias_towards_35=round(bias, 6), hint=GROUNDED_HINT if grounded else self.default_hint,
                               grounded=grounded, decayed_up=round(up, 6), decayed_down=round(down, 6),
                               negative_share=round(share, 6), computed_at=time.time() if now is None else now)

    def window(self, store, *, now: float, model_version: str | None = None,
               since_ts: float | None = None) -> list[tuple[float, str]]:
        """The (created_ts, rating) rows that count at `now`: ten half-lives back (or from `since_ts` when
        later), not blocked, given to `model_version` (None: to any version)."""
        start = now - HORIZON_HALF_LIVES * self.half_life_s
        if since_ts is not None:
            start = max(start, float(since_ts))
        return store.rating_times(since_ts=start, until_ts=now, model_version=model_version)

    def weigh(self, rows, now: float) -> AdaptationState:
        """The state for the rows of `window` at `now`."""
        return self.apply(*decayed_counts(rows, now, self.half_life_s), now)

    def compute(self, store, *, now: float | None = None, model_version: str | None = None,
                since_ts: float | None = None) -> AdaptationState:
        """The state of `store` at `now` (default: the current time); see `window` for what counts."""
        now = time.time() if now is None else now
        return self.weigh(self.window(store, now=now, model_version=model_version, since_ts=since_ts), now)


class SharedAdaptation:
    """The state of one store as this process sees it: cached, re-read every `refresh_s` seconds.

    `current()` is cheap (a clock check) between refreshes; a failed re-read keeps the last state (or the
    base one) and logs a warning, so a feedback-store outage never fails an answer.
    """

    def __init__(self, store, rule: AdaptationRule, *, refresh_s: float = 5.0, model_version: str | None = None,
                 since_ts: float | None = None, clock=time.time, monotonic=time.monotonic):
        self.store = store
        self.rule = rule
        self.refresh_s = refresh_s
        self.model_version = model_version  # count only the ratings given to this version (None: all)
        self.since_ts = since_ts            # and only those given from then on (None: the rule's horizon)
        self.clock = clock                  # epoch seconds of `now`; tests inject one ...
        self.monotonic = monotonic          # ... and this one, which times the refresh interval
        self._state: AdaptationState | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, store, settings, *, base_bias: float | None = None, default_hint: str | None = None,
                      model_version: str | None = None, since_ts: float | None = None) -> "SharedAdaptation":
        return cls(store, AdaptationRule.from_settings(settings, base_bias=base_bias, default_hint=default_hint),
                   refresh_s=settings.adaptation_refresh_s, model_version=model_version, since_ts=since_ts)

    def state(self) -> AdaptationState:
        if self._state is None or self.monotonic() - self._loaded_at >= self.refresh_s:
            return self.refresh()
        return self._state

    def current(self) -> tuple[float, str]:
        """(bias_towards_35, hint) to use now."""
        state = self.state()
        return state.bias_towards_35, state.hint

    def refresh(self) -> AdaptationState:
        """Re-read the store now."""
        with self._lock:
            try:
                self._state = self.rule.compute(self.store, now=self.clock(), model_version=self.model_version,
                                                since_ts=self.since_ts)
            except Exception as exc:
                log.warning("could not read the adaptation state from %r (keeping the last one): %s", self.store, exc)
                if self._state is None:
                    self._state = self.rule.apply(0.0, 0.0, self.clock())
            self._loaded_at = self.monotonic()
            return self._state

    def invalidate(self) -> None:
        """Re-read at the next `state()` (after this process recorded a rating)."""
        self._loaded_at = float("-inf")
